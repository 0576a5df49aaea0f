//! Opening an encoder checkpoint folder (float, pre-quantized or optimum-quanto) for one task: its architecture
//! from the registry, its weights through a [`QuantLoader`], its tokenizer. The embedder and the reranker start here.

use std::path::Path;

use anyhow::{bail, Context, Result};
use qlayers::LayerScheme;
use tokenizers::{Tokenizer, TruncationParams};

use crate::analysis::DEFAULT_CALIBRATION;
use crate::arch::{ModelKind, Task};
use crate::loader::{Placement, QuantLoader};
use crate::models::heads::SequenceClassifier;
use crate::models::TextEncoder;
use crate::plan::Plan;

/// An encoder read from a folder.
pub(crate) struct EncoderFolder {
    /// Its architecture and task.
    pub kind: ModelKind,
    /// The `config.json` text.
    pub config: String,
    /// The encoder, quantized per the plan.
    pub model: Box<dyn TextEncoder>,
    /// A reranker's head.
    pub head: Option<SequenceClassifier>,
    /// `tokenizer.json`, with no padding (sequences run unpadded) and truncation at the model's longest sequence.
    pub tokenizer: Tokenizer,
    /// The loader the encoder was read through (a task head is read through it too).
    pub loader: QuantLoader,
}

impl EncoderFolder {
    /// Opens `dir` for `task` (a checkpoint of another task is an error that says which command runs it): a float
    /// model is quantized per `plan` (the kind's default plan when `None`); `record` keeps every tensor read; the
    /// layers run as `placement` says.
    pub(crate) fn open(
        dir: &Path,
        plan: Option<Plan>,
        record: bool,
        task: Task,
        placement: &Placement,
    ) -> Result<Self> {
        let (kind, config) = ModelKind::of_folder(dir)?;
        if kind.task != task {
            let command = |task: Task| match task {
                Task::Embedding => "embed",
                Task::Reranking => "rerank",
                Task::Generation => "generate",
            };
            bail!(
                "{} is a {} {} model: run it with `{}`, not `{}`",
                dir.display(),
                kind.arch.name,
                kind.task,
                command(kind.task),
                command(task)
            );
        }
        let config_json: serde_json::Value = serde_json::from_str(&config)?;
        let mut loader = QuantLoader::open_folder(dir, &config_json, plan, || kind.default_plan())?
            .with_placement(placement.clone());
        if record {
            loader = loader.recording();
        }
        let mut tokenizer = read_tokenizer(dir)?;
        let loader = calibrated(dir, &kind, &config, &config_json, &tokenizer, loader)?;
        let (model, head) = kind.build(&config, &loader)?;
        truncate_at(&mut tokenizer, model.max_tokens())?;
        Ok(Self { kind, config, model, head, tokenizer, loader })
    }
}

/// `tokenizer.json` of `dir`, with no padding (sequences run unpadded).
pub(crate) fn read_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.join("tokenizer.json").display()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// `loader`, ready to build the float encoder of `dir` (of `kind`, with `config.json` text `config`, parsed as
/// `config_json`): when its plan asks for SmoothQuant or static W8A8, the float model first runs the built-in
/// calibration sentences ([`crate::analysis::DEFAULT_CALIBRATION`], tokenized by `tokenizer`) and the largest
/// input each Linear layer saw goes to [`QuantLoader::with_smoothing`] (or [`QuantLoader::with_calibration`]
/// when the plan does not smooth).
pub(crate) fn calibrated(
    dir: &Path,
    kind: &ModelKind,
    config: &str,
    config_json: &serde_json::Value,
    tokenizer: &Tokenizer,
    loader: QuantLoader,
) -> Result<QuantLoader> {
    if !loader.planned_calibration() {
        return Ok(loader);
    }
    let float = || Plan::uniform(LayerScheme::F32);
    let observing = QuantLoader::open_folder(dir, config_json, Some(float()), float)?.observing();
    let encoder = kind.encoder(config, &observing)?;
    let texts: Vec<&str> = DEFAULT_CALIBRATION.lines().filter(|l| !l.trim().is_empty()).collect();
    let encodings = tokenizer.encode_batch(texts, true).map_err(|e| anyhow::anyhow!("calibration text: {e}"))?;
    let max = encoder.max_tokens();
    let ids: Vec<&[u32]> = encodings.iter().map(|e| &e.get_ids()[..e.get_ids().len().min(max)]).collect();
    encoder.forward_packed(&ids, None).context("running the calibration sentences")?;
    let ranges = std::sync::Arc::new(observing.input_ranges());
    Ok(match loader.planned_smoothing() {
        Some(alpha) => loader.with_smoothing(ranges, alpha),
        None => loader.with_calibration(ranges),
    })
}

/// Makes `tokenizer` truncate inputs (a pair: the longer part first) to `max_length` tokens, special tokens included.
pub(crate) fn truncate_at(tokenizer: &mut Tokenizer, max_length: usize) -> Result<()> {
    tokenizer
        .with_truncation(Some(TruncationParams { max_length, ..Default::default() }))
        .map_err(|e| anyhow::anyhow!("tokenizer truncation: {e}"))?;
    Ok(())
}

/// Tokenizer classes whose inputs include `token_type_ids` in transformers (`model_input_names`); the others,
/// and `tokenizers`-backed configs without a class, feed the model input ids alone (every token type 0).
const CLASSES_WITH_TOKEN_TYPES: [&str; 4] =
    ["BertTokenizer", "BertTokenizerFast", "ElectraTokenizer", "ElectraTokenizerFast"];

/// Whether the model was given token types with its input ids, as transformers decides from `tokenizer_config.json`
/// (its `model_input_names`, else its `tokenizer_class`): a cross-encoder then sees its document as segment 1.
pub(crate) fn uses_token_types(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(false);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text).context("tokenizer_config.json is not JSON")?;
    if let Some(names) = config.get("model_input_names").and_then(|n| n.as_array()) {
        return Ok(names.iter().any(|n| n == "token_type_ids"));
    }
    let class = config.get("tokenizer_class").and_then(|c| c.as_str()).unwrap_or_default();
    Ok(CLASSES_WITH_TOKEN_TYPES.contains(&class))
}
