//! DistilBERT (`DistilBertModel`): BERT's post-norm encoder under other weight names, with no token types.

use anyhow::{Context, Result};
use serde::Deserialize;

use super::checks;
use super::embedding::{EmbeddingShape, InputEmbeddings};
use super::encoder::{
    activation, check_sizes, weights_prefix, EncoderShape, EncoderStack, LayerNames, PostNormEncoder, SizeKeys,
};
use super::TextEncoder;
use crate::loader::QuantLoader;

/// The fields of a DistilBERT `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DistilBertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub dim: usize,
    /// Encoder layers.
    pub n_layers: usize,
    /// Attention heads per layer.
    pub n_heads: usize,
    /// Width of the feed-forward layer.
    pub hidden_dim: usize,
    /// Activation of the feed-forward layer.
    #[serde(default = "default_act")]
    pub activation: String,
    /// Positions the model knows.
    pub max_position_embeddings: usize,
}

fn default_act() -> String {
    "gelu".into()
}

/// DistilBERT's layer norm epsilon (fixed in its code, not in the config).
const EPS: f64 = 1e-12;

/// The config keys of DistilBERT's sizes.
const KEYS: SizeKeys = SizeKeys {
    vocab: "vocab_size",
    hidden: "dim",
    positions: "max_position_embeddings",
    intermediate: "hidden_dim",
    layers: "n_layers",
};

/// The weight names of a DistilBERT layer.
const NAMES: LayerNames = LayerNames {
    qkv: ["attention.q_lin", "attention.k_lin", "attention.v_lin"],
    attention_out: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
};

impl DistilBertConfig {
    /// Parses and checks a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).context("config.json is not a DistilBERT config")?;
        checks::sizes(&[
            ("vocab_size", config.vocab_size),
            ("n_layers", config.n_layers),
            ("hidden_dim", config.hidden_dim),
            ("max_position_embeddings", config.max_position_embeddings),
        ])?;
        checks::head_width(("dim", config.dim), ("n_heads", config.n_heads))?;
        activation(&config.activation)?;
        Ok(config)
    }
}

/// Builds a DistilBERT encoder, quantizing each Linear layer as it is read (weights under `distilbert.` or no
/// prefix).
fn load(config: &DistilBertConfig, loader: &QuantLoader) -> Result<PostNormEncoder> {
    let prefix = weights_prefix(loader, &["", "distilbert."])?;
    let shape = EmbeddingShape {
        vocab: config.vocab_size,
        width: config.dim,
        positions: config.max_position_embeddings,
        types: 0,
        offset: 0,
        eps: EPS,
    };
    let stack_shape = EncoderShape {
        hidden: config.dim,
        intermediate: config.hidden_dim,
        heads: config.n_heads,
        layers: config.n_layers,
        eps: EPS,
    };
    let (embeddings_prefix, stack_prefix) = (format!("{prefix}embeddings."), format!("{prefix}transformer.layer"));
    check_sizes(loader, &embeddings_prefix, &stack_prefix, &NAMES, &shape, &stack_shape, &KEYS)?;
    let embeddings = InputEmbeddings::load(loader, &embeddings_prefix, shape)?;
    let act = activation(&config.activation)?;
    let stack = EncoderStack::load(loader, &stack_prefix, NAMES, stack_shape, act)?;
    Ok(PostNormEncoder::new(embeddings, stack, None, config.vocab_size, config.dim))
}

/// Reads a DistilBERT encoder from its `config.json` text: the builder of its [`crate::arch`] entry.
pub fn encoder(config: &str, loader: &QuantLoader) -> Result<Box<dyn TextEncoder>> {
    Ok(Box::new(load(&DistilBertConfig::from_json(config)?, loader)?))
}
