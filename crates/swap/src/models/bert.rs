//! BERT (`BertModel`) on quantized layers: embeddings, encoder with a fused QKV projection, attention mask.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm};
use qlayers::QLinear;
use serde::Deserialize;

use super::attention::{attention, QkvLayout};
use crate::loader::QuantLoader;

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
    /// `model_type`, which must be `bert` when present.
    #[serde(default)]
    pub model_type: Option<String>,
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
    /// Parses and checks a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: BertConfig = serde_json::from_str(text).context("config.json is not a BERT config")?;
        if let Some(t) = &config.model_type {
            if t != "bert" {
                bail!("config.json says model_type {t:?}; this loader reads BERT models");
            }
        }
        if config.hidden_size == 0
            || config.num_attention_heads == 0
            || config.hidden_size % config.num_attention_heads != 0
        {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        if !["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"].contains(&config.hidden_act.as_str()) {
            bail!("unsupported hidden_act {:?}", config.hidden_act);
        }
        Ok(config)
    }
}

/// The Q, K and V projections: one fused matmul when the plan gives them one scheme, else three.
enum Qkv {
    Fused(QLinear),
    Separate([QLinear; 3]),
}

struct Layer {
    qkv: Qkv,
    attention_out: QLinear,
    attention_norm: LayerNorm,
    intermediate: QLinear,
    output: QLinear,
    output_norm: LayerNorm,
}

/// A BERT encoder whose Linear layers are quantized per the loader's plan.
pub struct BertModel {
    config: BertConfig,
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl BertModel {
    /// Builds the model, quantizing each layer as it is read.
    pub fn load(config: BertConfig, loader: &QuantLoader) -> Result<Self> {
        let prefix = if loader.contains("embeddings.word_embeddings.weight") { "" } else { "bert." };
        let h = config.hidden_size;
        let embedding = |name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(loader.tensor(&format!("{prefix}embeddings.{name}.weight"), &[rows, h])?, h))
        };
        let norm = |name: &str| layer_norm(loader, &format!("{prefix}{name}"), h, config.layer_norm_eps);
        let word_embeddings = embedding("word_embeddings", config.vocab_size)?;
        let position_embeddings = embedding("position_embeddings", config.max_position_embeddings)?;
        let token_type_embeddings = embedding("token_type_embeddings", config.type_vocab_size)?;
        let embeddings_norm = norm("embeddings.LayerNorm")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}encoder.layer.{i}");
                Ok(Layer {
                    qkv: load_qkv(loader, &format!("{p}.attention.self"), h)?,
                    attention_out: loader.linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: norm(&format!("encoder.layer.{i}.attention.output.LayerNorm"))?,
                    intermediate: loader.linear(&format!("{p}.intermediate.dense"), h, config.intermediate_size)?,
                    output: loader.linear(&format!("{p}.output.dense"), config.intermediate_size, h)?,
                    output_norm: norm(&format!("encoder.layer.{i}.output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { config, word_embeddings, position_embeddings, token_type_embeddings, embeddings_norm, layers })
    }

    /// The model's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Bytes of the f32 embedding tables and layer norms (the parts no plan quantizes).
    pub fn embedding_bytes(&self) -> usize {
        let tables = [&self.word_embeddings, &self.position_embeddings, &self.token_type_embeddings];
        let norms = 2 * self.config.hidden_size * (1 + 2 * self.layers.len());
        4 * (tables.iter().map(|e| e.embeddings().elem_count()).sum::<usize>() + norms)
    }

    /// Hidden states `[batch, seq, hidden]` for token ids `[batch, seq]` (u32), where sequence `b` holds
    /// `lens[b]` real tokens followed by padding. Padding never influences real tokens, and each sequence's
    /// result is the same whatever it is batched with.
    pub fn forward(&self, input_ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        if lens.len() != batch || lens.iter().any(|&l| l == 0 || l > seq) {
            bail!("sequence lengths {lens:?} do not fit a batch of {batch} x {seq}");
        }
        if seq > self.config.max_position_embeddings {
            bail!("{seq} tokens exceed the model's {} positions", self.config.max_position_embeddings);
        }
        let device = input_ids.device();
        let positions = Tensor::arange(0u32, seq as u32, device)?;
        let token_types = Tensor::zeros((batch, seq), DType::U32, device)?;
        let embedded = self
            .word_embeddings
            .forward(input_ids)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?
            .add(&self.token_type_embeddings.forward(&token_types)?)?;
        let mut hidden = self.embeddings_norm.forward(&embedded)?;
        for layer in &self.layers {
            hidden = self.layer_forward(layer, &hidden, lens)?;
        }
        Ok(hidden)
    }

    fn layer_forward(&self, layer: &Layer, hidden: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (batch, seq, h) = hidden.dims3()?;
        let heads = self.config.num_attention_heads;
        let qkv = match &layer.qkv {
            Qkv::Fused(qkv) => qkv.forward(hidden)?,
            Qkv::Separate([q, k, v]) => {
                Tensor::cat(&[q.forward(hidden)?, k.forward(hidden)?, v.forward(hidden)?], D::Minus1)?
            }
        };
        let layout = QkvLayout { row_stride: 3 * h, q: 0, k: h, v: 2 * h };
        let context = attention(&qkv.flatten_all()?.to_vec1::<f32>()?, layout, seq, heads, h / heads, lens);
        let context = Tensor::from_vec(context, (batch, seq, h), hidden.device())?;
        let attended = layer.attention_norm.forward(&(layer.attention_out.forward(&context)? + hidden)?)?;
        let inner = layer.intermediate.forward(&attended)?;
        let inner = match self.config.hidden_act.as_str() {
            "gelu" => inner.gelu_erf()?,
            "relu" => inner.relu()?,
            _ => inner.gelu()?,
        };
        Ok(layer.output_norm.forward(&(layer.output.forward(&inner)? + attended)?)?)
    }
}

fn load_qkv(loader: &QuantLoader, prefix: &str, h: usize) -> Result<Qkv> {
    let names = ["query", "key", "value"].map(|n| format!("{prefix}.{n}"));
    let schemes = names.iter().map(|n| loader.scheme_for(n)).collect::<Result<Vec<_>>>()?;
    if schemes.iter().all(|s| *s == schemes[0]) {
        let weights =
            names.iter().map(|n| loader.tensor(&format!("{n}.weight"), &[h, h])).collect::<Result<Vec<_>>>()?;
        let biases = names.iter().map(|n| loader.tensor(&format!("{n}.bias"), &[h])).collect::<Result<Vec<_>>>()?;
        let weight = Tensor::cat(&weights, 0)?;
        let bias = Tensor::cat(&biases, 0)?;
        // The plan gives the three one scheme, so they run as one matmul of [3h, h].
        Ok(Qkv::Fused(loader.linear_with(
            &format!("{prefix}.{{query,key,value}}"),
            &weight,
            Some(&bias),
            schemes[0],
        )?))
    } else {
        let [q, k, v] = &names;
        Ok(Qkv::Separate([loader.linear(q, h, h)?, loader.linear(k, h, h)?, loader.linear(v, h, h)?]))
    }
}

fn layer_norm(loader: &QuantLoader, name: &str, h: usize, eps: f64) -> Result<LayerNorm> {
    let weight = loader.tensor(&format!("{name}.weight"), &[h])?;
    let bias = loader.tensor(&format!("{name}.bias"), &[h])?;
    Ok(LayerNorm::new(weight, bias, eps))
}
