//! BERT (`BertModel`) on quantized layers: embeddings, encoder with a fused QKV projection, attention mask.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use qlayers::QLinear;
use serde::Deserialize;

use super::attention::{attention_into, QkvLayout};
use super::embedding::EmbeddingTable;
use qlayers::Activation;

use super::ops::LayerNormParams;
use super::projection::Projection;
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
    /// Linear layers the encoder reads (query, key, value, attention output, intermediate, output per layer).
    pub fn linear_layers(&self) -> usize {
        6 * self.num_hidden_layers
    }

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
            || !config.hidden_size.is_multiple_of(config.num_attention_heads)
        {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size,
                config.num_attention_heads
            );
        }
        if Activation::from_name(&config.hidden_act).is_none() {
            bail!("unsupported hidden_act {:?}", config.hidden_act);
        }
        Ok(config)
    }
}

struct Layer {
    /// Q, K and V: `[rows, 3h]`, each row's queries, keys and values side by side.
    qkv: Projection,
    attention_out: QLinear,
    attention_norm: LayerNormParams,
    intermediate: QLinear,
    output: QLinear,
    output_norm: LayerNormParams,
}

/// A BERT encoder whose Linear layers are quantized per the loader's plan. Activations live in plain row-major
/// buffers holding only real tokens (no padding rows), sequence after sequence.
pub struct BertModel {
    config: BertConfig,
    activation: Activation,
    /// `[vocab, hidden]`, f32 or int8 per the plan.
    word_embeddings: EmbeddingTable,
    /// `[positions, hidden]`.
    position_embeddings: Vec<f32>,
    /// `[type_vocab, hidden]`; every token is type 0.
    token_type_embeddings: Vec<f32>,
    embeddings_norm: LayerNormParams,
    layers: Vec<Layer>,
    /// Activation buffers of finished calls, taken by the next ones: every layer of every call then writes into
    /// memory it already has instead of faulting in fresh pages (tens of MB a layer for a batch). There are as many
    /// as calls have run at once, each as large as the largest batch it served.
    workspaces: std::sync::Mutex<Vec<Workspace>>,
}

/// One call's activation buffers, reused from layer to layer.
#[derive(Default)]
struct Workspace {
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    inner: Vec<f32>,
    out: Vec<f32>,
}

impl BertModel {
    /// Builds the model, quantizing each layer as it is read.
    pub fn load(config: BertConfig, loader: &QuantLoader) -> Result<Self> {
        let prefix = if loader.contains("embeddings.position_embeddings.weight") { "" } else { "bert." };
        let h = config.hidden_size;
        let activation = Activation::from_name(&config.hidden_act).context("checked by BertConfig::from_json")?;
        let embedding = |name: &str, rows: usize| -> Result<Vec<f32>> {
            Ok(loader.tensor(&format!("{prefix}embeddings.{name}.weight"), &[rows, h])?.flatten_all()?.to_vec1()?)
        };
        let norm = |name: &str| layer_norm(loader, &format!("{prefix}{name}"), h, config.layer_norm_eps);
        let word_name = format!("{prefix}embeddings.word_embeddings");
        let word_params = loader.table_params(&word_name, config.vocab_size, h)?;
        let word_embeddings = EmbeddingTable::from_params(&word_name, word_params, config.vocab_size, h)?;
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
        Ok(Self {
            config,
            activation,
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            layers,
            workspaces: Default::default(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Bytes of the embedding tables (the token table f32 or int8 per the plan, the others f32) and layer norms.
    pub fn embedding_bytes(&self) -> usize {
        let tables = self.position_embeddings.len() + self.token_type_embeddings.len();
        let norms = 2 * self.config.hidden_size * (1 + 2 * self.layers.len());
        self.word_embeddings.storage_bytes() + 4 * (tables + norms)
    }

    /// Hidden states of every token of every sequence: `[sum of lengths, hidden]`, sequence after sequence.
    /// Each sequence's rows are the same whatever it is batched with.
    pub fn forward_packed(&self, sequences: &[&[u32]]) -> Result<Vec<f32>> {
        let (vocab, positions) = (self.config.vocab_size, self.config.max_position_embeddings);
        for (i, ids) in sequences.iter().enumerate() {
            if ids.is_empty() || ids.len() > positions {
                bail!("sequence #{i} has {} tokens; the model takes 1 to {positions}", ids.len());
            }
            if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
                bail!("sequence #{i} holds token id {id}, outside the vocabulary of {vocab}");
            }
        }
        let lens: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        let starts: Vec<usize> = lens.iter().scan(0, |at, &len| Some(std::mem::replace(at, *at + len))).collect();
        let rows: usize = lens.iter().sum();
        let h = self.config.hidden_size;
        let mut hidden = vec![0f32; rows * h];
        let mut out = hidden.chunks_exact_mut(h);
        for ids in sequences {
            for (pos, (&id, row)) in ids.iter().zip(out.by_ref()).enumerate() {
                self.word_embeddings.row_into(id as usize, row);
                let position = &self.position_embeddings[pos * h..][..h];
                let token_type = &self.token_type_embeddings[..h];
                row.iter_mut().zip(position).zip(token_type).for_each(|((v, p), t)| *v = *v + p + t);
            }
        }
        self.embeddings_norm.apply(&mut hidden, None);
        let pool = || self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        let mut ws = pool().pop().unwrap_or_default();
        let result = self.layers.iter().try_for_each(|layer| {
            self.layer_forward(layer, &hidden, rows, &starts, &lens, &mut ws)?;
            std::mem::swap(&mut hidden, &mut ws.out);
            Ok(())
        });
        pool().push(ws);
        result.map(|()| hidden)
    }

    /// Hidden states `[batch, seq, hidden]` for token ids `[batch, seq]` (u32), where sequence `b` holds
    /// `lens[b]` real tokens followed by padding (whose rows come out as zeros). Padding never influences real
    /// tokens, and each sequence's result is the same whatever it is batched with.
    pub fn forward(&self, input_ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        if lens.len() != batch || lens.iter().any(|&l| l == 0 || l > seq) {
            bail!("sequence lengths {lens:?} do not fit a batch of {batch} x {seq}");
        }
        let ids = input_ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let sequences: Vec<&[u32]> = ids.iter().zip(lens).map(|(row, &len)| &row[..len]).collect();
        let packed = self.forward_packed(&sequences)?;
        let h = self.config.hidden_size;
        let mut padded = vec![0f32; batch * seq * h];
        let mut rows = packed.chunks_exact(h);
        for (b, &len) in lens.iter().enumerate() {
            for (t, row) in rows.by_ref().take(len).enumerate() {
                padded[(b * seq + t) * h..][..h].copy_from_slice(row);
            }
        }
        Ok(Tensor::from_vec(padded, (batch, seq, h), input_ids.device())?)
    }

    /// One encoder layer over `hidden` (`rows` tokens); its output goes to `ws.out`.
    fn layer_forward(
        &self,
        layer: &Layer,
        hidden: &[f32],
        rows: usize,
        starts: &[usize],
        lens: &[usize],
        ws: &mut Workspace,
    ) -> Result<()> {
        let (h, heads) = (self.config.hidden_size, self.config.num_attention_heads);
        layer.qkv.forward_into(hidden, rows, &mut ws.qkv)?;
        let layout = QkvLayout { row_stride: 3 * h, q: 0, k: h, v: 2 * h };
        // The sequences cover every row, so every row of the context is written.
        ws.context.resize(rows * h, 0.0);
        attention_into(&ws.qkv, layout, heads, h / heads, starts, lens, &mut ws.context);
        layer.attention_out.forward_into(&ws.context, rows, None, &mut ws.attended)?;
        layer.attention_norm.apply(&mut ws.attended, Some(hidden));
        // The activation is applied by the kernels as they store the intermediate layer's outputs.
        layer.intermediate.forward_into(&ws.attended, rows, Some(self.activation), &mut ws.inner)?;
        layer.output.forward_into(&ws.inner, rows, None, &mut ws.out)?;
        layer.output_norm.apply(&mut ws.out, Some(&ws.attended));
        Ok(())
    }
}

fn load_qkv(loader: &QuantLoader, prefix: &str, h: usize) -> Result<Projection> {
    let names = ["query", "key", "value"].map(|n| format!("{prefix}.{n}"));
    Projection::load(loader, &names, h, &[h; 3], &format!("{prefix}.{{query,key,value}}"))
}

fn layer_norm(loader: &QuantLoader, name: &str, h: usize, eps: f64) -> Result<LayerNormParams> {
    let weight = loader.tensor(&format!("{name}.weight"), &[h])?.to_vec1()?;
    let bias = loader.tensor(&format!("{name}.bias"), &[h])?.to_vec1()?;
    Ok(LayerNormParams { weight, bias, eps: eps as f32 })
}
