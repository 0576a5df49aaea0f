//! A Llama-architecture decoder (RMSNorm, rotary positions, grouped-query attention, SwiGLU) on quantized layers,
//! read through a [`QuantLoader`] by Hugging Face names: from a safetensors folder (float or pre-quantized) or from
//! a GGUF file ([`crate::gguf_weights`]), each Linear quantized per the plan. The same body runs Qwen2 (biases on
//! Q, K and V, read when the checkpoint has them) and Qwen3 (an RMSNorm on each head's queries and keys, a head
//! width of its own). Which projections have biases is in the config ([`LlamaConfig::qkv_bias`] and its
//! neighbours); a checkpoint that disagrees is an error. Gemma 2 and Gemma 3 run on it too: `(1 + w)` RMSNorms
//! before and after attention and the feed-forward layer, embeddings scaled by `sqrt(hidden_size)`, GeGLU with
//! tanh GELU, a query scale of their own, soft-capped attention and final logits (Gemma 2), sliding-window
//! attention on some layers, and for Gemma 3 per-head q/k norms and a rotary base of its own on the local layers.
//!
//! A prompt runs at once (prefill); generation then runs one token at a time against a [`KvCache`]. Without its
//! head ([`LlamaModel::load_body`]) the model is a [`TextEncoder`]: a decoder used as an embedder.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use qlayers::{Activation, QLinear};
use serde::Deserialize;

use super::checks::{self, WeightDim};
use super::projection::Projection;
use super::TextEncoder;
use crate::gguf_weights::{GgufWeights, GGUF_ARCHITECTURES};
use crate::loader::{expand_braces, Bias, QuantLoader};
use crate::plan::Plan;
use qlayers::float_ops::attention::{CausalOptions, KvHeads};
use qlayers::float_ops::rotary::Rotary;
pub use qlayers::float_ops::rotary::{LongRope, RopeScaling};
use qlayers::float_ops::rows::{gated, RmsNormParams};

/// The hyper-parameters of a Llama model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head (`hidden_size / num_heads` unless the config says otherwise, as Qwen3's do).
    pub head_dim: usize,
    /// Whether each head's queries and keys pass an RMSNorm before the rotary (Qwen3).
    pub qk_norm: bool,
    /// Rotary base frequency.
    pub rope_theta: f32,
    /// Rotary frequency scaling.
    pub rope_scaling: RopeScaling,
    /// Phi-3's LongRoPE (`rope_type` `longrope` or `su`), which replaces `rope_scaling`.
    pub long_rope: Option<LongRope>,
    /// Dimensions of each head that rotate: `head_dim`, or `head_dim * partial_rotary_factor` (Phi-4-mini); the
    /// rest pass unchanged.
    pub rotary_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Longest context the model takes.
    pub context_length: usize,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Sliding-window attention (Mistral): each token sees itself and the `window - 1` tokens before it, and the
    /// KV cache keeps no more than that (see `KvHeads::with_window`).
    pub sliding_window: Option<usize>,
    /// Whether the Q, K and V projections have biases (Qwen2 always; Llama and Qwen3 with `attention_bias`).
    pub qkv_bias: bool,
    /// Whether the attention output projection has a bias (Llama and Qwen3 with `attention_bias`).
    pub o_bias: bool,
    /// Whether the feed-forward projections have biases (`mlp_bias`).
    pub mlp_bias: bool,
    /// Phi-3's fused projections: Q, K and V in one `self_attn.qkv_proj`, gate and up in one `mlp.gate_up_proj`,
    /// each read, planned and quantized as one layer.
    pub fused_projections: bool,
    /// The beginning-of-sequence token, if the model names one.
    pub bos_token_id: Option<u32>,
    /// The end-of-sequence token, if the model names one.
    pub eos_token_id: Option<u32>,
    /// Added to every RMSNorm weight: 1 for Gemma 2 and 3 (their `(1 + w)` norms), 0 for the others.
    pub norm_offset: f32,
    /// Gemma 2 and 3: a norm on the attention output (`post_attention_layernorm`), and the feed-forward layer
    /// between `pre_feedforward_layernorm` and `post_feedforward_layernorm`; the others norm only the inputs
    /// (their `post_attention_layernorm` is the feed-forward layer's input norm).
    pub sandwich_norms: bool,
    /// Gemma 2 and 3: the embeddings are multiplied by `sqrt(hidden_size)`.
    pub scale_embeddings: bool,
    /// The activation of the gate: SiLU (SwiGLU) for most, tanh GELU (GeGLU, `gelu_pytorch_tanh`) for Gemma.
    pub activation: Activation,
    /// Gemma 2: attention scores soft-capped to `cap * tanh(score / cap)` (`attn_logit_softcapping`).
    pub attn_logit_softcap: Option<f32>,
    /// Gemma 2: logits soft-capped the same way (`final_logit_softcapping`).
    pub final_logit_softcap: Option<f32>,
    /// Gemma 2 and 3: queries are scaled by `query_pre_attn_scalar ** -0.5` instead of `head_dim ** -0.5`.
    pub query_pre_attn_scalar: Option<f32>,
    /// Gemma 2 and 3: which layers use [`LlamaConfig::sliding_window`] (`layer_types` `sliding_attention`); the
    /// others see the whole context. `None`: every layer uses it (Mistral).
    pub sliding_layers: Option<Vec<bool>>,
    /// Gemma 3: the rotary base of the sliding-window layers (`rope_parameters.sliding_attention.rope_theta`);
    /// [`LlamaConfig::rope_theta`] and its scaling are those of the global layers. `None`: one base for all.
    pub local_rope_theta: Option<f32>,
}

/// The fields of an HF `config.json` this module reads.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f32>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5's form of both: `{"rope_type", "rope_theta", ...}`.
    rope_parameters: Option<serde_json::Value>,
    /// The share of each head that rotates (Phi-3 and others; also in `rope_parameters`).
    partial_rotary_factor: Option<f64>,
    /// Phi-3: the context LongRoPE's short factors serve (also in `rope_parameters` in transformers 5).
    original_max_position_embeddings: Option<usize>,
    rms_norm_eps: f32,
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    sliding_window: Option<usize>,
    /// Qwen2 and Qwen3 name a `sliding_window` but use it only when this is true.
    use_sliding_window: Option<bool>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    /// Gemma's name for the activation.
    hidden_activation: Option<String>,
    hidden_act: Option<String>,
    attn_logit_softcapping: Option<f32>,
    final_logit_softcapping: Option<f32>,
    query_pre_attn_scalar: Option<f64>,
    /// Gemma 2 and 3: `sliding_attention` or `full_attention` per layer.
    layer_types: Option<Vec<String>>,
    /// Older Gemma 3 configs: every this-many-th layer is global (`_sliding_window_pattern` in transformers 5).
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "_sliding_window_pattern")]
    private_sliding_window_pattern: Option<usize>,
    /// Older Gemma 3 configs: the local layers' rotary base.
    rope_local_base_freq: Option<f32>,
    /// Gemma 3 (as an encoder): bidirectional attention, not read here.
    use_bidirectional_attention: Option<bool>,
}

/// The rotary base when a config names none.
const DEFAULT_THETA: f32 = 10_000.0;

/// The special tokens a GGUF tokenizer may name (`tokenizer.ggml.{kind}_token_id`; `seperator` is llama.cpp's
/// spelling).
const GGUF_SPECIAL_TOKENS: [&str; 5] = ["bos", "eos", "padding", "unknown", "seperator"];

/// Tensors of Llama-family checkpoints that the model does not read: a head left in a checkpoint whose body is
/// read as an embedder, the rotary frequencies old checkpoints saved, and a GGUF file's LongRoPE factors (read
/// with its config, by [`LlamaConfig::of_gguf`]).
pub const UNUSED_TENSORS: &[&str] = &["lm_head.weight", "*.rotary_emb.inv_freq", GGUF_SHORT_FACTORS, GGUF_LONG_FACTORS];

impl LlamaConfig {
    /// Reads the `ARCH.*` keys of a GGUF file of one of the [`GGUF_ARCHITECTURES`]; another is an error naming it.
    pub fn from_gguf(metadata: &HashMap<String, Value>) -> Result<Self> {
        let get = |key: &str| metadata.get(key).with_context(|| format!("the GGUF file has no {key}"));
        let arch = get("general.architecture")?.to_string()?.clone();
        if !GGUF_ARCHITECTURES.contains(&arch.as_str()) {
            bail!("the GGUF file holds a {arch:?} model; the architectures read are {}", GGUF_ARCHITECTURES.join(", "));
        }
        let key = |name: &str| format!("{arch}.{name}");
        let int = |name: &str| -> Result<usize> {
            let key = key(name);
            Ok(get(&key)?.to_u32().with_context(|| format!("GGUF metadata {key}"))? as usize)
        };
        let optional_int = |name: &str| -> Result<Option<usize>> {
            let key = key(name);
            let value = metadata.get(&key).map(|v| v.to_u32().with_context(|| format!("GGUF metadata {key}")));
            Ok(value.transpose()?.map(|n| n as usize))
        };
        let float = |name: &str| metadata.get(&key(name)).map(|v| v.to_f32()).transpose();
        let (gemma, gemma3) = (arch.starts_with("gemma"), arch == "gemma3");
        let num_heads = int("attention.head_count")?;
        let head_dim = match optional_int("attention.key_length")? {
            Some(width) => width,
            None => checks::head_width(
                (&key("embedding_length"), int("embedding_length")?),
                (&key("attention.head_count"), num_heads),
            )?,
        };
        // llama.cpp's `llama` rotary interleaves whole heads (its rows are un-permuted as such); the others turn the
        // first `rope.dimension_count` dimensions of each head, as a partial rotary does.
        let rotary_dim = check_rope_dimensions(metadata, &key("rope.dimension_count"), head_dim, arch != "llama")?;
        let vocab_size = match optional_int("vocab_size")? {
            Some(n) => n,
            None => get("tokenizer.ggml.tokens")?.to_vec()?.len(),
        };
        let rope_scaling = match metadata.get(&key("rope.scaling.type")).map(|v| v.to_string()).transpose()? {
            None => RopeScaling::None,
            Some(kind) if kind == "none" => RopeScaling::None,
            Some(kind) if kind == "linear" => RopeScaling::Linear {
                factor: float("rope.scaling.factor")?.context("linear rope scaling without a factor")?,
            },
            Some(kind) => bail!("rope scaling {kind:?} is not supported (none and linear are)"),
        };
        let token = |key: &str| metadata.get(key).map(|v| v.to_u32()).transpose();
        let config = Self {
            vocab_size,
            hidden_size: int("embedding_length")?,
            intermediate_size: int("feed_forward_length")?,
            num_layers: int("block_count")?,
            num_heads,
            num_kv_heads: int("attention.head_count_kv").unwrap_or(num_heads),
            head_dim,
            qk_norm: arch == "qwen3" || arch == "gemma3",
            rope_theta: float("rope.freq_base")?.unwrap_or(if gemma3 { 1e6 } else { DEFAULT_THETA }),
            rope_scaling,
            // LongRoPE factors are tensors in GGUF files: see `LlamaConfig::of_gguf`.
            long_rope: None,
            rotary_dim,
            rms_eps: get(&key("attention.layer_norm_rms_epsilon"))?.to_f32()?,
            context_length: int("context_length")?,
            // Known only from the tensors: see `LlamaConfig::of_gguf`.
            tie_word_embeddings: false,
            sliding_window: optional_int("attention.sliding_window")?,
            // As llama.cpp builds these architectures: Qwen2's Q, K and V have biases, no other layer has.
            qkv_bias: arch == "qwen2",
            o_bias: false,
            mlp_bias: false,
            fused_projections: arch == "phi3",
            bos_token_id: token("tokenizer.ggml.bos_token_id")?,
            eos_token_id: token("tokenizer.ggml.eos_token_id")?,
            // llama.cpp's converter stores Gemma's norm weights as `1 + w`.
            norm_offset: 0.0,
            sandwich_norms: gemma,
            scale_embeddings: gemma,
            activation: if gemma { Activation::GeluTanh } else { Activation::Silu },
            attn_logit_softcap: float("attn_logit_softcapping")?,
            final_logit_softcap: float("final_logit_softcapping")?,
            // llama.cpp scales Gemma's queries by 1 / sqrt(key_length), but for the 27B models (known by their 46 or
            // 62 blocks) by 1 / sqrt(hidden / heads), their `query_pre_attn_scalar`; the file names neither.
            query_pre_attn_scalar: match (arch.as_str(), int("block_count")?) {
                ("gemma2", 46) | ("gemma3", 62) => Some((int("embedding_length")? / num_heads) as f32),
                _ => gemma.then_some(head_dim as f32),
            },
            sliding_layers: match gemma {
                true => Some(gguf_sliding_layers(metadata, &key("attention.sliding_window_pattern"), arch.as_str())?),
                false => None,
            },
            local_rope_theta: match gemma3 {
                true => Some(float("rope.freq_base_swa")?.unwrap_or(DEFAULT_THETA)),
                false => None,
            },
        };
        // The file's own names first: the checks of `validate` name the keys of config.json.
        check_gguf_token_ids(metadata, vocab_size)?;
        config.validate()?;
        Ok(config)
    }

    /// The config of a GGUF file: its metadata, whether its tensors tie the head to the embeddings, and its
    /// LongRoPE factors (see the private `gguf_long_rope`).
    pub fn of_gguf(weights: &GgufWeights) -> Result<Self> {
        let mut config = Self::from_gguf(weights.metadata())?;
        config.tie_word_embeddings = weights.ties_embeddings();
        config.long_rope = gguf_long_rope(weights, config.rotary_dim, config.context_length)?;
        Ok(config)
    }

    /// `loader`, reading `lm_head.weight` from the embeddings when this config ties them and the checkpoint has no
    /// head of its own.
    pub fn tie_head(&self, loader: QuantLoader) -> QuantLoader {
        match self.tie_word_embeddings {
            true => loader.with_alias("lm_head.weight", "model.embed_tokens.weight"),
            false => loader,
        }
    }

    /// Reads an HF `config.json` of a Llama, Mistral, Phi-3, Qwen2, Qwen3, Gemma 2 or Gemma 3 model (`model_type` one of [`MODEL_TYPES`]).
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(text).context("config.json is not a Llama config")?;
        let kind = hf.model_type.as_deref().unwrap_or("llama");
        if !MODEL_TYPES.contains(&kind) {
            bail!("config.json describes a {kind:?} model, not one of {}", MODEL_TYPES.join(", "));
        }
        let gemma = matches!(kind, "gemma2" | "gemma3_text");
        if hf.use_bidirectional_attention == Some(true) {
            bail!("config.json asks for bidirectional attention (use_bidirectional_attention); a decoder is causal");
        }
        let sliding_window = match (kind, hf.use_sliding_window) {
            ("mistral", _) => hf.sliding_window,
            _ if gemma => hf.sliding_window,
            (_, Some(true)) => bail!(
                "config.json asks for Qwen's sliding window on some layers (use_sliding_window); it is not supported"
            ),
            _ => None,
        };
        let first_id = |key: &str, v: &Option<serde_json::Value>| -> Result<Option<u32>> {
            let id = match v {
                Some(serde_json::Value::Array(ids)) => ids.first(),
                id => id.as_ref(),
            };
            match id.filter(|id| !id.is_null()) {
                None => Ok(None),
                Some(id) => id
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .with_context(|| format!("{key} {id} is not a token id")),
            }
        };
        let head_dim = match hf.head_dim {
            Some(d) => d,
            None => {
                checks::head_width(("hidden_size", hf.hidden_size), ("num_attention_heads", hf.num_attention_heads))?
            }
        };
        let qwen2 = kind == "qwen2";
        let gemma_fields = match gemma {
            true => Some(GemmaFields::read(&hf, kind == "gemma3_text")?),
            false => None,
        };
        let partial = hf
            .partial_rotary_factor
            .or_else(|| hf.rope_parameters.as_ref()?.get("partial_rotary_factor")?.as_f64())
            .unwrap_or(1.0);
        if !(partial > 0.0 && partial <= 1.0) {
            bail!("partial_rotary_factor is {partial}; it must be above 0 and at most 1");
        }
        // As transformers: `int(head_dim * partial_rotary_factor)`.
        let rotary_dim = (head_dim as f64 * partial) as usize;
        let config = Self {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim,
            qk_norm: matches!(kind, "qwen3" | "gemma3_text"),
            rope_theta: match &gemma_fields {
                Some(g) => g.rope_theta,
                None => hf
                    .rope_theta
                    .or_else(|| hf.rope_parameters.as_ref()?.get("rope_theta")?.as_f64().map(|t| t as f32))
                    .unwrap_or(DEFAULT_THETA),
            },
            rope_scaling: match &gemma_fields {
                Some(g) => g.rope_scaling,
                None => hf_rope_scaling(
                    hf.rope_scaling.as_ref().or(hf.rope_parameters.as_ref()),
                    hf.max_position_embeddings,
                )?,
            },
            long_rope: hf_long_rope(
                hf.rope_scaling.as_ref().or(hf.rope_parameters.as_ref()),
                hf.original_max_position_embeddings,
                hf.max_position_embeddings,
                rotary_dim,
            )?,
            rotary_dim,
            rms_eps: hf.rms_norm_eps,
            context_length: hf.max_position_embeddings,
            // Gemma's configs tie them unless they say otherwise.
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(gemma),
            sliding_window,
            qkv_bias: qwen2 || hf.attention_bias,
            o_bias: !qwen2 && hf.attention_bias,
            mlp_bias: hf.mlp_bias,
            fused_projections: kind == "phi3",
            bos_token_id: first_id("bos_token_id", &hf.bos_token_id)?,
            eos_token_id: first_id("eos_token_id", &hf.eos_token_id)?,
            norm_offset: if gemma { 1.0 } else { 0.0 },
            sandwich_norms: gemma,
            scale_embeddings: gemma,
            activation: gemma_fields.as_ref().map_or(Activation::Silu, |g| g.activation),
            attn_logit_softcap: gemma_fields.as_ref().and_then(|g| g.attn_logit_softcap),
            final_logit_softcap: gemma_fields.as_ref().and_then(|g| g.final_logit_softcap),
            query_pre_attn_scalar: gemma_fields.as_ref().map(|g| g.query_pre_attn_scalar),
            sliding_layers: gemma_fields.as_ref().map(|g| g.sliding_layers.clone()),
            local_rope_theta: gemma_fields.as_ref().and_then(|g| g.local_rope_theta),
        };
        config.validate()?;
        Ok(config)
    }

    /// The config as an HF `config.json` (for checkpoints written from a GGUF file).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let rope_scaling = match (&self.long_rope, self.rope_scaling) {
            (Some(rope), _) => serde_json::json!({
                "rope_type": "longrope",
                "short_factor": rope.short_factor,
                "long_factor": rope.long_factor,
                "original_max_position_embeddings": rope.original_context,
                "attention_factor": rope.attention_factor,
            }),
            (None, RopeScaling::None) => serde_json::Value::Null,
            (None, RopeScaling::Linear { factor }) => serde_json::json!({"rope_type": "linear", "factor": factor}),
            (None, RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context }) => {
                serde_json::json!({
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_context,
                })
            }
        };
        // The family whose config.json reads back as this config.
        let (class, model_type) = if self.fused_projections {
            ("Phi3ForCausalLM", "phi3")
        } else if self.qk_norm {
            ("Qwen3ForCausalLM", "qwen3")
        } else if self.qkv_bias && !self.o_bias {
            ("Qwen2ForCausalLM", "qwen2")
        } else if self.sliding_window.is_some() {
            ("MistralForCausalLM", "mistral")
        } else {
            ("LlamaForCausalLM", "llama")
        };
        serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "sliding_window": self.sliding_window,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "partial_rotary_factor": self.rotary_dim as f64 / self.head_dim as f64,
            "rope_theta": self.rope_theta,
            "rope_scaling": rope_scaling,
            "rms_norm_eps": self.rms_eps,
            "max_position_embeddings": self.context_length,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.o_bias,
            "mlp_bias": self.mlp_bias,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "hidden_act": "silu",
        })
    }

    /// Checks every size, float and token id (keys by their `config.json` names).
    fn validate(&self) -> Result<()> {
        checks::sizes(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.context_length),
        ])?;
        let (heads, kv) = (self.num_heads, self.num_kv_heads);
        if !heads.is_multiple_of(kv) {
            bail!("{heads} heads of width {} and {kv} key/value heads do not fit together", self.head_dim);
        }
        if !self.rotary_dim.is_multiple_of(2) || self.rotary_dim == 0 || self.rotary_dim > self.head_dim {
            bail!(
                "{} of each head's {} dimensions rotate; rotary positions need an even number, from 2 to the head width",
                self.rotary_dim,
                self.head_dim
            );
        }
        checks::positive(&[("rms_norm_eps", f64::from(self.rms_eps)), ("rope_theta", f64::from(self.rope_theta))])?;
        check_rope_scaling(self.rope_scaling)?;
        if let Some(window) = self.sliding_window {
            if window == 0 || window > self.context_length {
                bail!(
                    "sliding_window is {window}; it must be from 1 to the context, max_position_embeddings = {}",
                    self.context_length
                );
            }
        }
        if let Some(layers) = &self.sliding_layers {
            if layers.len() != self.num_layers {
                bail!("layer_types names {} layers; num_hidden_layers is {}", layers.len(), self.num_layers);
            }
            if layers.iter().any(|&s| s) && self.sliding_window.is_none() {
                bail!("layer_types has sliding_attention layers but config.json names no sliding_window");
            }
        }
        let optional = [
            ("attn_logit_softcapping", self.attn_logit_softcap),
            ("final_logit_softcapping", self.final_logit_softcap),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("rope_parameters.sliding_attention.rope_theta", self.local_rope_theta),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                checks::positive(&[(key, f64::from(value))])?;
            }
        }
        checks::token_id("bos_token_id", self.bos_token_id.map(u64::from), self.vocab_size)?;
        checks::token_id("eos_token_id", self.eos_token_id.map(u64::from), self.vocab_size)
    }

    /// The sliding window of layer `i`, if it has one.
    pub fn layer_window(&self, i: usize) -> Option<usize> {
        match &self.sliding_layers {
            Some(layers) if !layers[i] => None,
            _ => self.sliding_window,
        }
    }

    /// Checks the sizes against the weights under `prefix` (`model.` or none) before any is read.
    fn check_weights(&self, loader: &QuantLoader, prefix: &str) -> Result<()> {
        let embeddings = format!("{prefix}embed_tokens.weight");
        let layer = |name: &str| format!("{prefix}layers.0.{name}.weight");
        let dim = |key, value, tensor, axis| WeightDim { key, value, tensor, axis };
        checks::weight_dims(
            loader,
            &[
                dim("vocab_size", self.vocab_size, embeddings.clone(), 0),
                dim("hidden_size", self.hidden_size, embeddings, 1),
                dim("intermediate_size", self.intermediate_size, layer("mlp.down_proj"), 1),
                dim("num_attention_heads * head_dim", self.num_heads * self.head_dim, layer("self_attn.o_proj"), 1),
                match self.fused_projections {
                    true => dim(
                        "(num_attention_heads + 2 * num_key_value_heads) * head_dim",
                        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim,
                        layer("self_attn.qkv_proj"),
                        0,
                    ),
                    false => dim(
                        "num_key_value_heads * head_dim",
                        self.num_kv_heads * self.head_dim,
                        layer("self_attn.k_proj"),
                        0,
                    ),
                },
            ],
        )?;
        checks::layer_count(
            loader,
            "num_hidden_layers",
            self.num_layers,
            &format!("{prefix}layers"),
            "input_layernorm.weight",
        )
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The HF name of every Linear layer, in the order they are read.
    pub fn linear_layers(&self) -> Vec<String> {
        let mut names = Vec::new();
        for i in 0..self.num_layers {
            let (attention, mlp) = self.projection_names();
            for part in attention.iter().chain(&["self_attn.o_proj"]).chain(mlp).chain(&["mlp.down_proj"]) {
                names.push(format!("model.layers.{i}.{part}"));
            }
        }
        names.push("lm_head".into());
        names
    }

    /// The layers (under a block's prefix) whose outputs make the queries, keys and values side by side, and those
    /// of the gate and up projections.
    fn projection_names(&self) -> (&'static [&'static str], &'static [&'static str]) {
        match self.fused_projections {
            true => (&["self_attn.qkv_proj"], &["mlp.gate_up_proj"]),
            false => (&["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], &["mlp.gate_proj", "mlp.up_proj"]),
        }
    }
}

/// The `model_type`s [`LlamaConfig::from_hf_json`] reads.
pub const MODEL_TYPES: [&str; 7] = ["llama", "mistral", "phi3", "qwen2", "qwen3", "gemma2", "gemma3_text"];

/// What a Gemma 2 or Gemma 3 `config.json` says beyond the Llama fields.
struct GemmaFields {
    activation: Activation,
    attn_logit_softcap: Option<f32>,
    final_logit_softcap: Option<f32>,
    query_pre_attn_scalar: f32,
    sliding_layers: Vec<bool>,
    /// The global layers' rotary base and scaling.
    rope_theta: f32,
    rope_scaling: RopeScaling,
    local_rope_theta: Option<f32>,
}

impl GemmaFields {
    /// Reads them, with transformers' defaults where a config leaves them out.
    fn read(hf: &HfConfig, gemma3: bool) -> Result<Self> {
        let name = hf.hidden_activation.as_deref().or(hf.hidden_act.as_deref()).unwrap_or("gelu_pytorch_tanh");
        let activation = match Activation::from_name(name) {
            Some(Activation::GeluTanh) => Activation::GeluTanh,
            _ => bail!("hidden_activation {name:?} is not supported for Gemma (gelu_pytorch_tanh is)"),
        };
        let n = hf.num_hidden_layers;
        let sliding_layers = match &hf.layer_types {
            Some(types) => types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => bail!("layer_types entry {other:?} is not supported (sliding_attention, full_attention)"),
                })
                .collect::<Result<_>>()?,
            // transformers' defaults: Gemma 2 alternates from a local layer; Gemma 3 makes every 6th layer global.
            None => {
                let pattern = match gemma3 {
                    true => hf.private_sliding_window_pattern.or(hf.sliding_window_pattern).unwrap_or(6),
                    false => 2,
                };
                (0..n).map(|i| !(i + 1).is_multiple_of(pattern.max(1))).collect()
            }
        };
        let params = hf.rope_parameters.as_ref().filter(|p| !p.is_null());
        let theta_of = |p: Option<&serde_json::Value>| p?.get("rope_theta")?.as_f64().map(|t| t as f32);
        let (rope_theta, rope_scaling, local_rope_theta) = match params {
            // transformers 5's Gemma 3: one set of rotary parameters per layer type.
            Some(p) if p.get("full_attention").is_some() || p.get("sliding_attention").is_some() => {
                let (global, local) = (p.get("full_attention"), p.get("sliding_attention"));
                if hf_rope_scaling(local, hf.max_position_embeddings)? != RopeScaling::None {
                    bail!("rope_parameters.sliding_attention scales the rotary; only the global layers' may");
                }
                (
                    theta_of(global).unwrap_or(1e6),
                    hf_rope_scaling(global, hf.max_position_embeddings)?,
                    Some(theta_of(local).unwrap_or(DEFAULT_THETA)),
                )
            }
            _ => (
                hf.rope_theta.or_else(|| theta_of(params)).unwrap_or(DEFAULT_THETA),
                hf_rope_scaling(hf.rope_scaling.as_ref().or(params), hf.max_position_embeddings)?,
                match gemma3 {
                    true => Some(hf.rope_local_base_freq.unwrap_or(DEFAULT_THETA)),
                    false => None,
                },
            ),
        };
        let head_dim = hf.head_dim.unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1));
        Ok(Self {
            activation,
            attn_logit_softcap: hf.attn_logit_softcapping,
            final_logit_softcap: hf.final_logit_softcapping,
            query_pre_attn_scalar: hf.query_pre_attn_scalar.unwrap_or(head_dim as f64) as f32,
            sliding_layers,
            rope_theta,
            rope_scaling,
            local_rope_theta,
        })
    }
}

/// The rotary width of a GGUF file (`ARCH.rope.dimension_count`, `key`; the head width when it names none): from 1
/// to the head width, and the whole head unless the architecture allows a `partial` rotary.
fn check_rope_dimensions(
    metadata: &HashMap<String, Value>,
    key: &str,
    head_dim: usize,
    partial: bool,
) -> Result<usize> {
    let Some(value) = metadata.get(key) else { return Ok(head_dim) };
    let dims = value.to_u32().with_context(|| format!("GGUF metadata {key}"))? as usize;
    match dims {
        0 => bail!("{key} is 0: the model has no rotary positions"),
        d if d > head_dim => bail!("{key} {d} exceeds the head width {head_dim}"),
        d if d < head_dim && !partial => {
            bail!("{key} {d} is below the head width {head_dim}: this architecture rotates whole heads")
        }
        d => Ok(d),
    }
}

/// Which layers of a Gemma GGUF file use the sliding window: `key` (`ARCH.attention.sliding_window_pattern`) as
/// one flag per layer or as a period (every `n`-th layer global), else llama.cpp's fixed pattern (Gemma 2
/// alternates from a local layer, Gemma 3 makes every 6th layer global).
fn gguf_sliding_layers(metadata: &HashMap<String, Value>, key: &str, arch: &str) -> Result<Vec<bool>> {
    let count = metadata.get(&format!("{arch}.block_count")).context("the GGUF file has no block count")?;
    let n = count.to_u32().with_context(|| format!("GGUF metadata {arch}.block_count"))? as usize;
    let period = |p: usize| -> Vec<bool> { (0..n).map(|i| !(i + 1).is_multiple_of(p.max(1))).collect() };
    match metadata.get(key) {
        None => Ok(period(if arch == "gemma2" { 2 } else { 6 })),
        Some(Value::Array(flags)) => {
            flags.iter().map(|f| f.to_bool().with_context(|| format!("GGUF metadata {key}"))).collect()
        }
        Some(value) => Ok(period(value.to_u32().with_context(|| format!("GGUF metadata {key}"))? as usize)),
    }
}

/// Checks the special-token ids a GGUF tokenizer names against the model's `vocab` and the tokenizer's own tokens.
fn check_gguf_token_ids(metadata: &HashMap<String, Value>, vocab: usize) -> Result<()> {
    let tokens = metadata.get("tokenizer.ggml.tokens").and_then(|t| t.to_vec().ok()).map(Vec::len);
    for kind in GGUF_SPECIAL_TOKENS {
        let key = format!("tokenizer.ggml.{kind}_token_id");
        let Some(value) = metadata.get(&key) else { continue };
        let id = Some(u64::from(value.to_u32().with_context(|| format!("GGUF metadata {key}"))?));
        checks::token_id(&key, id, vocab)?;
        if let Some(tokens) = tokens {
            checks::token_id(&key, id, tokens)?;
        }
    }
    Ok(())
}

/// Checks the factors of a rotary scaling: finite and above 0, and for Llama 3's, a high-frequency factor above
/// the low one (the blend between them divides by their difference).
fn check_rope_scaling(scaling: RopeScaling) -> Result<()> {
    match scaling {
        RopeScaling::None => Ok(()),
        RopeScaling::Linear { factor } => checks::positive(&[("rope_scaling.factor", f64::from(factor))]),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
            checks::positive(&[
                ("rope_scaling.factor", f64::from(factor)),
                ("rope_scaling.low_freq_factor", f64::from(low_freq_factor)),
                ("rope_scaling.high_freq_factor", f64::from(high_freq_factor)),
                ("rope_scaling.original_max_position_embeddings", f64::from(original_context)),
            ])?;
            if high_freq_factor <= low_freq_factor {
                bail!(
                    "rope_scaling.high_freq_factor {high_freq_factor} must be above low_freq_factor {low_freq_factor}"
                );
            }
            Ok(())
        }
    }
}

/// The `rope_scaling` object of an HF config.
fn hf_rope_scaling(value: Option<&serde_json::Value>, context: usize) -> Result<RopeScaling> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(RopeScaling::None) };
    let kind = value.get("rope_type").or_else(|| value.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
    let number = |key: &str| -> Result<f32> {
        value.get(key).and_then(|v| v.as_f64()).map(|v| v as f32).with_context(|| format!("rope_scaling needs {key}"))
    };
    Ok(match kind {
        // LongRoPE is read by `hf_long_rope`.
        "default" | "longrope" | "su" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: number("factor")? },
        "llama3" => RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_context: number("original_max_position_embeddings").unwrap_or(context as f32),
        },
        other => bail!("rope scaling {other:?} is not supported (default, linear, llama3 and longrope are)"),
    })
}

/// Phi-3's LongRoPE as llama.cpp's converter writes it: the factors as the tensors `rope_factors_short.weight` and
/// `rope_factors_long.weight` (a file with one of them is an error), the original context in
/// `ARCH.rope.scaling.original_context_length`, and the attention factor in `ARCH.rope.scaling.attn_factor`
/// (transformers' default, as [`hf_long_rope`] computes it, where the file has none).
fn gguf_long_rope(weights: &GgufWeights, rotary_dim: usize, context: usize) -> Result<Option<LongRope>> {
    let (short, long) = (weights.vector(GGUF_SHORT_FACTORS)?, weights.vector(GGUF_LONG_FACTORS)?);
    let (short_factor, long_factor) = match (short, long) {
        (None, None) => return Ok(None),
        (Some(short), Some(long)) => (short, long),
        _ => bail!("the GGUF file has one of {GGUF_SHORT_FACTORS} and {GGUF_LONG_FACTORS} but not the other"),
    };
    let key = |name: &str| format!("{}.rope.scaling.{name}", weights.arch());
    let metadata = weights.metadata();
    let original_key = key("original_context_length");
    let original = metadata
        .get(&original_key)
        .with_context(|| format!("LongRoPE factors need {original_key}"))?
        .to_u32()
        .with_context(|| format!("GGUF metadata {original_key}"))? as usize;
    let attention_factor = metadata.get(&key("attn_factor")).map(|v| v.to_f32()).transpose()?;
    let factors = [("short_factor", short_factor), ("long_factor", long_factor)];
    long_rope(factors, original, attention_factor.map(f64::from), context, rotary_dim).map(Some)
}

/// The GGUF names of LongRoPE's factors (read with the config, by [`gguf_long_rope`]).
const GGUF_SHORT_FACTORS: &str = "rope_factors_short.weight";
const GGUF_LONG_FACTORS: &str = "rope_factors_long.weight";

/// Phi-3's LongRoPE from a config's `rope_scaling` (or `rope_parameters`), as transformers reads it: the
/// original context from there or from the config's `original_max_position_embeddings`, and unless the config
/// names an `attention_factor`, `sqrt(1 + ln(context / original) / ln(original))` (1 when not extended).
fn hf_long_rope(
    value: Option<&serde_json::Value>,
    top_level_original: Option<usize>,
    context: usize,
    head_dim: usize,
) -> Result<Option<LongRope>> {
    let Some(value) = value.filter(|v| !v.is_null()) else { return Ok(None) };
    let kind = value.get("rope_type").or_else(|| value.get("type")).and_then(|t| t.as_str());
    if !matches!(kind, Some("longrope" | "su")) {
        return Ok(None);
    }
    let factors = |key: &'static str| -> Result<(&'static str, Vec<f32>)> {
        let list = value.get(key).and_then(|v| v.as_array()).with_context(|| format!("longrope needs {key}"))?;
        let factors: Vec<f32> = list.iter().filter_map(|f| f.as_f64()).map(|f| f as f32).collect();
        if factors.len() != list.len() {
            bail!("longrope {key} holds something other than numbers");
        }
        Ok((key, factors))
    };
    let original = value
        .get("original_max_position_embeddings")
        .and_then(|v| v.as_u64())
        .map(|n| n as usize)
        .or(top_level_original)
        .unwrap_or(context);
    let attention_factor = value.get("attention_factor").and_then(|v| v.as_f64());
    let factors = [factors("short_factor")?, factors("long_factor")?];
    long_rope(factors, original, attention_factor, context, head_dim).map(Some)
}

/// LongRoPE from its parts, checked: the short and long factors (one per rotary pair of a `head_dim`-wide
/// rotary, finite and above 0), the original context, and the attention factor, by default
/// `sqrt(1 + ln(context / original) / ln(original))` (1 when not extended), as transformers computes it.
fn long_rope(
    factors: [(&str, Vec<f32>); 2],
    original: usize,
    attention_factor: Option<f64>,
    context: usize,
    head_dim: usize,
) -> Result<LongRope> {
    for (key, factors) in &factors {
        if factors.len() != head_dim / 2 {
            bail!(
                "longrope {key} holds {} numbers; a head of {head_dim} rotates {} pairs",
                factors.len(),
                head_dim / 2
            );
        }
        if let Some(bad) = factors.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            bail!("longrope {key} holds {bad}; its factors must be finite and above 0");
        }
    }
    if original == 0 {
        bail!("longrope original_max_position_embeddings is 0");
    }
    let extension = context as f64 / original as f64;
    let attention_factor = match attention_factor {
        Some(f) => f,
        None if extension <= 1.0 => 1.0,
        None => (1.0 + extension.ln() / (original as f64).ln()).sqrt(),
    };
    let [(_, short_factor), (_, long_factor)] = factors;
    Ok(LongRope { short_factor, long_factor, original_context: original, attention_factor: attention_factor as f32 })
}

struct Block {
    attn_norm: RmsNormParams,
    /// Qwen3's RMSNorms over each head's queries and keys (`head_dim` wide).
    qk_norm: Option<(RmsNormParams, RmsNormParams)>,
    /// Queries, keys and values side by side.
    qkv: Projection,
    o: QLinear,
    /// Gemma's norm of the attention output, before the residual add.
    post_attn_norm: Option<RmsNormParams>,
    /// The feed-forward layer's input norm (`post_attention_layernorm`; Gemma's `pre_feedforward_layernorm`).
    ffn_norm: RmsNormParams,
    /// Gemma's norm of the feed-forward output, before the residual add.
    post_ffn_norm: Option<RmsNormParams>,
    /// Whether the block uses the local layers' rotary (Gemma 3).
    local_rotary: bool,
    /// Gate and up projections side by side.
    gate_up: Projection,
    down: QLinear,
}

/// A Llama model whose Linear layers are quantized per a plan (names as in HF checkpoints:
/// `model.layers.0.self_attn.q_proj`, `lm_head`, ...).
pub struct LlamaModel {
    config: LlamaConfig,
    embeddings: Vec<f32>,
    blocks: Vec<Block>,
    norm: RmsNormParams,
    /// `None` for a body loaded as an embedder.
    lm_head: Option<QLinear>,
    rotary: Rotary,
    /// Gemma 3's rotary of the sliding-window layers.
    local_rotary: Option<Rotary>,
}

impl LlamaModel {
    /// Reads a GGUF file: config from its metadata, every weight dequantized and re-quantized per `plan`.
    pub fn from_gguf(path: &Path, plan: &Plan) -> Result<Self> {
        let weights = GgufWeights::open(path)?;
        let config = LlamaConfig::of_gguf(&weights)?;
        Self::load(config, &QuantLoader::from_gguf(weights, plan.clone()))
    }

    /// Builds the model from the tensors `loader` reads (HF names), quantizing per the loader's plan or reading a
    /// checkpoint's codes; a tensor of the checkpoint that the model does not read is an error
    /// ([`QuantLoader::check_all_read`]).
    pub fn load(config: LlamaConfig, loader: &QuantLoader) -> Result<Self> {
        if loader.planned_smoothing().is_some() {
            bail!("`smooth` (SmoothQuant) applies to encoder plans; a plan for text generation cannot carry it");
        }
        if loader.planned_calibration() {
            bail!("w8a8-static applies to encoder plans (calibrated on their sentences), not to text generation");
        }
        let mut model = Self::load_body(config, loader)?;
        let h = model.config.hidden_size;
        // Tied embeddings: the head reads the embedding matrix (quantized on its own per the plan).
        if !loader.contains("lm_head.weight") && !loader.contains("lm_head.weight.codes") {
            bail!(
                "the checkpoint has no lm_head.weight (a model that ties its embeddings reads them through an alias)"
            );
        }
        model.lm_head = Some(loader.linear("lm_head", h, model.config.vocab_size, Bias::None)?);
        loader.check_all_read(UNUSED_TENSORS)?;
        Ok(model)
    }

    /// The decoder without its head (a decoder used as an embedder, such as Qwen3-Embedding): weights under
    /// `model.` (a `*ForCausalLM` checkpoint) or no prefix (a bare `*Model`).
    pub fn load_body(config: LlamaConfig, loader: &QuantLoader) -> Result<Self> {
        let prefix = if loader.contains("model.embed_tokens.weight") { "model." } else { "" };
        config.check_weights(loader, prefix)?;
        let (qkv_bias, o_bias, mlp_bias) =
            (Bias::when(config.qkv_bias), Bias::when(config.o_bias), Bias::when(config.mlp_bias));
        let (h, d) = (config.hidden_size, config.head_dim());
        let (q_width, kv_width) = (config.num_heads * d, config.num_kv_heads * d);
        let inner = config.intermediate_size;
        let norm_of = |name: &str, width: usize| -> Result<RmsNormParams> {
            let weight: Vec<f32> = loader.tensor(name, &[width])?.to_vec1()?;
            Ok(RmsNormParams::with_offset(&weight, config.norm_offset, config.rms_eps))
        };
        let norm = |name: &str| norm_of(name, h);
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let p = format!("{prefix}layers.{i}");
            let qk_norm = match config.qk_norm {
                true => Some((
                    norm_of(&format!("{p}.self_attn.q_norm.weight"), d)?,
                    norm_of(&format!("{p}.self_attn.k_norm.weight"), d)?,
                )),
                false => None,
            };
            let (attention, mlp) = config.projection_names();
            // A fused layer (Phi-3's) is one layer as wide as its parts together, unless the plan splits it.
            let projection = |names: &[&str], parts: &[usize], bias: Bias, fused: &str| {
                let names: Vec<String> = names.iter().map(|n| format!("{p}.{n}")).collect();
                let split: Vec<String> = expand_braces(&format!("{p}.{fused}"));
                match names.as_slice() {
                    [one] if !loader.split_fused(one, &split, parts)? => {
                        Projection::load(loader, &names, h, &[parts.iter().sum()], bias, one)
                    }
                    _ => Projection::load(loader, &split, h, parts, bias, &format!("{p}.{fused}")),
                }
            };
            let sandwich = |name: &str| match config.sandwich_norms {
                true => norm(&format!("{p}.{name}.weight")).map(Some),
                false => Ok(None),
            };
            let ffn_norm = match config.sandwich_norms {
                true => "pre_feedforward_layernorm",
                false => "post_attention_layernorm",
            };
            blocks.push(Block {
                post_attn_norm: sandwich("post_attention_layernorm")?,
                post_ffn_norm: sandwich("post_feedforward_layernorm")?,
                local_rotary: config.local_rope_theta.is_some() && config.layer_window(i).is_some(),
                attn_norm: norm(&format!("{p}.input_layernorm.weight"))?,
                qk_norm,
                qkv: projection(attention, &[q_width, kv_width, kv_width], qkv_bias, "self_attn.{q,k,v}_proj")?,
                o: loader.linear(&format!("{p}.self_attn.o_proj"), q_width, h, o_bias)?,
                ffn_norm: norm(&format!("{p}.{ffn_norm}.weight"))?,
                gate_up: projection(mlp, &[inner, inner], mlp_bias, "mlp.{gate,up}_proj")?,
                down: loader.linear(&format!("{p}.mlp.down_proj"), inner, h, mlp_bias)?,
            });
        }
        let embeddings = loader.tensor(&format!("{prefix}embed_tokens.weight"), &[config.vocab_size, h])?;
        Ok(Self {
            rotary: match &config.long_rope {
                Some(rope) => Rotary::long_rope(config.rotary_dim, config.rope_theta, rope),
                None => Rotary::new(config.rotary_dim, config.rope_theta, config.rope_scaling),
            }
            .within_heads(config.head_dim()),
            local_rotary: config.local_rope_theta.map(|theta| Rotary::new(config.head_dim(), theta, RopeScaling::None)),
            embeddings: embeddings.flatten_all()?.to_vec1()?,
            norm: norm(&format!("{prefix}norm.weight"))?,
            config,
            blocks,
            lm_head: None,
        })
    }

    /// The head, or an error for a body loaded without one.
    fn head(&self) -> Result<&QLinear> {
        self.lm_head.as_ref().context("this model was loaded without its lm_head (as an embedder)")
    }

    /// The model's configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The end-of-sequence token, if the model names one.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.config.eos_token_id
    }

    /// Bytes of the parameters the decoder reads per token (every Linear layer and norm; one embedding row).
    pub fn linear_bytes(&self) -> usize {
        let block_bytes = |b: &Block| {
            b.qkv.storage_bytes() + b.o.storage_bytes() + b.gate_up.storage_bytes() + b.down.storage_bytes()
        };
        self.blocks.iter().map(block_bytes).sum::<usize>() + self.lm_head.as_ref().map_or(0, QLinear::storage_bytes)
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        let c = &self.config;
        let heads = |i: usize| match c.layer_window(i) {
            Some(window) => KvHeads::with_window(c.num_kv_heads, c.head_dim(), window),
            None => KvHeads::new(c.num_kv_heads, c.head_dim()),
        };
        KvCache { layers: (0..c.num_layers).map(heads).collect(), len: 0 }
    }

    /// The logits of the token that follows `ids` (the whole prompt, run at once with causal attention).
    pub fn next_token_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.forward(ids, &mut self.new_cache())
    }

    /// Runs `ids` after the tokens already in `cache` (appending theirs), returning the logits of the token that
    /// follows the last one.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let hidden = self.hidden(ids, cache)?;
        let h = self.config.hidden_size;
        Ok(self.soft_cap(self.head()?.forward_f32(&hidden[hidden.len() - h..], 1)?))
    }

    /// The logits soft-capped per [`LlamaConfig::final_logit_softcap`] (Gemma 2), as they are otherwise.
    fn soft_cap(&self, mut logits: Vec<f32>) -> Vec<f32> {
        if let Some(cap) = self.config.final_logit_softcap {
            logits.iter_mut().for_each(|l| *l = (*l / cap).tanh() * cap);
        }
        logits
    }

    /// Like [`LlamaModel::forward`], but the logits after every token of `ids`: `[ids.len(), vocab]`, row-major.
    pub fn forward_all(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let hidden = self.hidden(ids, cache)?;
        Ok(self.soft_cap(self.head()?.forward_f32(&hidden, ids.len())?))
    }

    /// The final normed hidden states of `ids` run after `cache`.
    fn hidden(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let c = &self.config;
        if ids.is_empty() || cache.len + ids.len() > c.context_length {
            bail!(
                "{} new tokens after {} cached; the model takes 1 to {} in all",
                ids.len(),
                cache.len,
                c.context_length
            );
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            bail!("token id {id} is outside the vocabulary of {}", c.vocab_size);
        }
        let (n, h, d) = (ids.len(), c.hidden_size, c.head_dim());
        let (q_width, kv_width) = (c.num_heads * d, c.num_kv_heads * d);
        let global_table = self.rotary.table(cache.len, n);
        let local_table = self.local_rotary.as_ref().map(|r| r.table(cache.len, n));
        let mut x: Vec<f32> =
            ids.iter().flat_map(|&id| self.embeddings[id as usize * h..][..h].iter().copied()).collect();
        if c.scale_embeddings {
            // As transformers does: sqrt(hidden_size) in f64, rounded to f32.
            let scale = (h as f64).sqrt() as f32;
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let options = CausalOptions {
            scale: c.query_pre_attn_scalar.map(|s| f64::from(s).powf(-0.5) as f32),
            softcap: c.attn_logit_softcap,
        };
        for (block, kv) in self.blocks.iter().zip(&mut cache.layers) {
            let (rotary, table) = match (&self.local_rotary, &local_table) {
                (Some(rotary), Some(table)) if block.local_rotary => (rotary, table),
                _ => (&self.rotary, &global_table),
            };
            let qkv = block.qkv.forward(&block.attn_norm.apply(&x), n)?;
            let (mut q, mut k, mut v) = (Vec::with_capacity(n * q_width), Vec::new(), Vec::new());
            for row in qkv.chunks_exact(q_width + 2 * kv_width) {
                q.extend_from_slice(&row[..q_width]);
                k.extend_from_slice(&row[q_width..q_width + kv_width]);
                v.extend_from_slice(&row[q_width + kv_width..]);
            }
            if let Some((q_norm, k_norm)) = &block.qk_norm {
                q = q_norm.apply(&q);
                k = k_norm.apply(&k);
            }
            rotary.apply(&mut q, c.num_heads, table);
            rotary.apply(&mut k, c.num_kv_heads, table);
            kv.append(&k, &v);
            let context = kv.causal_attention_with(&q, c.num_heads, options);
            let mut attended = block.o.forward_f32(&context, n)?;
            if let Some(norm) = &block.post_attn_norm {
                attended = norm.apply(&attended);
            }
            x.iter_mut().zip(&attended).for_each(|(x, a)| *x += a);
            let mut gate_up = block.gate_up.forward(&block.ffn_norm.apply(&x), n)?;
            let mut out = block.down.forward_f32(&gated(&mut gate_up, c.intermediate_size, c.activation), n)?;
            if let Some(norm) = &block.post_ffn_norm {
                out = norm.apply(&out);
            }
            x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        }
        cache.len += n;
        Ok(self.norm.apply(&x))
    }

    /// Perplexity of `ids` in non-overlapping windows of `window` tokens, each run from an empty cache: the
    /// exponential of the mean negative log-likelihood of every token after the first of its window.
    pub fn perplexity(&self, ids: &[u32], window: usize) -> Result<f64> {
        if window < 2 || ids.len() < 2 {
            bail!("perplexity needs a window of at least 2 tokens and at least 2 tokens of text");
        }
        let vocab = self.config.vocab_size;
        let (mut nll, mut count) = (0f64, 0usize);
        for chunk in ids.chunks(window).filter(|c| c.len() > 1) {
            let logits = self.forward_all(&chunk[..chunk.len() - 1], &mut self.new_cache())?;
            for (row, &next) in logits.chunks_exact(vocab).zip(&chunk[1..]) {
                nll += log_sum_exp(row) - f64::from(row[next as usize]);
                count += 1;
            }
        }
        Ok((nll / count as f64).exp())
    }

    /// Greedy decoding: up to `max_tokens` tokens after `prompt`, stopping after the end-of-sequence token.
    pub fn greedy(&self, prompt: &[u32], max_tokens: usize) -> Result<Vec<u32>> {
        let mut cache = self.new_cache();
        let mut out = Vec::with_capacity(max_tokens);
        if max_tokens == 0 {
            return Ok(out);
        }
        let mut logits = self.forward(prompt, &mut cache)?;
        loop {
            let next = argmax(&logits);
            out.push(next);
            if out.len() == max_tokens || Some(next) == self.config.eos_token_id {
                return Ok(out);
            }
            logits = self.forward(&[next], &mut cache)?;
        }
    }
}

/// Keys and values (after rotary) of the tokens one sequence has seen, per block, in the attention kernel's layout.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<KvHeads>,
    len: usize,
}

impl KvCache {
    /// Tokens seen.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the keys and values held, all layers together.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(KvHeads::bytes).sum()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `ln(sum(exp(row)))`, in f64 around the row's maximum.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = f64::from(row.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    max + row.iter().map(|&l| (f64::from(l) - max).exp()).sum::<f64>().ln()
}

/// Turns one row of logits into log-probabilities, in place.
pub fn log_softmax(row: &mut [f32]) {
    let norm = log_sum_exp(row);
    row.iter_mut().for_each(|l| *l = (f64::from(*l) - norm) as f32);
}

/// The index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl TextEncoder for LlamaModel {
    /// Each sequence runs alone from an empty cache, with causal attention: the last hidden states of a decoder.
    fn forward_packed(&self, sequences: &[&[u32]], token_types: Option<&[&[u32]]>) -> Result<Vec<f32>> {
        super::encoder::no_token_types(token_types, "A decoder")?;
        let mut hidden = Vec::with_capacity(sequences.iter().map(|s| s.len()).sum::<usize>() * self.hidden_size());
        for (i, ids) in sequences.iter().enumerate() {
            hidden.extend(self.hidden(ids, &mut self.new_cache()).with_context(|| format!("sequence #{i}"))?);
        }
        Ok(hidden)
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_tokens(&self) -> usize {
        self.config.context_length
    }

    fn embedding_bytes(&self) -> usize {
        let c = &self.config;
        let qk = if c.qk_norm { 2 * c.head_dim * c.num_layers } else { 0 };
        let norms = if c.sandwich_norms { 4 } else { 2 };
        4 * (self.embeddings.len() + c.hidden_size * (norms * c.num_layers + 1) + qk)
    }
}

/// Reads the body of a Llama-family decoder (an embedder) from its `config.json` text: the builder of its [`crate::arch`] entry.
pub fn encoder(config: &str, loader: &QuantLoader) -> Result<Box<dyn TextEncoder>> {
    Ok(Box::new(LlamaModel::load_body(LlamaConfig::from_hf_json(config)?, loader)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers 5 writes the rotary base and scaling into `rope_parameters`; older configs at the top level.
    #[test]
    fn the_rotary_base_is_read_from_either_form() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "rms_norm_eps": 1e-6, "max_position_embeddings": 32, "model_type": "qwen2""#;
        let read = |extra: &str| LlamaConfig::from_hf_json(&format!("{{{base}{extra}}}")).unwrap();
        assert_eq!(read("").rope_theta, 10_000.0);
        assert_eq!(read(r#", "rope_theta": 1000000.0"#).rope_theta, 1e6);
        let v5 = read(r#", "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}"#);
        assert_eq!((v5.rope_theta, v5.rope_scaling), (1e6, RopeScaling::None));
        let linear = read(r#", "rope_parameters": {"rope_type": "linear", "rope_theta": 5e5, "factor": 2.0}"#);
        assert_eq!((linear.rope_theta, linear.rope_scaling), (5e5, RopeScaling::Linear { factor: 2.0 }));
    }

    /// Gemma configs without `layer_types` (older transformers) get transformers' layer patterns, and Gemma 3's
    /// older rotary keys (`rope_theta`, `rope_local_base_freq`) are read.
    #[test]
    fn gemma_defaults_follow_transformers() {
        let base = r#""vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 7,
            "num_attention_heads": 2, "rms_norm_eps": 1e-6, "max_position_embeddings": 32, "sliding_window": 4"#;
        let read = |extra: &str| LlamaConfig::from_hf_json(&format!("{{{base}{extra}}}")).unwrap();
        let gemma2 = read(r#", "model_type": "gemma2""#);
        let windows: Vec<_> = (0..7).map(|i| gemma2.layer_window(i)).collect();
        assert_eq!(windows, [Some(4), None, Some(4), None, Some(4), None, Some(4)]);
        assert_eq!(
            (gemma2.norm_offset, gemma2.activation, gemma2.tie_word_embeddings),
            (1.0, Activation::GeluTanh, true)
        );
        assert_eq!((gemma2.query_pre_attn_scalar, gemma2.local_rope_theta), (Some(4.0), None));
        let gemma3 = read(
            r#", "model_type": "gemma3_text", "rope_theta": 1e6, "rope_local_base_freq": 1e4, "sliding_window_pattern": 3"#,
        );
        let windows: Vec<_> = (0..7).map(|i| gemma3.layer_window(i).is_some()).collect();
        assert_eq!(windows, [true, true, false, true, true, false, true]);
        assert_eq!((gemma3.rope_theta, gemma3.local_rope_theta, gemma3.qk_norm), (1e6, Some(1e4), true));
        let llama = read(r#", "model_type": "llama""#);
        assert_eq!((llama.norm_offset, llama.activation, llama.sliding_layers), (0.0, Activation::Silu, None));
    }
}
