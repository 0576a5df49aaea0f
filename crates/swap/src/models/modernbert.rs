//! ModernBERT (`ModernBertModel`): a pre-norm encoder with rotary positions (one base for global layers, another
//! for local ones), bidirectional sliding-window attention in all but every n-th layer, a gated GELU feed-forward,
//! no biases and a final norm.

use anyhow::{bail, Context, Result};
use qlayers::{Activation, QLinear};
use serde::Deserialize;

use super::checks::{self, WeightDim};
use super::embedding::EmbeddingTable;
use super::encoder::{check_sequences, packed_ranges, weights_prefix_of};
use super::TextEncoder;
use crate::loader::{Bias, QuantLoader};
use qlayers::float_ops::attention::{attention_into, AttentionOptions, QkvLayout};
use qlayers::float_ops::rotary::{RopeScaling, Rotary};
use qlayers::float_ops::rows::{gated, LayerNormParams};

/// The fields of a ModernBERT `config.json` (both the transformers 4 form, with `global_rope_theta` and
/// `global_attn_every_n_layers`, and the transformers 5 form, with `layer_types` and `rope_parameters`).
#[derive(Debug, Clone, Deserialize)]
pub struct ModernBertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the gated feed-forward layer (its input projection is twice as wide).
    pub intermediate_size: usize,
    /// Activation of the feed-forward gate.
    #[serde(default = "default_act")]
    pub hidden_activation: String,
    /// Positions the model was trained on.
    pub max_position_embeddings: usize,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    /// Whether the norms have biases.
    #[serde(default)]
    pub norm_bias: bool,
    /// Whether Wqkv and Wo have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the feed-forward layers have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Every n-th layer (from layer 0) attends globally, the others within the local window.
    #[serde(default = "default_every")]
    pub global_attn_every_n_layers: usize,
    /// The local window: a token sees `local_attention / 2` tokens each side.
    #[serde(default = "default_window")]
    pub local_attention: usize,
    /// Per layer, `full_attention` or `sliding_attention` (transformers 5), instead of the rule above.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Rotary bases per layer type (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Rotary base of global layers (transformers 4).
    #[serde(default = "default_global_theta")]
    pub global_rope_theta: f32,
    /// Rotary base of local layers (transformers 4).
    #[serde(default = "default_local_theta")]
    pub local_rope_theta: f32,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_every() -> usize {
    3
}
fn default_window() -> usize {
    128
}
fn default_global_theta() -> f32 {
    160_000.0
}
fn default_local_theta() -> f32 {
    10_000.0
}

impl ModernBertConfig {
    /// Parses and checks a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).context("config.json is not a ModernBERT config")?;
        checks::sizes(&[
            ("vocab_size", config.vocab_size),
            ("num_hidden_layers", config.num_hidden_layers),
            ("intermediate_size", config.intermediate_size),
            ("max_position_embeddings", config.max_position_embeddings),
            ("local_attention", config.local_attention),
        ])?;
        let head_width = checks::head_width(
            ("hidden_size", config.hidden_size),
            ("num_attention_heads", config.num_attention_heads),
        )?;
        if !head_width.is_multiple_of(2) {
            bail!(
                "hidden_size {} over num_attention_heads {} is an odd head width",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        checks::positive(&[
            ("norm_eps", config.norm_eps),
            ("global_rope_theta", f64::from(config.global_rope_theta)),
            ("local_rope_theta", f64::from(config.local_rope_theta)),
        ])?;
        if config.global_attn_every_n_layers == 0 {
            bail!("global_attn_every_n_layers must be at least 1");
        }
        if let Some(types) = &config.layer_types {
            if types.len() < config.num_hidden_layers {
                bail!("layer_types names {} layers; the model has {}", types.len(), config.num_hidden_layers);
            }
            if let Some(t) = types.iter().find(|t| *t != "full_attention" && *t != "sliding_attention") {
                bail!("layer type {t:?} is not full_attention or sliding_attention");
            }
        }
        config.activation()?;
        Ok(config)
    }

    fn activation(&self) -> Result<Activation> {
        Activation::from_name(&self.hidden_activation)
            .with_context(|| format!("unsupported hidden_activation {:?}", self.hidden_activation))
    }

    /// Whether layer `i` attends within the local window.
    fn is_local(&self, i: usize) -> bool {
        match &self.layer_types {
            Some(types) => types[i] == "sliding_attention",
            None => !i.is_multiple_of(self.global_attn_every_n_layers),
        }
    }

    /// The rotary base of layer `i`.
    fn rope_theta(&self, i: usize) -> Result<f32> {
        let (kind, fallback) = match self.is_local(i) {
            true => ("sliding_attention", self.local_rope_theta),
            false => ("full_attention", self.global_rope_theta),
        };
        let Some(params) = self.rope_parameters.as_ref().and_then(|p| p.get(kind)) else { return Ok(fallback) };
        if params.get("rope_type").and_then(|t| t.as_str()).is_some_and(|t| t != "default") {
            bail!("rope_parameters.{kind}: only the default rope type is supported");
        }
        let theta = params.get("rope_theta").and_then(|t| t.as_f64()).context("rope_parameters without rope_theta")?;
        checks::positive(&[(&format!("rope_parameters.{kind}.rope_theta"), theta)])?;
        Ok(theta as f32)
    }

    /// Linear layers the encoder reads (Wqkv, Wo, Wi, Wo of the feed-forward per layer).
    pub fn linear_layers(&self) -> usize {
        4 * self.num_hidden_layers
    }
}

struct Layer {
    /// `None` in layer 0, whose input is the normalized embeddings already.
    attn_norm: Option<LayerNormParams>,
    qkv: QLinear,
    attn_out: QLinear,
    mlp_norm: LayerNormParams,
    /// `[input | gate]`, `2 * intermediate` wide.
    mlp_in: QLinear,
    mlp_out: QLinear,
    rotary: Rotary,
    /// Half the local window, for local layers.
    window: Option<usize>,
}

/// A ModernBERT encoder whose Linear layers are quantized per the loader's plan.
pub struct ModernBertModel {
    config: ModernBertConfig,
    activation: Activation,
    words: EmbeddingTable,
    embeddings_norm: LayerNormParams,
    layers: Vec<Layer>,
    final_norm: LayerNormParams,
}

impl ModernBertModel {
    /// Builds the model, quantizing each layer as it is read (weights under `model.` or no prefix).
    pub fn load(config: ModernBertConfig, loader: &QuantLoader) -> Result<Self> {
        let prefix = weights_prefix_of(loader, &["", "model."], "embeddings.norm.weight")?;
        let (h, inner, eps) = (config.hidden_size, config.intermediate_size, config.norm_eps);
        check_sizes(&config, loader, prefix)?;
        let norm = |name: &str| -> Result<LayerNormParams> {
            let weight = loader.tensor(&format!("{prefix}{name}.weight"), &[h])?.to_vec1()?;
            let bias = match config.norm_bias {
                true => loader.tensor(&format!("{prefix}{name}.bias"), &[h])?.to_vec1()?,
                false => vec![0.0; h],
            };
            Ok(LayerNormParams { weight, bias, eps: eps as f32 })
        };
        let word_name = format!("{prefix}embeddings.tok_embeddings");
        let words = EmbeddingTable::from_params(
            &word_name,
            loader.table_params(&word_name, config.vocab_size, h)?,
            config.vocab_size,
            h,
        )?;
        let head_dim = h / config.num_attention_heads;
        let (attention_bias, mlp_bias) = (Bias::when(config.attention_bias), Bias::when(config.mlp_bias));
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}layers.{i}");
                Ok(Layer {
                    attn_norm: if i == 0 { None } else { Some(norm(&format!("layers.{i}.attn_norm"))?) },
                    qkv: loader.linear(&format!("{p}.attn.Wqkv"), h, 3 * h, attention_bias)?,
                    attn_out: loader.linear(&format!("{p}.attn.Wo"), h, h, attention_bias)?,
                    mlp_norm: norm(&format!("layers.{i}.mlp_norm"))?,
                    mlp_in: loader.linear(&format!("{p}.mlp.Wi"), h, 2 * inner, mlp_bias)?,
                    mlp_out: loader.linear(&format!("{p}.mlp.Wo"), inner, h, mlp_bias)?,
                    rotary: Rotary::new(head_dim, config.rope_theta(i)?, RopeScaling::None),
                    window: config.is_local(i).then_some(config.local_attention / 2),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            activation: config.activation()?,
            words,
            embeddings_norm: norm("embeddings.norm")?,
            layers,
            final_norm: norm("final_norm")?,
            config,
        })
    }

    /// One layer over `hidden` (`[rows, h]`), in place.
    fn layer_forward(&self, layer: &Layer, hidden: &mut [f32], starts: &[usize], lens: &[usize]) -> Result<()> {
        let (h, heads) = (self.config.hidden_size, self.config.num_attention_heads);
        let rows = hidden.len() / h;
        let normed = match &layer.attn_norm {
            Some(norm) => {
                let mut x = hidden.to_vec();
                norm.apply(&mut x, None);
                x
            }
            None => hidden.to_vec(),
        };
        let mut qkv = layer.qkv.forward_f32(&normed, rows)?;
        for (&start, &len) in starts.iter().zip(lens) {
            let table = layer.rotary.table(0, len);
            let rows = &mut qkv[start * 3 * h..][..len * 3 * h];
            layer.rotary.apply_strided(rows, 3 * h, 0, heads, &table);
            layer.rotary.apply_strided(rows, 3 * h, h, heads, &table);
        }
        let layout = QkvLayout { row_stride: 3 * h, q: 0, k: h, v: 2 * h };
        let mut context = vec![0f32; rows * h];
        let options = AttentionOptions { window: layer.window, ..Default::default() };
        attention_into(&qkv, layout, heads, h / heads, starts, lens, options, &mut context);
        let attended = layer.attn_out.forward_f32(&context, rows)?;
        hidden.iter_mut().zip(&attended).for_each(|(x, a)| *x += a);
        let mut normed = hidden.to_vec();
        layer.mlp_norm.apply(&mut normed, None);
        let mut gate_up = layer.mlp_in.forward_f32(&normed, rows)?;
        let inner = gated(&mut gate_up, self.config.intermediate_size, self.activation);
        let out = layer.mlp_out.forward_f32(&inner, rows)?;
        hidden.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        Ok(())
    }
}

impl TextEncoder for ModernBertModel {
    fn forward_packed(&self, sequences: &[&[u32]], token_types: Option<&[&[u32]]>) -> Result<Vec<f32>> {
        check_sequences(sequences, self.config.vocab_size, self.max_tokens())?;
        super::encoder::no_token_types(token_types, "ModernBERT")?;
        let h = self.config.hidden_size;
        let mut hidden: Vec<f32> = Vec::with_capacity(sequences.iter().map(|s| s.len()).sum::<usize>() * h);
        for &id in sequences.iter().flat_map(|s| s.iter()) {
            let at = hidden.len();
            hidden.resize(at + h, 0.0);
            self.words.row_into(id as usize, &mut hidden[at..]);
        }
        self.embeddings_norm.apply(&mut hidden, None);
        let (starts, lens) = packed_ranges(sequences);
        for layer in &self.layers {
            self.layer_forward(layer, &mut hidden, &starts, &lens)?;
        }
        self.final_norm.apply(&mut hidden, None);
        Ok(hidden)
    }

    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_tokens(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn embedding_bytes(&self) -> usize {
        let norms = 2 * self.config.hidden_size * (2 * self.layers.len() + 1);
        self.words.storage_bytes() + 4 * norms
    }
}

/// Checks the config's sizes against the weights under `prefix` before any is read.
fn check_sizes(config: &ModernBertConfig, loader: &QuantLoader, prefix: &str) -> Result<()> {
    let words = format!("{prefix}embeddings.tok_embeddings.weight");
    checks::weight_dims(
        loader,
        &[
            WeightDim { key: "vocab_size", value: config.vocab_size, tensor: words.clone(), axis: 0 },
            WeightDim { key: "hidden_size", value: config.hidden_size, tensor: words, axis: 1 },
            WeightDim {
                key: "intermediate_size",
                value: config.intermediate_size,
                tensor: format!("{prefix}layers.0.mlp.Wo.weight"),
                axis: 1,
            },
        ],
    )?;
    checks::layer_count(
        loader,
        "num_hidden_layers",
        config.num_hidden_layers,
        &format!("{prefix}layers"),
        "mlp_norm.weight",
    )
}

/// Reads a ModernBERT encoder from its `config.json` text: the builder of its [`crate::arch`] entry.
pub fn encoder(config: &str, loader: &QuantLoader) -> Result<Box<dyn TextEncoder>> {
    Ok(Box::new(ModernBertModel::load(ModernBertConfig::from_json(config)?, loader)?))
}
