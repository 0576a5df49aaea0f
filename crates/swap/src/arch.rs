//! The one registry of architectures: which `config.json` (`model_type`, `architectures`) each model file reads,
//! what task the checkpoint does, and how its encoder and task head are built. The embedder, the reranker,
//! checkpoint export, the analysis and the runner all dispatch through it; adding an encoder family is its model
//! file plus one [`ARCHITECTURES`] line.

use anyhow::{bail, Context, Result};

use crate::loader::QuantLoader;
use crate::models::bert::BertConfig;
use crate::models::distilbert::DistilBertConfig;
use crate::models::heads::{ClassifierNames, SequenceClassifier};
use crate::models::llama::LlamaConfig;
use crate::models::modernbert::ModernBertConfig;
use crate::models::mpnet::MpnetConfig;
use crate::models::{self, TextEncoder};
use crate::plan::Plan;

/// What a checkpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Sentence embeddings (an encoder, pooled).
    Embedding,
    /// Cross-encoder scores of (query, document) pairs (`*ForSequenceClassification`).
    Reranking,
    /// Text generation (`*ForCausalLM`, or a GGUF file).
    Generation,
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Embedding => "embedding",
            Self::Reranking => "reranking",
            Self::Generation => "generation",
        })
    }
}

/// Builds an architecture's encoder from its `config.json` text, reading weights through the loader.
type EncoderBuilder = fn(&str, &QuantLoader) -> Result<Box<dyn TextEncoder>>;

/// One architecture family.
pub struct Architecture {
    /// Its name in messages and the README.
    pub name: &'static str,
    /// The `model_type`s of `config.json` it reads.
    pub model_types: &'static [&'static str],
    /// Builds its encoder (for a decoder, its body without the head; [`crate::Generator`] loads it whole).
    encoder: EncoderBuilder,
    /// The weights of its `*ForSequenceClassification` head (`None`: no reranker head).
    classifier: Option<ClassifierNames>,
    /// The number of Linear layers of its encoder, from `config.json` (for progress reports).
    linear_layers: fn(&str) -> Result<usize>,
    /// The int8 plan a float checkpoint runs when none is given.
    int8_plan: fn() -> Plan,
    /// A decoder: it generates, unless its class is a bare `*Model`, which embeds (Qwen3-Embedding).
    decoder: bool,
    /// Globs of the tensors its checkpoints may hold that the model does not read (poolers, pre-training heads,
    /// saved buffers); any other tensor left unread is an error ([`QuantLoader::check_all_read`]).
    unused: &'static [&'static str],
}

/// Every architecture the engine runs.
pub const ARCHITECTURES: &[Architecture] = &[
    Architecture {
        name: "BERT",
        model_types: &["bert"],
        encoder: models::bert::encoder,
        classifier: Some(ClassifierNames::BERT),
        linear_layers: |c| Ok(BertConfig::from_json(c)?.linear_layers()),
        int8_plan: Plan::bert_int8,
        decoder: false,
        // The pooler (read as a reranker's dense layer), BertForMaskedLM's and BertForPreTraining's heads.
        unused: &["*pooler.*", "*embeddings.position_ids", "cls.*"],
    },
    Architecture {
        name: "RoBERTa",
        model_types: &["roberta", "xlm-roberta", "camembert"],
        encoder: models::bert::encoder,
        classifier: Some(ClassifierNames::ROBERTA),
        linear_layers: |c| Ok(BertConfig::from_json(c)?.linear_layers()),
        int8_plan: Plan::bert_int8,
        decoder: false,
        unused: &["*pooler.*", "*embeddings.position_ids", "lm_head.*"],
    },
    Architecture {
        name: "DistilBERT",
        model_types: &["distilbert"],
        encoder: models::distilbert::encoder,
        classifier: None,
        linear_layers: |c| Ok(6 * DistilBertConfig::from_json(c)?.n_layers),
        int8_plan: Plan::bert_int8,
        decoder: false,
        // DistilBertForMaskedLM's head.
        unused: &["*embeddings.position_ids", "vocab_transform.*", "vocab_layer_norm.*", "vocab_projector.*"],
    },
    Architecture {
        name: "MPNet",
        model_types: &["mpnet"],
        encoder: models::mpnet::encoder,
        classifier: None,
        linear_layers: |c| Ok(MpnetConfig::from_json(c)?.linear_layers()),
        int8_plan: crate::models::mpnet::int8_plan,
        decoder: false,
        unused: &["*pooler.*", "*embeddings.position_ids", "lm_head.*"],
    },
    Architecture {
        name: "ModernBERT",
        model_types: &["modernbert"],
        encoder: models::modernbert::encoder,
        classifier: None,
        linear_layers: |c| Ok(ModernBertConfig::from_json(c)?.linear_layers()),
        int8_plan: Plan::bert_int8,
        decoder: false,
        // ModernBertForMaskedLM's head.
        unused: &["head.*", "decoder.*"],
    },
    Architecture {
        name: "Llama",
        model_types: &crate::models::llama::MODEL_TYPES,
        encoder: models::llama::encoder,
        classifier: None,
        linear_layers: |c| Ok(7 * LlamaConfig::from_hf_json(c)?.num_layers),
        int8_plan: Plan::llama_int8,
        decoder: true,
        unused: crate::models::llama::UNUSED_TENSORS,
    },
];

/// A `config.json` matched to its architecture and task.
#[derive(Clone, Copy)]
pub struct ModelKind {
    /// The architecture that reads it.
    pub arch: &'static Architecture,
    /// What the checkpoint does.
    pub task: Task,
}

impl std::fmt::Debug for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.arch.name, self.task)
    }
}

impl ModelKind {
    /// The architecture and task of a `config.json`: `model_type` picks the architecture (`bert` when absent), the
    /// class in `architectures` the task: for a decoder, a bare `*Model` embeds and anything else generates; for an
    /// encoder, `*ForSequenceClassification` reranks and anything else (the bare model, or the `*ForMaskedLM` many
    /// sentence-transformers checkpoints name) embeds, from the encoder's weights. An unknown `model_type` is an
    /// error naming what the engine supports.
    pub fn of_config(config: &serde_json::Value) -> Result<Self> {
        let model_type = config.get("model_type").and_then(|t| t.as_str()).unwrap_or("bert");
        let Some(arch) = ARCHITECTURES.iter().find(|a| a.model_types.contains(&model_type)) else {
            bail!(
                "config.json says model_type {model_type:?}, which this engine does not run; it runs {}",
                supported()
            );
        };
        let class = config.get("architectures").and_then(|a| a.get(0)).and_then(|c| c.as_str()).unwrap_or_default();
        let task = if arch.decoder {
            // `Qwen3Model`: the body alone, an embedder; `*ForCausalLM` (or no class at all): a generator.
            match class.ends_with("Model") {
                true => Task::Embedding,
                false => Task::Generation,
            }
        } else if class.ends_with("ForSequenceClassification") {
            if arch.classifier.is_none() {
                bail!("{class}: {} has no sequence-classification head here; rerankers are BERT or RoBERTa", arch.name);
            }
            Task::Reranking
        } else {
            // A bare model, or a pre-training head (`*ForMaskedLM`) that sentence-transformers ignores too.
            Task::Embedding
        };
        Ok(Self { arch, task })
    }

    /// Reads and matches the `config.json` of the folder `dir`.
    pub fn of_folder(dir: &std::path::Path) -> Result<(Self, String)> {
        let path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("{} has no readable config.json", dir.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text).context("config.json is not JSON")?;
        Ok((Self::of_config(&json)?, text))
    }

    /// The plan a float checkpoint of this kind runs when none is given: its architecture's int8 plan
    /// ([`Plan::bert_int8`] for most encoders, [`Plan::llama_int8`] for generators), with a reranker's head (a
    /// dense layer and the classifier, a few thousand weights that set the score) left in f32.
    pub fn default_plan(&self) -> Plan {
        let mut plan = (self.arch.int8_plan)();
        if let (Task::Reranking, Some(names)) = (self.task, self.arch.classifier) {
            plan.exclude.extend(names.layers().map(String::from));
        }
        plan
    }

    /// Builds the encoder of `config` (this kind's `config.json`) from `loader`.
    pub fn encoder(&self, config: &str, loader: &QuantLoader) -> Result<Box<dyn TextEncoder>> {
        (self.arch.encoder)(config, loader).context("the weights do not match config.json")
    }

    /// Builds the whole model of `config` from `loader`: the encoder and, for a reranker, its head; then checks
    /// that the model read every tensor of the checkpoint but those its architecture knows it does not need.
    pub fn build(
        &self,
        config: &str,
        loader: &QuantLoader,
    ) -> Result<(Box<dyn TextEncoder>, Option<SequenceClassifier>)> {
        let encoder = self.encoder(config, loader)?;
        let head = match self.task {
            Task::Reranking => Some(self.classifier(encoder.hidden_size(), loader)?),
            Task::Embedding | Task::Generation => None,
        };
        loader.check_all_read(self.arch.unused).context("the weights do not match config.json")?;
        Ok((encoder, head))
    }

    /// Builds the reranker head of an encoder of width `hidden` from `loader`.
    pub fn classifier(&self, hidden: usize, loader: &QuantLoader) -> Result<SequenceClassifier> {
        let names = self.arch.classifier.filter(|_| self.task == Task::Reranking);
        let names = names.with_context(|| format!("this {} checkpoint has no reranker head", self.arch.name))?;
        SequenceClassifier::load(names, hidden, loader)
    }

    /// The number of Linear layers a plan quantizes (the encoder's, plus a reranker's head).
    pub fn linear_layers(&self, config: &str) -> Result<usize> {
        let head = if self.task == Task::Reranking { 2 } else { 0 };
        Ok((self.arch.linear_layers)(config)? + head)
    }
}

/// The supported `model_type`s, for messages.
pub fn supported() -> String {
    ARCHITECTURES.iter().flat_map(|a| a.model_types.iter().copied()).collect::<Vec<_>>().join(", ")
}
