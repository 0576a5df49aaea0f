//! A Llama-architecture decoder (RMSNorm, rotary positions, grouped-query attention, SwiGLU) on quantized layers,
//! read from a GGUF file: each Linear is dequantized from the file's type and re-quantized per the plan.
//!
//! A prompt runs at once (prefill); generation then runs one token at a time against a [`KvCache`].

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use qlayers::QLinear;

use crate::plan::Plan;

/// The hyper-parameters of a Llama model, from GGUF metadata (`llama.*`).
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
    /// Rotary base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Longest context the model was trained for.
    pub context_length: usize,
}

impl LlamaConfig {
    /// Reads the `llama.*` keys; a GGUF file of another architecture is an error.
    pub fn from_gguf(metadata: &HashMap<String, Value>) -> Result<Self> {
        let get = |key: &str| metadata.get(key).with_context(|| format!("the GGUF file has no {key}"));
        let arch = get("general.architecture")?.to_string()?;
        if arch != "llama" {
            bail!("the GGUF file holds a {arch:?} model; this loader reads Llama-architecture models");
        }
        let int = |key: &str| -> Result<usize> { Ok(get(&format!("llama.{key}"))?.to_u32()? as usize) };
        let num_heads = int("attention.head_count")?;
        let hidden_size = int("embedding_length")?;
        let vocab_size = match metadata.get("llama.vocab_size") {
            Some(v) => v.to_u32()? as usize,
            None => get("tokenizer.ggml.tokens")?.to_vec()?.len(),
        };
        let config = Self {
            vocab_size,
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            num_layers: int("block_count")?,
            num_heads,
            num_kv_heads: int("attention.head_count_kv").unwrap_or(num_heads),
            rope_theta: metadata.get("llama.rope.freq_base").map(|v| v.to_f32()).transpose()?.unwrap_or(10_000.0),
            rms_eps: get("llama.attention.layer_norm_rms_epsilon")?.to_f32()?,
            context_length: int("context_length")?,
        };
        if num_heads == 0
            || !hidden_size.is_multiple_of(num_heads)
            || config.num_kv_heads == 0
            || !num_heads.is_multiple_of(config.num_kv_heads)
        {
            bail!("{num_heads} heads and {} key/value heads do not fit width {hidden_size}", config.num_kv_heads);
        }
        Ok(config)
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

struct Block {
    attn_norm: Vec<f32>,
    q: QLinear,
    k: QLinear,
    v: QLinear,
    o: QLinear,
    ffn_norm: Vec<f32>,
    gate: QLinear,
    up: QLinear,
    down: QLinear,
}

/// A Llama model whose Linear layers are quantized per a plan (names as in HF checkpoints:
/// `model.layers.0.self_attn.q_proj`, `lm_head`, ...).
pub struct LlamaModel {
    config: LlamaConfig,
    eos_token_id: Option<u32>,
    embeddings: Vec<f32>,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    lm_head: QLinear,
}

impl LlamaModel {
    /// Reads a GGUF file: config from its metadata, every weight dequantized and re-quantized per `plan`.
    pub fn from_gguf(path: &Path, plan: &Plan) -> Result<Self> {
        let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let content =
            Content::read(&mut file).with_context(|| format!("{} is not a valid GGUF file", path.display()))?;
        let config = LlamaConfig::from_gguf(&content.metadata)?;
        let linear = |file: &mut std::fs::File, gguf: &str, hf: &str| -> Result<QLinear> {
            let weight = tensor_of(&content, file, gguf)?;
            let scheme = plan.scheme_for(hf)?;
            QLinear::new(&weight, None, scheme).with_context(|| format!("quantizing {hf} as {scheme}"))
        };
        let mut blocks = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let (g, h) = (format!("blk.{i}"), format!("model.layers.{i}"));
            let f = &mut file;
            blocks.push(Block {
                attn_norm: vector(tensor_of(&content, f, &format!("{g}.attn_norm.weight"))?)?,
                q: linear(f, &format!("{g}.attn_q.weight"), &format!("{h}.self_attn.q_proj"))?,
                k: linear(f, &format!("{g}.attn_k.weight"), &format!("{h}.self_attn.k_proj"))?,
                v: linear(f, &format!("{g}.attn_v.weight"), &format!("{h}.self_attn.v_proj"))?,
                o: linear(f, &format!("{g}.attn_output.weight"), &format!("{h}.self_attn.o_proj"))?,
                ffn_norm: vector(tensor_of(&content, f, &format!("{g}.ffn_norm.weight"))?)?,
                gate: linear(f, &format!("{g}.ffn_gate.weight"), &format!("{h}.mlp.gate_proj"))?,
                up: linear(f, &format!("{g}.ffn_up.weight"), &format!("{h}.mlp.up_proj"))?,
                down: linear(f, &format!("{g}.ffn_down.weight"), &format!("{h}.mlp.down_proj"))?,
            });
        }
        let embeddings_tensor = tensor_of(&content, &mut file, "token_embd.weight")?;
        if embeddings_tensor.dims() != [config.vocab_size, config.hidden_size] {
            bail!(
                "token_embd.weight is {:?}, expected {:?}",
                embeddings_tensor.dims(),
                [config.vocab_size, config.hidden_size]
            );
        }
        // Tied embeddings when the file has no separate output matrix.
        let head_weight = match content.tensor_infos.contains_key("output.weight") {
            true => tensor_of(&content, &mut file, "output.weight")?,
            false => embeddings_tensor.clone(),
        };
        let lm_head = QLinear::new(&head_weight, None, plan.scheme_for("lm_head")?).context("quantizing lm_head")?;
        let norm = vector(tensor_of(&content, &mut file, "output_norm.weight")?)?;
        let embeddings = embeddings_tensor.flatten_all()?.to_vec1()?;
        let eos_token_id = content.metadata.get("tokenizer.ggml.eos_token_id").map(|v| v.to_u32()).transpose()?;
        Ok(Self { config, eos_token_id, embeddings, blocks, norm, lm_head })
    }

    /// The model's configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The end-of-sequence token of the file's tokenizer, if it names one.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            keys: vec![Vec::new(); self.config.num_layers],
            values: vec![Vec::new(); self.config.num_layers],
            len: 0,
        }
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
        Ok(self.lm_head.forward_f32(&hidden[hidden.len() - h..], 1)?)
    }

    /// Like [`LlamaModel::forward`], but the logits after every token of `ids`: `[ids.len(), vocab]`, row-major.
    pub fn forward_all(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let hidden = self.hidden(ids, cache)?;
        Ok(self.lm_head.forward_f32(&hidden, ids.len())?)
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
        let (n, h) = (ids.len(), c.hidden_size);
        let mut x: Vec<f32> =
            ids.iter().flat_map(|&id| self.embeddings[id as usize * h..][..h].iter().copied()).collect();
        for (b, block) in self.blocks.iter().enumerate() {
            let normed = rms_norm(&x, &block.attn_norm, c.rms_eps);
            let mut q = block.q.forward_f32(&normed, n)?;
            let mut k = block.k.forward_f32(&normed, n)?;
            let v = block.v.forward_f32(&normed, n)?;
            rope(&mut q, c.num_heads, c.head_dim(), c.rope_theta, cache.len);
            rope(&mut k, c.num_kv_heads, c.head_dim(), c.rope_theta, cache.len);
            cache.keys[b].extend_from_slice(&k);
            cache.values[b].extend_from_slice(&v);
            let context = causal_attention(&q, &cache.keys[b], &cache.values[b], cache.len, c);
            let attended = block.o.forward_f32(&context, n)?;
            x.iter_mut().zip(&attended).for_each(|(x, a)| *x += a);
            let normed = rms_norm(&x, &block.ffn_norm, c.rms_eps);
            let gate = block.gate.forward_f32(&normed, n)?;
            let up = block.up.forward_f32(&normed, n)?;
            let inner: Vec<f32> = gate.iter().zip(&up).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let out = block.down.forward_f32(&inner, n)?;
            x.iter_mut().zip(&out).for_each(|(x, o)| *x += o);
        }
        cache.len += n;
        Ok(rms_norm(&x, &self.norm, c.rms_eps))
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
            let logits = self.forward_all(chunk, &mut self.new_cache())?;
            for (row, &next) in logits.chunks_exact(vocab).zip(&chunk[1..]) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let log_sum = max + row.iter().map(|&l| (f64::from(l) - max).exp()).sum::<f64>().ln();
                nll += log_sum - f64::from(row[next as usize]);
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
            if out.len() == max_tokens || Some(next) == self.eos_token_id {
                return Ok(out);
            }
            logits = self.forward(&[next], &mut cache)?;
        }
    }
}

/// Keys and values (after rotary) of the tokens one sequence has seen, per block: `[tokens, kv_heads * head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The index of the largest logit (the first one on ties).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn tensor_of(content: &Content, file: &mut std::fs::File, name: &str) -> Result<Tensor> {
    let q = content.tensor(file, name, &Device::Cpu).with_context(|| format!("GGUF tensor {name}"))?;
    Ok(q.dequantize(&Device::Cpu)?)
}

fn vector(t: Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1()?)
}

/// `x / sqrt(mean(x^2) + eps) * weight` for every row of `x`.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let width = weight.len();
    x.chunks_exact(width)
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / width as f32 + eps).sqrt();
            row.iter().zip(weight).map(move |(v, w)| v * inv * w)
        })
        .collect()
}

/// Rotary positions on adjacent pairs of each head (the layout GGUF files store Q and K weights in):
/// row `r` sits at position `p = offset + r`, and its pair `i` rotates by `p * theta^(-2i / head_dim)`.
fn rope(x: &mut [f32], heads: usize, head_dim: usize, theta: f32, offset: usize) {
    let width = heads * head_dim;
    for (r, row) in x.chunks_exact_mut(width).enumerate() {
        let p = offset + r;
        for head in row.chunks_exact_mut(head_dim) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let angle = p as f32 * theta.powf(-2.0 * i as f32 / head_dim as f32);
                let (sin, cos) = angle.sin_cos();
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos - b * sin;
                pair[1] = a * sin + b * cos;
            }
        }
    }
}

/// Softmax attention of each new query (the one of row `i` sits at position `past + i`) over the keys at or before
/// its position; query head `h` reads key/value head `h / (heads / kv_heads)`.
fn causal_attention(q: &[f32], k: &[f32], v: &[f32], past: usize, c: &LlamaConfig) -> Vec<f32> {
    let d = c.head_dim();
    let (qw, kw) = (c.num_heads * d, c.num_kv_heads * d);
    let n = q.len() / qw;
    let group = c.num_heads / c.num_kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; n * qw];
    for h in 0..c.num_heads {
        let kv = h / group;
        for i in 0..n {
            let query = &q[i * qw + h * d..][..d];
            let scores: Vec<f32> = (0..=past + i)
                .map(|j| query.iter().zip(&k[j * kw + kv * d..][..d]).map(|(a, b)| a * b).sum::<f32>() * scale)
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f32 = weights.iter().sum();
            let dst = &mut out[i * qw + h * d..][..d];
            for (j, w) in weights.iter().enumerate() {
                for (o, val) in dst.iter_mut().zip(&v[j * kw + kv * d..][..d]) {
                    *o += w / total * val;
                }
            }
        }
    }
    out
}
