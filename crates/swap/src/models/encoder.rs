//! The post-norm transformer encoder that BERT, RoBERTa, DistilBERT and MPNet share ([`PostNormEncoder`]: input
//! embeddings, then a stack of blocks), each block: fused Q/K/V
//! projection, bidirectional attention over each sequence's own tokens, output projection, residual + layer norm,
//! feed-forward with its activation in the matmul epilogue, residual + layer norm. Families differ in their weight
//! names ([`LayerNames`]) and, for MPNet, an additive relative-position bias ([`RelativeBias`]).

use anyhow::{Context, Result};
use qlayers::{Activation, QLinear};

use super::checks::{self, WeightDim};
use super::embedding::{EmbeddingShape, InputEmbeddings};
use super::encoder_tensors::StackOnDevice;
use super::projection::Projection;
use super::TextEncoder;
use crate::loader::{Bias, QuantLoader};
use qlayers::float_ops::attention::{attention_into, AttentionOptions, QkvLayout, RelativeBias};
use qlayers::float_ops::rows::LayerNormParams;

/// Where one layer's weights are, relative to the layer's prefix (`encoder.layer.3`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerNames {
    /// Query, key and value projections.
    pub qkv: [&'static str; 3],
    /// The attention output projection.
    pub attention_out: &'static str,
    /// The layer norm after attention.
    pub attention_norm: &'static str,
    /// The feed-forward input projection.
    pub intermediate: &'static str,
    /// The feed-forward output projection.
    pub output: &'static str,
    /// The layer norm after the feed-forward.
    pub output_norm: &'static str,
}

/// The shape of an encoder stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderShape {
    /// Width of the hidden states.
    pub hidden: usize,
    /// Width of the feed-forward layer.
    pub intermediate: usize,
    /// Attention heads.
    pub heads: usize,
    /// Layers.
    pub layers: usize,
    /// Layer norm epsilon.
    pub eps: f64,
}

/// One encoder layer's weights.
pub(super) struct Layer {
    /// Q, K and V: `[rows, 3h]`, each row's queries, keys and values side by side.
    pub(super) qkv: Projection,
    pub(super) attention_out: QLinear,
    pub(super) attention_norm: LayerNormParams,
    pub(super) intermediate: QLinear,
    pub(super) output: QLinear,
    pub(super) output_norm: LayerNormParams,
}

/// A stack of post-norm encoder layers whose Linear layers are quantized per the loader's plan.
pub(crate) struct EncoderStack {
    shape: EncoderShape,
    activation: Activation,
    layers: Vec<Layer>,
    /// Activation buffers of finished calls, taken by the next ones: every layer of every call then writes into
    /// memory it already has instead of faulting in fresh pages (tens of MB a layer for a batch). There are as many
    /// as calls have run at once, each as large as the largest batch it served.
    workspaces: std::sync::Mutex<Vec<Workspace>>,
    /// The tensor path, when the layers run on candle's kernels (the loader's placement).
    on_device: Option<StackOnDevice>,
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

impl EncoderStack {
    /// Reads layers `{prefix}.0` .. of `shape` with the weight names `names`. Every Linear layer of these families
    /// has a bias.
    pub(crate) fn load(
        loader: &QuantLoader,
        prefix: &str,
        names: LayerNames,
        shape: EncoderShape,
        activation: Activation,
    ) -> Result<Self> {
        let (h, inner) = (shape.hidden, shape.intermediate);
        let layers = (0..shape.layers)
            .map(|i| {
                let p = format!("{prefix}.{i}");
                let qkv_names = names.qkv.map(|n| format!("{p}.{n}"));
                let fused = fused_name(&qkv_names);
                Ok(Layer {
                    qkv: Projection::load(loader, &qkv_names, h, &[h; 3], Bias::Required, &fused)?,
                    attention_out: loader.linear(&format!("{p}.{}", names.attention_out), h, h, Bias::Required)?,
                    attention_norm: layer_norm(loader, &format!("{p}.{}", names.attention_norm), h, shape.eps)?,
                    intermediate: loader.linear(&format!("{p}.{}", names.intermediate), h, inner, Bias::Required)?,
                    output: loader.linear(&format!("{p}.{}", names.output), inner, h, Bias::Required)?,
                    output_norm: layer_norm(loader, &format!("{p}.{}", names.output_norm), h, shape.eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let on_device = loader.placement().candle_device().map(|d| StackOnDevice::new(d, &layers)).transpose()?;
        Ok(Self { shape, activation, layers, workspaces: Default::default(), on_device })
    }

    /// Bytes of the layer norms (the Linear layers are in the loader's report).
    fn norm_bytes(&self) -> usize {
        4 * 4 * self.shape.hidden * self.layers.len()
    }

    /// Runs every layer over `hidden` (`[rows, h]`, sequence `b` at rows `starts[b]..starts[b] + lens[b]`), with
    /// `bias` added to the attention scores when given.
    fn forward(
        &self,
        mut hidden: Vec<f32>,
        starts: &[usize],
        lens: &[usize],
        bias: Option<&RelativeBias>,
    ) -> Result<Vec<f32>> {
        if let Some(on_device) = &self.on_device {
            return on_device.forward(&self.layers, self.shape, self.activation, hidden, starts, lens, bias);
        }
        let rows = hidden.len() / self.shape.hidden;
        let pool = || self.workspaces.lock().unwrap_or_else(|e| e.into_inner());
        let mut ws = pool().pop().unwrap_or_default();
        let result = self.layers.iter().try_for_each(|layer| {
            self.layer_forward(layer, &hidden, rows, starts, lens, bias, &mut ws)?;
            std::mem::swap(&mut hidden, &mut ws.out);
            Ok(())
        });
        pool().push(ws);
        result.map(|()| hidden)
    }

    /// One layer over `hidden` (`rows` tokens); its output goes to `ws.out`.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        layer: &Layer,
        hidden: &[f32],
        rows: usize,
        starts: &[usize],
        lens: &[usize],
        bias: Option<&RelativeBias>,
        ws: &mut Workspace,
    ) -> Result<()> {
        let (h, heads) = (self.shape.hidden, self.shape.heads);
        layer.qkv.forward_into(hidden, rows, &mut ws.qkv)?;
        let layout = QkvLayout { row_stride: 3 * h, q: 0, k: h, v: 2 * h };
        // The sequences cover every row, so every row of the context is written.
        ws.context.resize(rows * h, 0.0);
        let options = AttentionOptions { bias, window: None };
        attention_into(&ws.qkv, layout, heads, h / heads, starts, lens, options, &mut ws.context);
        layer.attention_out.forward_into(&ws.context, rows, None, &mut ws.attended)?;
        layer.attention_norm.apply(&mut ws.attended, Some(hidden));
        // The activation is applied by the kernels as they store the intermediate layer's outputs, which the
        // output layer reads chunk by chunk while they are in cache.
        let (inner, out) = (&mut ws.inner, &mut ws.out);
        QLinear::forward_pair_into(
            &layer.intermediate,
            Some(self.activation),
            &layer.output,
            &ws.attended,
            rows,
            inner,
            out,
        )?;
        layer.output_norm.apply(&mut ws.out, Some(&ws.attended));
        Ok(())
    }
}

/// The name a fused projection is reported under: `p.attention.self.{query,key,value}`.
fn fused_name(names: &[String; 3]) -> String {
    let first = &names[0];
    let cut = first.rfind('.').map_or(0, |i| i + 1);
    let leaves: Vec<&str> = names.iter().map(|n| &n[cut..]).collect();
    format!("{}{{{}}}", &first[..cut], leaves.join(","))
}

/// The prefix under which a checkpoint holds an encoder's weights: the first of `prefixes` (`""`, `"bert."`, ...)
/// under which it has `probe`, a float tensor that every checkpoint of the family stores as it is (quantized
/// checkpoints rename the tensors they quantize).
pub(crate) fn weights_prefix_of(loader: &QuantLoader, prefixes: &[&'static str], probe: &str) -> Result<&'static str> {
    prefixes.iter().copied().find(|p| loader.contains(&format!("{p}{probe}"))).with_context(|| {
        let names: Vec<String> = prefixes.iter().map(|p| format!("{p}{probe}")).collect();
        format!("the checkpoint has none of {}", names.join(", "))
    })
}

/// [`weights_prefix_of`] probed by the position table of BERT-style embeddings.
pub(crate) fn weights_prefix(loader: &QuantLoader, prefixes: &[&'static str]) -> Result<&'static str> {
    weights_prefix_of(loader, prefixes, "embeddings.position_embeddings.weight")
}

/// The config keys under which a family names the sizes of its encoder, for errors.
pub(crate) struct SizeKeys {
    /// The vocabulary size.
    pub vocab: &'static str,
    /// The hidden width.
    pub hidden: &'static str,
    /// The positions.
    pub positions: &'static str,
    /// The feed-forward width.
    pub intermediate: &'static str,
    /// The layer count.
    pub layers: &'static str,
}

/// Checks the sizes of a post-norm encoder's config against its weights before any is read: the embedding tables
/// (under `embeddings`, which ends in `embeddings.`), the feed-forward width of the first layer and the layer count
/// of the stack under `stack` (`encoder.layer`).
pub(crate) fn check_sizes(
    loader: &QuantLoader,
    embeddings: &str,
    stack: &str,
    names: &LayerNames,
    table: &EmbeddingShape,
    shape: &EncoderShape,
    keys: &SizeKeys,
) -> Result<()> {
    let words = format!("{embeddings}word_embeddings.weight");
    let mut dims = vec![
        WeightDim { key: keys.vocab, value: table.vocab, tensor: words.clone(), axis: 0 },
        WeightDim { key: keys.hidden, value: table.width, tensor: words, axis: 1 },
        WeightDim {
            key: keys.positions,
            value: table.positions,
            tensor: format!("{embeddings}position_embeddings.weight"),
            axis: 0,
        },
        WeightDim {
            key: keys.intermediate,
            value: shape.intermediate,
            tensor: format!("{stack}.0.{}.weight", names.intermediate),
            axis: 0,
        },
    ];
    if table.types > 0 {
        let tensor = format!("{embeddings}token_type_embeddings.weight");
        dims.push(WeightDim { key: "type_vocab_size", value: table.types, tensor, axis: 0 });
    }
    checks::weight_dims(loader, &dims)?;
    checks::layer_count(loader, keys.layers, shape.layers, stack, &format!("{}.weight", names.attention_norm))
}

/// Reads layer norm `name` (`name.weight`, `name.bias`, both `[h]`).
pub(crate) fn layer_norm(loader: &QuantLoader, name: &str, h: usize, eps: f64) -> Result<LayerNormParams> {
    let weight = loader.tensor(&format!("{name}.weight"), &[h])?.to_vec1()?;
    let bias = loader.tensor(&format!("{name}.bias"), &[h])?.to_vec1()?;
    Ok(LayerNormParams { weight, bias, eps: eps as f32 })
}

/// A whole BERT-style encoder: [`InputEmbeddings`], the [`EncoderStack`], and the relative-position bias of the
/// families that have one. Each family's model file only reads it under its own names.
pub(crate) struct PostNormEncoder {
    embeddings: InputEmbeddings,
    stack: EncoderStack,
    bias: Option<RelativeBias>,
    vocab: usize,
    hidden: usize,
    /// Bytes of the parameters behind `bias` (its bucket table).
    bias_bytes: usize,
}

impl PostNormEncoder {
    /// The encoder of these parts; `bias` comes with the bytes of the table it was built from.
    pub(crate) fn new(
        embeddings: InputEmbeddings,
        stack: EncoderStack,
        bias: Option<(RelativeBias, usize)>,
        vocab: usize,
        hidden: usize,
    ) -> Self {
        let (bias, bias_bytes) = bias.map_or((None, 0), |(b, bytes)| (Some(b), bytes));
        Self { embeddings, stack, bias, vocab, hidden, bias_bytes }
    }
}

impl TextEncoder for PostNormEncoder {
    fn forward_packed(&self, sequences: &[&[u32]], token_types: Option<&[&[u32]]>) -> Result<Vec<f32>> {
        check_sequences(sequences, self.vocab, self.max_tokens())?;
        let hidden = self.embeddings.embed(sequences, token_types)?;
        let (starts, lens) = packed_ranges(sequences);
        self.stack.forward(hidden, &starts, &lens, self.bias.as_ref())
    }

    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_tokens(&self) -> usize {
        self.embeddings.max_tokens()
    }

    fn embedding_bytes(&self) -> usize {
        self.embeddings.storage_bytes() + self.stack.norm_bytes() + self.bias_bytes
    }
}

/// Refuses token types other than 0, for a model that has none (`family` names it in the error).
pub(crate) fn no_token_types(token_types: Option<&[&[u32]]>, family: &str) -> Result<()> {
    if token_types.is_some_and(|t| t.iter().flat_map(|t| t.iter()).any(|&t| t != 0)) {
        anyhow::bail!("{family} has no token types");
    }
    Ok(())
}

/// The token ranges of packed sequences: where each starts and how long each is.
pub(crate) fn packed_ranges(sequences: &[&[u32]]) -> (Vec<usize>, Vec<usize>) {
    let lens: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
    let starts: Vec<usize> = lens.iter().scan(0, |at, &len| Some(std::mem::replace(at, *at + len))).collect();
    (starts, lens)
}

/// Checks that every sequence holds 1 to `positions` ids below `vocab`.
pub(crate) fn check_sequences(sequences: &[&[u32]], vocab: usize, positions: usize) -> Result<()> {
    for (i, ids) in sequences.iter().enumerate() {
        if ids.is_empty() || ids.len() > positions {
            anyhow::bail!("sequence #{i} has {} tokens; the model takes 1 to {positions}", ids.len());
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            anyhow::bail!("sequence #{i} holds token id {id}, outside the vocabulary of {vocab}");
        }
    }
    Ok(())
}

/// The activation `name` stands for, or an error naming it.
pub(crate) fn activation(name: &str) -> Result<Activation> {
    Activation::from_name(name).with_context(|| format!("unsupported activation {name:?}"))
}
