//! A float model in memory, rebuilt under any plan and scored against its own float outputs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use qlayers::LayerScheme;
use serde::Serialize;

use crate::arch::Task;
use crate::embedder::Embedder;
use crate::eval::Agreement;
use crate::generator::Generator;
use crate::loader::{expand_braces, QuantLoader};
use crate::models::llama::{log_softmax, LlamaModel};
use crate::plan::{Plan, Rule};
use crate::reranker::{PairTokens, Reranker};

/// How close a model's outputs are to the float model's on the calibration data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "metric", rename_all = "snake_case")]
pub enum Quality {
    /// BERT: cosine between each sentence embedding and the float model's.
    Embeddings {
        /// Mean cosine.
        cosine_mean: f64,
        /// Smallest cosine.
        cosine_min: f64,
    },
    /// A reranker: how far its raw scores of the calibration pairs are from the float model's.
    Scores {
        /// Mean absolute difference.
        mean_error: f64,
        /// Largest absolute difference.
        max_error: f64,
    },
    /// Llama: perplexity of the calibration text and divergence of the next-token distributions.
    Tokens {
        /// Perplexity of the calibration tokens.
        perplexity: f64,
        /// Mean over positions of KL(float || this model), in nats.
        kl: f64,
    },
}

impl Quality {
    /// The loss against the float model: `1 - cosine_mean` for embeddings; for tokens, the mean KL divergence of
    /// the next-token distributions from the float model's (in nats). KL rather than the perplexity change: it is
    /// never negative and far less noisy on short calibration texts (a layer's effect on perplexity is often below
    /// the noise of 128 tokens), and it approximates the log of the perplexity ratio, so losses of many layers add
    /// up to a perplexity change.
    pub fn loss(&self) -> f64 {
        match self {
            Self::Embeddings { cosine_mean, .. } => 1.0 - cosine_mean,
            Self::Scores { mean_error, .. } => *mean_error,
            Self::Tokens { kl, .. } => *kl,
        }
    }
}

impl std::fmt::Display for Quality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embeddings { cosine_mean, cosine_min } => {
                write!(f, "cosine mean {cosine_mean:.6}, min {cosine_min:.6}")
            }
            Self::Scores { mean_error, max_error } => {
                write!(f, "score error mean {mean_error:.3e}, max {max_error:.3e}")
            }
            Self::Tokens { perplexity, kl } => write!(f, "perplexity {perplexity:.4}, KL {kl:.3e}"),
        }
    }
}

/// A quantizable layer: its name and weight shape `[out, in]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerShape {
    /// Dotted layer name, as plans match it.
    pub name: String,
    /// Output features.
    pub out_features: usize,
    /// Input features.
    pub in_features: usize,
}

/// A plan's result on the probe: quality and the bytes of its Linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    /// Outputs against the float model's.
    pub quality: Quality,
    /// Bytes of every Linear layer (codes, scales, biases) in memory.
    pub linear_bytes: usize,
}

/// The model and what it is scored on.
enum Model {
    Embedder { embedder: Box<Embedder>, sequences: Vec<Vec<u32>>, reference: Vec<Vec<f32>> },
    Reranker { reranker: Box<Reranker>, pairs: Vec<PairTokens>, reference: Vec<f32> },
    Llama { model: Box<LlamaModel>, ids: Vec<u32>, reference: Vec<f32> },
}

/// A float model held in memory with calibration data and its float outputs on that data.
pub struct Probe {
    model: Model,
    tensors: Arc<HashMap<String, Tensor>>,
    layers: Vec<LayerShape>,
    float: Evaluation,
    /// BERT: the largest `|x|` each layer's input channels saw on the calibration data (for SmoothQuant).
    input_ranges: Arc<HashMap<String, Vec<f32>>>,
}

impl Probe {
    /// An embedding model folder (float weights) scored by the cosine of its embeddings of `texts` to the float
    /// model's.
    pub fn embedder(dir: &Path, texts: &[&str]) -> Result<Self> {
        if texts.is_empty() {
            bail!("calibration needs at least one text");
        }
        let (embedder, tensors) = Embedder::open_in_memory(dir)?;
        let sequences = embedder.encode(texts)?;
        let reference = embedder.embed_token_ids(&sequences)?;
        let names: Vec<String> = embedder.layers().iter().flat_map(|l| expand_braces(&l.name)).collect();
        let layers = layer_shapes(names.iter().map(String::as_str), &tensors)?;
        let linear_bytes = embedder.layers().iter().map(|l| l.bytes).sum();
        let float = Evaluation { quality: Quality::Embeddings { cosine_mean: 1.0, cosine_min: 1.0 }, linear_bytes };
        let observing = QuantLoader::from_tensors(Arc::clone(&tensors), Plan::uniform(LayerScheme::F32)).observing();
        embedder.with_loader(&observing)?.embed_token_ids(&sequences)?;
        let input_ranges = Arc::new(observing.input_ranges());
        let model = Model::Embedder { embedder: Box::new(embedder), sequences, reference };
        Ok(Self { model, tensors, layers, float, input_ranges })
    }

    /// A reranker folder (float weights) scored by its raw scores of `pairs` against the float model's.
    pub fn reranker(dir: &Path, pairs: &[(&str, &str)]) -> Result<Self> {
        if pairs.is_empty() {
            bail!("calibration needs at least one (query, document) pair");
        }
        let (reranker, tensors) = Reranker::open_in_memory(dir)?;
        let mut tokens = Vec::with_capacity(pairs.len());
        for (query, document) in pairs {
            tokens.extend(reranker.encode(query, &[document])?);
        }
        let reference = reranker.score_tokens(&tokens)?;
        let names: Vec<String> = reranker.layers().iter().flat_map(|l| expand_braces(&l.name)).collect();
        let layers = layer_shapes(names.iter().map(String::as_str), &tensors)?;
        let linear_bytes = reranker.layers().iter().map(|l| l.bytes).sum();
        let float = Evaluation { quality: Quality::Scores { mean_error: 0.0, max_error: 0.0 }, linear_bytes };
        let observing = QuantLoader::from_tensors(Arc::clone(&tensors), Plan::uniform(LayerScheme::F32)).observing();
        reranker.with_loader(&observing)?.score_tokens(&tokens)?;
        let input_ranges = Arc::new(observing.input_ranges());
        let model = Model::Reranker { reranker: Box::new(reranker), pairs: tokens, reference };
        Ok(Self { model, tensors, layers, float, input_ranges })
    }

    /// A Llama (GGUF file or float HF folder) scored by perplexity and next-token divergence over the first
    /// `max_tokens` tokens of `text` (at least two; at most the context length are used).
    pub fn llama(path: &Path, text: &str, max_tokens: usize) -> Result<Self> {
        let (generator, tensors) = Generator::open_in_memory(path)?;
        let mut ids = generator.encode(text)?;
        ids.truncate(max_tokens.min(generator.model().config().context_length));
        if ids.len() < 2 {
            bail!("calibration needs at least 2 tokens, got {}", ids.len());
        }
        let model = generator.into_model();
        let vocab = model.config().vocab_size;
        let mut reference = model.forward_all(&ids[..ids.len() - 1], &mut model.new_cache())?;
        reference.chunks_exact_mut(vocab).for_each(log_softmax);
        let names = model.config().linear_layers();
        let layers = layer_shapes(names.iter().map(String::as_str), &tensors)?;
        let quality = Quality::Tokens { perplexity: perplexity(&reference, &ids, vocab), kl: 0.0 };
        let float = Evaluation { quality, linear_bytes: model.linear_bytes() };
        let model = Model::Llama { model: Box::new(model), ids, reference };
        Ok(Self { model, tensors, layers, float, input_ranges: Arc::default() })
    }

    /// The quantizable layers, in model order.
    pub fn layers(&self) -> &[LayerShape] {
        &self.layers
    }

    /// The float weight `[out, in]` of layer `name`.
    pub fn weight(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(&format!("{name}.weight")).with_context(|| format!("no layer {name}"))
    }

    /// The float bias `[out]` of layer `name`, if it has one.
    pub fn bias(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("{name}.bias"))
    }

    /// The float model's own evaluation (cosine 1, or its perplexity with KL 0) and Linear bytes.
    pub fn float(&self) -> Evaluation {
        self.float
    }

    /// What the model does: [`Task::Embedding`] (scored by cosine) or [`Task::Generation`] (by perplexity).
    pub fn task(&self) -> Task {
        match self.model {
            Model::Embedder { .. } => Task::Embedding,
            Model::Reranker { .. } => Task::Reranking,
            Model::Llama { .. } => Task::Generation,
        }
    }

    /// The plan that quantizes layer `name` alone with `scheme` (every other layer in f32).
    pub fn single_layer_plan(name: &str, scheme: LayerScheme) -> Plan {
        let mut plan = Plan::uniform(LayerScheme::F32);
        plan.rules.push(Rule { pattern: name.to_string(), scheme: scheme.to_string() });
        plan
    }

    /// SmoothQuant's factors for layer `name` at strength `alpha`, from its calibration input ranges (BERT).
    pub fn smoothing_factors(&self, name: &str, alpha: f32) -> Result<Vec<f32>> {
        let range = self.input_ranges.get(name).with_context(|| format!("no input statistics for {name}"))?;
        Ok(qlayers::layers::smoothing_factors(range, self.weight(name)?, alpha)?)
    }

    /// Rebuilds the model per `plan` and scores it on the calibration data; a plan's `smooth` takes its factors
    /// from the same data.
    pub fn evaluate(&self, plan: &Plan) -> Result<Evaluation> {
        self.evaluate_with(plan, plan.smooth)
    }

    /// [`Probe::evaluate`], with SmoothQuant at strength `smoothing` on every W8A8 layer when given (encoders only),
    /// whatever the plan's own `smooth`.
    pub fn evaluate_with(&self, plan: &Plan, smoothing: Option<f32>) -> Result<Evaluation> {
        let plan = Plan { smooth: smoothing, ..plan.clone() };
        let mut loader = QuantLoader::from_tensors(Arc::clone(&self.tensors), plan);
        if let Some(alpha) = smoothing {
            if self.task() == Task::Generation {
                bail!("smoothing applies to W8A8 layers, which Llama plans do not use");
            }
            loader = loader.with_smoothing(Arc::clone(&self.input_ranges), alpha);
        }
        match &self.model {
            Model::Embedder { embedder, sequences, reference } => {
                let quantized = embedder.with_loader(&loader)?;
                let agreement = Agreement::between(&quantized.embed_token_ids(sequences)?, reference);
                Ok(Evaluation {
                    quality: Quality::Embeddings {
                        cosine_mean: agreement.cosine_mean,
                        cosine_min: agreement.cosine_min,
                    },
                    linear_bytes: quantized.layers().iter().map(|l| l.bytes).sum(),
                })
            }
            Model::Reranker { reranker, pairs, reference } => {
                let quantized = reranker.with_loader(&loader)?;
                let errors: Vec<f64> = quantized
                    .score_tokens(pairs)?
                    .iter()
                    .zip(reference)
                    .map(|(a, b)| f64::from((a - b).abs()))
                    .collect();
                let mean_error = errors.iter().sum::<f64>() / errors.len() as f64;
                let max_error = errors.iter().copied().fold(0.0, f64::max);
                Ok(Evaluation {
                    quality: Quality::Scores { mean_error, max_error },
                    linear_bytes: quantized.layers().iter().map(|l| l.bytes).sum(),
                })
            }
            Model::Llama { model, ids, reference } => {
                let quantized = LlamaModel::load(model.config().clone(), &loader)?;
                let vocab = model.config().vocab_size;
                let mut logits = quantized.forward_all(&ids[..ids.len() - 1], &mut quantized.new_cache())?;
                logits.chunks_exact_mut(vocab).for_each(log_softmax);
                let positions = ids.len() - 1;
                let kl = reference
                    .chunks_exact(vocab)
                    .zip(logits.chunks_exact(vocab))
                    .map(|(p, q)| {
                        p.iter().zip(q).map(|(&lp, &lq)| f64::from(lp.exp()) * f64::from(lp - lq)).sum::<f64>()
                    })
                    .sum::<f64>()
                    / positions as f64;
                Ok(Evaluation {
                    quality: Quality::Tokens { perplexity: perplexity(&logits, ids, vocab), kl },
                    linear_bytes: quantized.linear_bytes(),
                })
            }
        }
    }
}

/// Perplexity of `ids[1..]` under per-position log-probabilities `log_probs` (`[ids.len() - 1, vocab]`).
fn perplexity(log_probs: &[f32], ids: &[u32], vocab: usize) -> f64 {
    let nll: f64 =
        log_probs.chunks_exact(vocab).zip(&ids[1..]).map(|(row, &next)| -f64::from(row[next as usize])).sum();
    (nll / (ids.len() - 1) as f64).exp()
}

/// The shapes of the named layers' weights.
fn layer_shapes<'a>(
    names: impl Iterator<Item = &'a str>,
    tensors: &HashMap<String, Tensor>,
) -> Result<Vec<LayerShape>> {
    names
        .map(|name| {
            let weight = tensors.get(&format!("{name}.weight")).with_context(|| format!("no weight for {name}"))?;
            let &[out_features, in_features] = weight.dims() else { bail!("{name}.weight is not 2-D") };
            Ok(LayerShape { name: name.to_string(), out_features, in_features })
        })
        .collect()
}
