//! BERT and the RoBERTa family (RoBERTa, XLM-RoBERTa, CamemBERT): one encoder, which differs only in where
//! positions start (RoBERTa counts from `padding_idx + 1`) and in its token types (one).

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::checks;
use super::embedding::{EmbeddingShape, InputEmbeddings};
use super::encoder::{
    activation, check_sizes, weights_prefix, EncoderShape, EncoderStack, LayerNames, PostNormEncoder, SizeKeys,
};
use super::TextEncoder;
use crate::loader::QuantLoader;

/// The `model_type`s this file reads, and whether each counts positions from `padding_idx + 1`.
const MODEL_TYPES: [(&str, bool); 4] = [("bert", false), ("roberta", true), ("xlm-roberta", true), ("camembert", true)];

/// The fields of a Hugging Face `config.json` that BERT needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Activation of the feed-forward layer (`gelu`, `gelu_new`, `relu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Positions the model knows.
    pub max_position_embeddings: usize,
    /// Token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// `model_type`: `bert` (the default), `roberta`, `xlm-roberta` or `camembert`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// The padding token; RoBERTa's positions start after it.
    #[serde(default)]
    pub pad_token_id: Option<usize>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Linear layers the encoder reads (query, key, value, attention output, intermediate, output per layer).
    pub fn linear_layers(&self) -> usize {
        6 * self.num_hidden_layers
    }

    /// Parses and checks a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: BertConfig = serde_json::from_str(text).context("config.json is not a BERT config")?;
        let model_type = config.model_type.as_deref().unwrap_or("bert");
        if !MODEL_TYPES.iter().any(|(t, _)| *t == model_type) {
            bail!("config.json says model_type {model_type:?}, which is not BERT or RoBERTa");
        }
        checks::sizes(&[
            ("vocab_size", config.vocab_size),
            ("num_hidden_layers", config.num_hidden_layers),
            ("intermediate_size", config.intermediate_size),
            ("max_position_embeddings", config.max_position_embeddings),
            ("type_vocab_size", config.type_vocab_size),
        ])?;
        checks::head_width(("hidden_size", config.hidden_size), ("num_attention_heads", config.num_attention_heads))?;
        checks::positive(&[("layer_norm_eps", config.layer_norm_eps)])?;
        checks::token_id("pad_token_id", config.pad_token_id.map(|id| id as u64), config.vocab_size)?;
        activation(&config.hidden_act)?;
        Ok(config)
    }

    /// The position of a sequence's first token: `pad_token_id + 1` for the RoBERTa family, else 0.
    pub fn position_offset(&self) -> usize {
        let model_type = self.model_type.as_deref().unwrap_or("bert");
        let roberta = MODEL_TYPES.iter().any(|&(t, offset)| t == model_type && offset);
        if roberta {
            self.pad_token_id.unwrap_or(1) + 1
        } else {
            0
        }
    }
}

/// The config keys of BERT's sizes.
const KEYS: SizeKeys = SizeKeys {
    vocab: "vocab_size",
    hidden: "hidden_size",
    positions: "max_position_embeddings",
    intermediate: "intermediate_size",
    layers: "num_hidden_layers",
};

/// The weight names of a BERT layer.
const NAMES: LayerNames = LayerNames {
    qkv: ["attention.self.query", "attention.self.key", "attention.self.value"],
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

/// Builds a BERT (or RoBERTa) encoder, quantizing each Linear layer as it is read. The weights may sit under the
/// task head's prefix (`bert.`, `roberta.`) or none.
fn load(config: &BertConfig, loader: &QuantLoader) -> Result<PostNormEncoder> {
    let prefix = weights_prefix(loader, &["", "bert.", "roberta."])?;
    let h = config.hidden_size;
    let shape = EmbeddingShape {
        vocab: config.vocab_size,
        width: h,
        positions: config.max_position_embeddings,
        types: config.type_vocab_size,
        offset: config.position_offset(),
        eps: config.layer_norm_eps,
    };
    let stack_shape = EncoderShape {
        hidden: h,
        intermediate: config.intermediate_size,
        heads: config.num_attention_heads,
        layers: config.num_hidden_layers,
        eps: config.layer_norm_eps,
    };
    let (embeddings_prefix, stack_prefix) = (format!("{prefix}embeddings."), format!("{prefix}encoder.layer"));
    check_sizes(loader, &embeddings_prefix, &stack_prefix, &NAMES, &shape, &stack_shape, &KEYS)?;
    let embeddings = InputEmbeddings::load(loader, &embeddings_prefix, shape)?;
    let act = activation(&config.hidden_act)?;
    let stack = EncoderStack::load(loader, &stack_prefix, NAMES, stack_shape, act)?;
    Ok(PostNormEncoder::new(embeddings, stack, None, config.vocab_size, h))
}

/// Reads a BERT or RoBERTa encoder from its `config.json` text: the builder of its [`crate::arch`] entry.
pub fn encoder(config: &str, loader: &QuantLoader) -> Result<Box<dyn TextEncoder>> {
    Ok(Box::new(load(&BertConfig::from_json(config)?, loader)?))
}
