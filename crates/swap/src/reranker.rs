//! Cross-encoder reranking: each (query, document) pair is tokenized as one sequence with its segments, encoded,
//! and scored by the checkpoint's `*ForSequenceClassification` head from the first token.

use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use qlayers::LayerScheme;
use tokenizers::Tokenizer;

use crate::arch::{ModelKind, Task};
use crate::encoder_folder::EncoderFolder;
use crate::loader::{LayerReport, Placement, QuantLoader};
use crate::models::heads::SequenceClassifier;
use crate::models::TextEncoder;
use crate::plan::Plan;

/// One tokenized (query, document) pair: token ids and each token's segment (0: query, 1: document, for models
/// whose tokenizer gives segments; all 0 otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairTokens {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// Token types, one per id (empty where a model ignores them: an embedder's single texts).
    pub types: Vec<u32>,
    /// Whether the tokenizer cut the pair to the model's longest sequence.
    pub truncated: bool,
}

/// Scores documents against a query with a (quantized) cross-encoder.
pub struct Reranker {
    tokenizer: Tokenizer,
    kind: ModelKind,
    /// The `config.json` text, from which [`Reranker::with_loader`] rebuilds the model.
    config: String,
    model: Box<dyn TextEncoder>,
    head: SequenceClassifier,
    /// Whether the model sees token types (else every token is type 0, as transformers feeds it).
    token_types: bool,
    layers: Vec<LayerReport>,
    dir: PathBuf,
}

impl Reranker {
    /// Loads a reranker folder (`config.json` with a `*ForSequenceClassification` architecture): a float model is
    /// quantized per `plan` (when `None`, the default int8 plan, its head in f32); a pre-quantized checkpoint runs
    /// as saved.
    pub fn open(dir: &Path, plan: Option<Plan>) -> Result<Self> {
        Self::open_on(dir, plan, &Placement::Kernels)
    }

    /// [`Reranker::open`] with the layers placed as `placement` says (see [`crate::Embedder::open_on`]).
    pub fn open_on(dir: &Path, plan: Option<Plan>, placement: &Placement) -> Result<Self> {
        Ok(Self::open_with(dir, plan, false, placement)?.0)
    }

    /// Loads a float reranker folder in f32 with every tensor kept in memory, so that [`Reranker::with_loader`]
    /// over [`QuantLoader::from_tensors`] can rebuild it under other plans without reading the file again.
    pub fn open_in_memory(dir: &Path) -> Result<(Self, Arc<HashMap<String, Tensor>>)> {
        let (reranker, loader) =
            Self::open_with(dir, Some(Plan::uniform(LayerScheme::F32)), true, &Placement::Kernels)?;
        let tensors = loader.take_float_tensors().with_context(|| format!("{} is not a float model", dir.display()))?;
        Ok((reranker, tensors))
    }

    /// This tokenizer over the model and head `loader` builds.
    pub fn with_loader(&self, loader: &QuantLoader) -> Result<Self> {
        let (model, head) = self.kind.build(&self.config, loader)?;
        let head = head.context("a reranker has a head")?;
        Ok(Self {
            tokenizer: self.tokenizer.clone(),
            kind: self.kind,
            config: self.config.clone(),
            model,
            head,
            token_types: self.token_types,
            layers: loader.report(),
            dir: self.dir.clone(),
        })
    }

    fn open_with(dir: &Path, plan: Option<Plan>, record: bool, placement: &Placement) -> Result<(Self, QuantLoader)> {
        let EncoderFolder { kind, config, model, head, tokenizer, loader } =
            EncoderFolder::open(dir, plan, record, Task::Reranking, placement)?;
        let head = head.context("a reranker has a head")?;
        let token_types = crate::encoder_folder::uses_token_types(dir)?;
        let layers = loader.report();
        let reranker = Self { tokenizer, kind, config, model, head, token_types, layers, dir: dir.to_path_buf() };
        Ok((reranker, loader))
    }

    /// The architecture of the model.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// What each quantizable layer became.
    pub fn layers(&self) -> &[LayerReport] {
        &self.layers
    }

    /// The folder the model came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the model's parameters in memory (quantized layers in their kernel layout, the head included).
    pub fn parameter_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bytes).sum::<usize>() + self.model.embedding_bytes()
    }

    /// The longest pair the model takes, in tokens (longer pairs are truncated, the longer text first).
    pub fn max_tokens(&self) -> usize {
        self.model.max_tokens()
    }

    /// Token ids the model knows.
    pub fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    /// Tokenizes `(query, document)` pairs as the model was trained on them. An empty (or whitespace-only) query
    /// or document is an error.
    pub fn encode(&self, query: &str, documents: &[&str]) -> Result<Vec<PairTokens>> {
        if query.trim().is_empty() {
            bail!("the query is empty: there is nothing to rank against");
        }
        if let Some(i) = documents.iter().position(|d| d.trim().is_empty()) {
            bail!("document #{i} is empty: there is nothing to score");
        }
        let pairs: Vec<(String, String)> = documents.iter().map(|d| (query.to_string(), d.to_string())).collect();
        let encodings = self.tokenizer.encode_batch(pairs, true).map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        Ok(encodings
            .into_iter()
            .map(|e| {
                let types = if self.token_types { e.get_type_ids().to_vec() } else { vec![0; e.get_ids().len()] };
                PairTokens { ids: e.get_ids().to_vec(), types, truncated: !e.get_overflowing().is_empty() }
            })
            .collect())
    }

    /// The raw score (the head's logit) of each document for `query`, in document order; higher is more relevant.
    pub fn score(&self, query: &str, documents: &[&str]) -> Result<Vec<f32>> {
        self.score_tokens(&self.encode(query, documents)?)
    }

    /// Scores pairs already tokenized, as one batch.
    pub fn score_tokens(&self, pairs: &[PairTokens]) -> Result<Vec<f32>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&[u32]> = pairs.iter().map(|p| p.ids.as_slice()).collect();
        let types: Vec<&[u32]> = pairs.iter().map(|p| p.types.as_slice()).collect();
        let hidden = self.model.forward_packed(&ids, Some(&types))?;
        let h = self.model.hidden_size();
        let mut firsts = Vec::with_capacity(pairs.len() * h);
        let mut row = 0;
        for pair in pairs {
            firsts.extend_from_slice(&hidden[row * h..][..h]);
            row += pair.ids.len();
        }
        self.head.scores(&firsts, pairs.len())
    }
}

/// `(index, score)` of every score, the highest first; equal scores keep their order.
pub fn ranked(scores: &[f32]) -> Vec<(usize, f32)> {
    let mut order: Vec<(usize, f32)> = scores.iter().copied().enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order
}

/// The logistic function, which turns a raw score into a relevance in (0, 1).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
