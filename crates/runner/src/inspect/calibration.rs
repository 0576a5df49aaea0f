//! Which model is probed and on what text.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use swap::analysis::Probe;
use swap::Task;

use crate::model_args::{apply_threads, resolve, DEFAULT_MODEL};

/// The built-in calibration text: 48 short sentences on varied topics, one per line.
const DEFAULT_CALIBRATION: &str = include_str!("calibration.txt");

/// The weight-only candidates of both families: int4 and int2 in groups of 32, 64 and 128, symmetric and
/// asymmetric, and the 4-bit codebooks NF4 and k-means in groups of 64.
const WEIGHT_ONLY_SCHEMES: &[&str] = &[
    "int4-g32",
    "int4-g64",
    "int4-g128",
    "int4-g32-asym",
    "int4-g64-asym",
    "int4-g128-asym",
    "int2-g32",
    "int2-g64",
    "int2-g128",
    "int2-g32-asym",
    "int2-g64-asym",
    "int2-g128-asym",
    "nf4-g64",
    "kmeans-g64",
];

/// The default candidates: for BERT, W8A8 with per-channel weights (the "int8 per channel") and with
/// per-block weights (the default BERT plan's); for Llama, the `int8` preset's int8 in groups of 16; then the
/// weight-only schemes.
pub(super) fn default_schemes(task: Task) -> Vec<&'static str> {
    let int8: &[&str] = match task {
        Task::Embedding | Task::Reranking => &["w8a8-b64", "w8a8-b32-pb"],
        Task::Generation => &["int8-g16"],
    };
    int8.iter().chain(WEIGHT_ONLY_SCHEMES).copied().collect()
}

/// `--model`, the calibration data and `--threads` of `runner inspect`.
#[derive(Args, Debug, Clone)]
pub struct CalibrationArgs {
    /// A float model: an embedder folder or Hub id (any registered architecture), or a Llama GGUF file or float folder.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub data: CalibrationData,
    /// Threads for the kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl CalibrationArgs {
    /// Loads the float model into a probe with its calibration data.
    pub fn probe(&self) -> Result<Probe> {
        apply_threads(self.threads)?;
        self.data.probe(&self.model)
    }
}

/// The calibration data of the analysis commands (`inspect`, `quantize --auto`).
#[derive(Args, Debug, Clone)]
pub struct CalibrationData {
    /// Calibration text, UTF-8 (BERT: one text per non-empty line; Llama: the whole text). Default: 48 built-in
    /// sentences on varied topics.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// BERT: use at most this many calibration lines.
    #[arg(long, default_value_t = 48)]
    pub texts: usize,
    /// Llama: use the first N tokens of the calibration text.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
}

impl CalibrationData {
    /// Loads the float model `model` into a probe with this calibration data.
    pub fn probe(&self, model: &str) -> Result<Probe> {
        let text = match &self.calibration {
            Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            None => DEFAULT_CALIBRATION.to_string(),
        };
        let (path, task) = resolve(model)?;
        match task {
            Task::Embedding => {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).take(self.texts).collect();
                if lines.is_empty() {
                    bail!("the calibration text has no non-empty line");
                }
                Probe::embedder(&path, &lines)
            }
            Task::Generation => Probe::llama(&path, &text, self.max_tokens),
            Task::Reranking => {
                // Each line as a query, the next one as its document.
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).take(self.texts + 1).collect();
                if lines.len() < 2 {
                    bail!("the calibration text needs at least 2 non-empty lines to pair");
                }
                let pairs: Vec<(&str, &str)> = lines.windows(2).map(|w| (w[0], w[1])).collect();
                Probe::reranker(&path, &pairs)
            }
        }
    }

    /// The calibration data in words, for reports.
    pub fn describe(&self) -> String {
        let source = self.calibration.as_ref().map_or("built-in sentences".to_string(), |p| p.display().to_string());
        format!(
            "{source} (at most {} texts for encoders, pairs of neighbouring lines for rerankers, {} tokens for Llama)",
            self.texts, self.max_tokens
        )
    }
}
