//! Which model is probed and on what text.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use swap::analysis::{probe_on_text, Probe, DEFAULT_CALIBRATION};

use crate::model_args::{apply_threads, locate, DEFAULT_MODEL};

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
        let (path, task) = locate(model)?;
        probe_on_text(&path, task, &text, self.texts, self.max_tokens)
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
