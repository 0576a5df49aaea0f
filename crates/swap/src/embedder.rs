//! The sentence-transformers pipeline around an encoder of any registered architecture: tokenize, encode, pool,
//! normalize.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use qlayers::LayerScheme;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::arch::{ModelKind, Task};
use crate::encoder_folder::EncoderFolder;
use crate::loader::{LayerReport, Placement, QuantLoader};
use crate::models::TextEncoder;
use crate::plan::Plan;

/// How token embeddings become one sentence embedding (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the attended tokens.
    Mean,
    /// The first token (`[CLS]`).
    Cls,
    /// Element-wise maximum over the attended tokens.
    Max,
    /// The last token (a decoder used as an embedder, whose last token has seen all the others).
    LastToken,
}

/// The sentence-transformers settings of a model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether embeddings are L2-normalised (a `Normalize` module in `modules.json`).
    pub normalize: bool,
    /// Longest input in tokens; longer texts are truncated.
    pub max_seq_length: usize,
    /// Named prompts put before a text (`config_sentence_transformers.json`: `"query": "Instruct: ...\nQuery:"`).
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when none is named.
    pub default_prompt_name: Option<String>,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct SentenceTransformersFile {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

#[derive(Deserialize)]
struct SentenceBertFile {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

impl PipelineConfig {
    /// Reads `modules.json`, the pooling config and `sentence_bert_config.json` of `dir`; a folder without them is a
    /// plain encoder: mean pooling, no normalisation, the model's longest sequence as length.
    pub fn read(dir: &Path, model_positions: usize) -> Result<Self> {
        let read = |name: &str| -> Result<Option<String>> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            std::fs::read_to_string(&path).map(Some).with_context(|| format!("cannot read {}", path.display()))
        };
        let modules: Vec<ModuleEntry> = match read("modules.json")? {
            Some(text) => serde_json::from_str(&text).context("modules.json is not a module list")?,
            None => Vec::new(),
        };
        let normalize = modules.iter().any(|m| m.kind.ends_with("Normalize"));
        let pooling_dir = modules.iter().find(|m| m.kind.ends_with("Pooling")).map_or("1_Pooling", |m| m.path.as_str());
        let pooling = match read(&format!("{pooling_dir}/config.json"))? {
            None => Pooling::Mean,
            Some(text) => {
                let p: PoolingFile = serde_json::from_str(&text).context("bad pooling config.json")?;
                let modes = [
                    (p.pooling_mode_mean_tokens, Pooling::Mean),
                    (p.pooling_mode_cls_token, Pooling::Cls),
                    (p.pooling_mode_max_tokens, Pooling::Max),
                    (p.pooling_mode_lasttoken, Pooling::LastToken),
                ];
                match modes.iter().filter(|(on, _)| *on).collect::<Vec<_>>()[..] {
                    [(_, pooling)] => *pooling,
                    _ => bail!("the pooling config must select exactly one of mean, cls, max and lasttoken"),
                }
            }
        };
        let max_seq_length = match read("sentence_bert_config.json")? {
            Some(text) => serde_json::from_str::<SentenceBertFile>(&text)
                .context("bad sentence_bert_config.json")?
                .max_seq_length
                .unwrap_or(model_positions),
            None => model_positions,
        }
        .min(model_positions);
        let (prompts, default_prompt_name) = match read("config_sentence_transformers.json")? {
            Some(text) => {
                let file: SentenceTransformersFile =
                    serde_json::from_str(&text).context("bad config_sentence_transformers.json")?;
                (file.prompts, file.default_prompt_name)
            }
            None => Default::default(),
        };
        if let Some(name) = default_prompt_name.as_ref().filter(|n| !prompts.contains_key(*n)) {
            bail!("config_sentence_transformers.json: default_prompt_name {name:?} is not one of its prompts");
        }
        Ok(Self { pooling, normalize, max_seq_length, prompts, default_prompt_name })
    }
}

/// Turns texts into sentence embeddings with a (quantized) encoder.
pub struct Embedder {
    tokenizer: Tokenizer,
    kind: ModelKind,
    /// The `config.json` text, from which [`Embedder::with_loader`] rebuilds the encoder.
    config: String,
    model: Box<dyn TextEncoder>,
    pipeline: PipelineConfig,
    layers: Vec<LayerReport>,
    dir: PathBuf,
}

impl Embedder {
    /// Loads a float model folder in Hugging Face layout (`config.json`, `model.safetensors`, `tokenizer.json`, and
    /// the sentence-transformers files when present), quantizing its layers per `plan`.
    pub fn load(dir: &Path, plan: Plan) -> Result<Self> {
        Self::open(dir, Some(plan))
    }

    /// Loads a model folder: a float model is quantized per `plan` (the default BERT int8 plan when `None`); a
    /// pre-quantized checkpoint ([`crate::checkpoint`]) or an optimum-quanto one ([`crate::quanto`]) runs as saved,
    /// and a `plan` other than the one it was saved with is an error.
    pub fn open(dir: &Path, plan: Option<Plan>) -> Result<Self> {
        Self::open_on(dir, plan, &Placement::Kernels)
    }

    /// [`Embedder::open`] with the layers placed as `placement` says: on candle's kernels on a GPU device, the
    /// BERT-family encoders (BERT, RoBERTa, DistilBERT, MPNet) run there whole; other architectures run their
    /// Linear layers there and the rest on the CPU.
    pub fn open_on(dir: &Path, plan: Option<Plan>, placement: &Placement) -> Result<Self> {
        Ok(Self::open_with(dir, plan, false, placement)?.0)
    }

    /// Loads a float model folder in f32 with every tensor kept in memory, so that [`Embedder::with_loader`] over
    /// [`QuantLoader::from_tensors`] can rebuild it under other plans without reading the file again. A quantized
    /// checkpoint is an error.
    pub fn open_in_memory(dir: &Path) -> Result<(Self, Arc<HashMap<String, Tensor>>)> {
        let (embedder, loader) =
            Self::open_with(dir, Some(Plan::uniform(LayerScheme::F32)), true, &Placement::Kernels)?;
        let tensors = loader.take_float_tensors().with_context(|| format!("{} is not a float model", dir.display()))?;
        Ok((embedder, tensors))
    }

    /// This pipeline and tokenizer over the model `loader` builds (for example one that observes its inputs or
    /// smooths its layers).
    pub fn with_loader(&self, loader: &QuantLoader) -> Result<Self> {
        let (model, _) = self.kind.build(&self.config, loader)?;
        Ok(Self {
            tokenizer: self.tokenizer.clone(),
            kind: self.kind,
            config: self.config.clone(),
            model,
            pipeline: self.pipeline.clone(),
            layers: loader.report(),
            dir: self.dir.clone(),
        })
    }

    fn open_with(dir: &Path, plan: Option<Plan>, record: bool, placement: &Placement) -> Result<(Self, QuantLoader)> {
        let EncoderFolder { kind, config, model, mut tokenizer, loader, .. } =
            EncoderFolder::open(dir, plan, record, Task::Embedding, placement)?;
        let pipeline = PipelineConfig::read(dir, model.max_tokens())?;
        crate::encoder_folder::truncate_at(&mut tokenizer, pipeline.max_seq_length)?;
        let layers = loader.report();
        let embedder = Self { tokenizer, kind, config, model, pipeline, layers, dir: dir.to_path_buf() };
        Ok((embedder, loader))
    }

    /// The sentence-transformers settings in use.
    pub fn pipeline(&self) -> &PipelineConfig {
        &self.pipeline
    }

    /// Width of the embeddings.
    pub fn dimensions(&self) -> usize {
        self.model.hidden_size()
    }

    /// The architecture and task of the model.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// Token ids the model knows (`0..vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    /// What each quantizable layer became.
    pub fn layers(&self) -> &[LayerReport] {
        &self.layers
    }

    /// The folder the model came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the model's parameters in memory (quantized layers in their kernel layout, embeddings in f32).
    pub fn parameter_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bytes).sum::<usize>() + self.model.embedding_bytes()
    }

    /// The number of tokens of each text after truncation.
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>> {
        Ok(self.tokenize(texts)?.iter().map(Vec::len).collect())
    }

    /// The token ids of each text, special tokens included, truncated to `max_seq_length`, ready for
    /// [`Embedder::embed_token_ids`] (with the default prompt before it, if the pipeline names one). An empty (or
    /// whitespace-only) text is an error.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        self.encode_with_prompt(texts, None)
    }

    /// [`Embedder::encode`] with the prompt `prompt_name` (one of the pipeline's `prompts`) before each text, as
    /// sentence-transformers' `encode(prompt_name=...)` does; `None` takes the default prompt, if any.
    pub fn encode_with_prompt(&self, texts: &[&str], prompt_name: Option<&str>) -> Result<Vec<Vec<u32>>> {
        if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
            bail!("text #{i} is empty: there is nothing to embed");
        }
        match self.prompt(prompt_name)? {
            "" => self.tokenize(texts),
            prompt => self.tokenize(&texts.iter().map(|t| format!("{prompt}{t}")).collect::<Vec<_>>()),
        }
    }

    /// The text of prompt `name` (`None`: the default prompt, or none); an unknown name is an error listing the
    /// pipeline's prompts.
    pub fn prompt(&self, name: Option<&str>) -> Result<&str> {
        let prompts = &self.pipeline.prompts;
        match name.or(self.pipeline.default_prompt_name.as_deref()) {
            None => Ok(""),
            Some(name) => prompts.get(name).map(String::as_str).with_context(|| {
                let known: Vec<&str> = prompts.keys().map(String::as_str).collect();
                match known.is_empty() {
                    true => format!("prompt {name:?}: this model has no prompts"),
                    false => format!("prompt {name:?} is not one of this model's prompts: {}", known.join(", ")),
                }
            }),
        }
    }

    /// Embeds `texts` as one batch with the prompt `prompt_name` before each (see [`Embedder::encode_with_prompt`]).
    pub fn embed_with_prompt(&self, texts: &[&str], prompt_name: Option<&str>) -> Result<Vec<Vec<f32>>> {
        self.embed_token_ids(&self.encode_with_prompt(texts, prompt_name)?)
    }

    /// Embeds `texts` as one batch (sequences packed without padding); texts longer than `max_seq_length` tokens are
    /// truncated. An empty (or whitespace-only) text is an error.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.embed_token_ids(&self.encode(texts)?)
    }

    /// Embeds sequences already tokenized (special tokens included), as one batch. Each must hold 1 to
    /// `max_seq_length` ids below the vocabulary size.
    pub fn embed_token_ids(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let mut rows = self.pool_token_ids(sequences)?;
        if self.pipeline.normalize {
            rows.iter_mut().for_each(|row| normalize(row));
        }
        Ok(rows)
    }

    /// [`Embedder::embed_token_ids`] without the pipeline's normalisation: the pooled vectors. [`normalize`] turns
    /// each into exactly what `embed_token_ids` returns when the pipeline normalises.
    pub fn pool_token_ids(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let max = self.pipeline.max_seq_length;
        if let Some(i) = sequences.iter().position(|s| s.len() > max) {
            bail!("sequence #{i} has {} tokens; the model's max_seq_length is {max}", sequences[i].len());
        }
        self.pool_sequences(&sequences.iter().map(Vec::as_slice).collect::<Vec<_>>())
    }

    /// The encoder's last hidden states of each sequence (tokenized, special tokens included): `len x hidden` values
    /// per sequence, token after token, before pooling.
    pub fn token_embeddings(&self, sequences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let refs: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        let hidden = self.model.forward_packed(&refs, None)?;
        let width = self.dimensions();
        let mut rest = hidden.as_slice();
        Ok(sequences
            .iter()
            .map(|ids| {
                let (rows, tail) = rest.split_at(ids.len() * width);
                rest = tail;
                rows.to_vec()
            })
            .collect())
    }

    /// Tokenizes with the pipeline's truncation.
    fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>> {
        let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self.tokenizer.encode_batch(texts, true).map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Runs the model on whole sequences (no padding), then pools each.
    fn pool_sequences(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        let hidden = self.model.forward_packed(sequences, None)?;
        let width = self.dimensions();
        let mut rows = hidden.as_slice();
        Ok(sequences
            .iter()
            .map(|ids| {
                let (tokens, rest) = rows.split_at(ids.len() * width);
                rows = rest;
                pool(tokens, width, self.pipeline.pooling)
            })
            .collect())
    }

    /// The tokenizer (with the pipeline's truncation set; no padding).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

/// Pools the rows of one sequence's real tokens (`tokens` is `len x width`), summing in token order.
fn pool(tokens: &[f32], width: usize, pooling: Pooling) -> Vec<f32> {
    let mut rows = tokens.chunks_exact(width);
    match pooling {
        Pooling::Cls => rows.next().map_or_else(|| vec![0.0; width], <[f32]>::to_vec),
        Pooling::LastToken => rows.next_back().map_or_else(|| vec![0.0; width], <[f32]>::to_vec),
        Pooling::Mean => {
            let mut sum = vec![0f32; width];
            let count = tokens.len() / width;
            for row in rows {
                sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
            sum.iter_mut().for_each(|s| *s /= count.max(1) as f32);
            sum
        }
        Pooling::Max => {
            let mut max = vec![f32::NEG_INFINITY; width];
            for row in rows {
                max.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(*v));
            }
            max
        }
    }
}

/// Scales `v` to unit L2 norm (left as is when it is all zeros), as the sentence-transformers `Normalize` module does.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}
