//! MPNet (`MPNetModel`, all-mpnet-base-v2): BERT's post-norm encoder under its own weight names, positions counted
//! from `padding_idx + 1`, no token types, and a relative-position bias on the attention scores (one bucket table
//! shared by all layers).

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::checks;
use super::embedding::{EmbeddingShape, InputEmbeddings};
use super::encoder::{
    activation, check_sizes, weights_prefix, EncoderShape, EncoderStack, LayerNames, PostNormEncoder, SizeKeys,
};
use super::TextEncoder;
use crate::loader::QuantLoader;
use crate::plan::{Plan, Rule};
use qlayers::float_ops::attention::RelativeBias;
use qlayers::LayerScheme;

/// The fields of an MPNet `config.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct MpnetConfig {
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
    /// Activation of the feed-forward layer.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Positions the model knows (the first `pad_token_id + 1` unused).
    pub max_position_embeddings: usize,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The padding token; positions start after it.
    #[serde(default = "default_pad")]
    pub pad_token_id: usize,
    /// Buckets of relative positions.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_pad() -> usize {
    1
}
fn default_buckets() -> usize {
    32
}

/// The distance past which relative positions share the last bucket (fixed in MPNet's code).
const MAX_DISTANCE: usize = 128;

/// The config keys of MPNet's sizes.
const KEYS: SizeKeys = SizeKeys {
    vocab: "vocab_size",
    hidden: "hidden_size",
    positions: "max_position_embeddings",
    intermediate: "intermediate_size",
    layers: "num_hidden_layers",
};

/// The weight names of an MPNet layer.
const NAMES: LayerNames = LayerNames {
    qkv: ["attention.attn.q", "attention.attn.k", "attention.attn.v"],
    attention_out: "attention.attn.o",
    attention_norm: "attention.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

impl MpnetConfig {
    /// Parses and checks a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).context("config.json is not an MPNet config")?;
        checks::sizes(&[
            ("vocab_size", config.vocab_size),
            ("num_hidden_layers", config.num_hidden_layers),
            ("intermediate_size", config.intermediate_size),
            ("max_position_embeddings", config.max_position_embeddings),
        ])?;
        checks::head_width(("hidden_size", config.hidden_size), ("num_attention_heads", config.num_attention_heads))?;
        checks::positive(&[("layer_norm_eps", config.layer_norm_eps)])?;
        checks::token_id("pad_token_id", Some(config.pad_token_id as u64), config.vocab_size)?;
        if config.relative_attention_num_buckets < 4 {
            bail!("relative_attention_num_buckets {} is below 4", config.relative_attention_num_buckets);
        }
        activation(&config.hidden_act)?;
        Ok(config)
    }

    /// Linear layers the encoder reads.
    pub fn linear_layers(&self) -> usize {
        6 * self.num_hidden_layers
    }
}

/// MPNet's default int8 plan (measured before BERT's moved to smoothed blocks of 64, and kept): W8A8 with
/// activation blocks of 32 and per-block weight scales, the int8 embedding table, and the layers that read a layer
/// norm's output (Q, K, V and the feed-forward input) quantizing their activations in blocks of 16 instead of 32. On all-mpnet-base-v2 and the
/// reference corpus that gives cosine 0.99983 mean / 0.99912 min and top-10 overlap 0.988 to sentence-transformers'
/// fp32, where blocks of 32 everywhere give 0.99976 / 0.99901 / 0.980 (`runner inspect` finds those layers the
/// most sensitive: the norm's outlier channels share a block with fewer values).
pub fn int8_plan() -> Plan {
    let mut plan = Plan::uniform(LayerScheme::W8A8 { act_block: 32, weight_per_block: true });
    plan.embeddings = Some(Plan::INT8_TABLE.to_string());
    let fine = LayerScheme::W8A8 { act_block: 16, weight_per_block: true }.to_string();
    for layer in ["attention.attn.q", "attention.attn.k", "attention.attn.v", "intermediate.dense"] {
        plan.rules.push(Rule { pattern: format!("*.{layer}"), scheme: fine.clone() });
    }
    plan
}

/// The bucket of the distance `key - query`, as MPNet computes it (in f32, truncating, like its PyTorch code):
/// half the buckets for each direction, exact up to a quarter of them, then logarithmic up to `MAX_DISTANCE`.
pub fn relative_bucket(distance: isize, buckets: usize) -> usize {
    let half = buckets / 2;
    let n = -distance;
    let side = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs();
    let exact = half / 2;
    if n < exact {
        return side + n;
    }
    let ratio = (MAX_DISTANCE / exact) as f32;
    let large = exact + ((n as f32 / exact as f32).ln() / ratio.ln() * (half - exact) as f32) as usize;
    side + large.min(half - 1)
}

/// Builds an MPNet encoder, quantizing each Linear layer as it is read (weights under `mpnet.` or no prefix).
fn load(config: &MpnetConfig, loader: &QuantLoader) -> Result<PostNormEncoder> {
    let prefix = weights_prefix(loader, &["", "mpnet."])?;
    let (h, heads, buckets) = (config.hidden_size, config.num_attention_heads, config.relative_attention_num_buckets);
    let shape = EmbeddingShape {
        vocab: config.vocab_size,
        width: h,
        positions: config.max_position_embeddings,
        types: 0,
        offset: config.pad_token_id + 1,
        eps: config.layer_norm_eps,
    };
    let stack_shape = EncoderShape {
        hidden: h,
        intermediate: config.intermediate_size,
        heads,
        layers: config.num_hidden_layers,
        eps: config.layer_norm_eps,
    };
    let (embeddings_prefix, stack_prefix) = (format!("{prefix}embeddings."), format!("{prefix}encoder.layer"));
    check_sizes(loader, &embeddings_prefix, &stack_prefix, &NAMES, &shape, &stack_shape, &KEYS)?;
    let embeddings = InputEmbeddings::load(loader, &embeddings_prefix, shape)?;
    let act = activation(&config.hidden_act)?;
    let stack = EncoderStack::load(loader, &stack_prefix, NAMES, stack_shape, act)?;
    // `[buckets, heads]`: one bias per bucket and head.
    let table: Vec<f32> = loader
        .tensor(&format!("{prefix}encoder.relative_attention_bias.weight"), &[buckets, heads])?
        .flatten_all()?
        .to_vec1()?;
    let bias = RelativeBias::new(heads, embeddings.max_tokens(), |head, distance| {
        table[relative_bucket(distance, buckets) * heads + head]
    });
    Ok(PostNormEncoder::new(embeddings, stack, Some((bias, 4 * table.len())), config.vocab_size, h))
}

/// Reads an MPNet encoder from its `config.json` text: the builder of its [`crate::arch`] entry.
pub fn encoder(config: &str, loader: &QuantLoader) -> Result<Box<dyn TextEncoder>> {
    Ok(Box::new(load(&MpnetConfig::from_json(config)?, loader)?))
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    /// MPNet's buckets for 32 buckets, as transformers 5.23's `MPNetEncoder.relative_position_bucket` gives them:
    /// exact below 8 each way, then logarithmic, the last bucket from distance 128 on; a key after its query lands
    /// in the upper half.
    #[test]
    fn buckets_match_mpnet() {
        let distances = [0, -1, -7, -8, -11, -12, -16, -64, -127, 1, 7, 8, 16, 200, -1000, 128, -128, -90, 90];
        let buckets = [0, 1, 7, 8, 8, 9, 10, 14, 15, 17, 23, 24, 26, 31, 15, 31, 15, 14, 30];
        for (distance, bucket) in distances.into_iter().zip(buckets) {
            assert_eq!(relative_bucket(distance, 32), bucket, "distance {distance}");
        }
    }
}
