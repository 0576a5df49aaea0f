//! The analysis's defaults: the built-in calibration text, each task's candidate schemes, and a [`Probe`] built
//! from a calibration text the way every front end reads one.

use std::path::Path;

use anyhow::{bail, Result};

use super::Probe;
use crate::Task;

/// The built-in calibration text: 48 short sentences on varied topics, one per line.
pub const DEFAULT_CALIBRATION: &str = include_str!("calibration.txt");

/// The weight-only candidates of every family: int4 and int2 in groups of 32, 64 and 128, symmetric and
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

/// The default candidates: for encoders, W8A8 with per-channel weights and with per-block weights (the default
/// BERT plan's); for decoders, the `int8` preset's int8 in groups of 16; then the weight-only schemes.
pub fn default_schemes(task: Task) -> Vec<&'static str> {
    let int8: &[&str] = match task {
        Task::Embedding | Task::Reranking => &["w8a8-b64", "w8a8-b32-pb"],
        Task::Generation => &["int8-g16"],
    };
    int8.iter().chain(WEIGHT_ONLY_SCHEMES).copied().collect()
}

/// A probe of the float model at `path` (which does `task`) on calibration `text`: for embedders its first
/// `max_texts` non-empty lines; for rerankers pairs of neighbouring lines (each line a query, the next its
/// document), `max_texts` of them; for decoders the first `max_tokens` tokens of the whole text.
pub fn probe_on_text(path: &Path, task: Task, text: &str, max_texts: usize, max_tokens: usize) -> Result<Probe> {
    let lines = text.lines().filter(|l| !l.trim().is_empty());
    match task {
        Task::Embedding => {
            let lines: Vec<&str> = lines.take(max_texts).collect();
            if lines.is_empty() {
                bail!("the calibration text has no non-empty line");
            }
            Probe::embedder(path, &lines)
        }
        Task::Generation => Probe::llama(path, text, max_tokens),
        Task::Reranking => {
            let lines: Vec<&str> = lines.take(max_texts + 1).collect();
            if lines.len() < 2 {
                bail!("the calibration text needs at least 2 non-empty lines to pair");
            }
            let pairs: Vec<(&str, &str)> = lines.windows(2).map(|w| (w[0], w[1])).collect();
            Probe::reranker(path, &pairs)
        }
    }
}
