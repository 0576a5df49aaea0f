//! `runner rerank`: a query and documents in, one JSON line per document out, best first.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::embed::{open_output, read_texts};
use crate::model_args::ModelArgs;

/// Options of `runner rerank`.
#[derive(Args, Debug)]
pub struct RerankArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The query the documents are scored against.
    #[arg(long)]
    query: String,
    /// Print the model's raw scores (logits) instead of sigmoid relevances in (0, 1).
    #[arg(long)]
    raw_scores: bool,
    /// A file with one document per line (`-` for standard input).
    #[arg(long, conflicts_with = "documents")]
    input: Option<PathBuf>,
    /// Write the JSON lines to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Pairs per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Documents to score; without them (and without --input) they are read from standard input, one per line.
    documents: Vec<String>,
}

/// Scores every document and writes `{"index", "score"}` per line, the best first (ties in input order).
pub fn run(args: RerankArgs) -> Result<()> {
    args.model.apply_threads()?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if args.query.trim().is_empty() {
        bail!("--query is empty: there is nothing to rank against");
    }
    let documents = read_texts(&args.documents, args.input.as_ref())?;
    if documents.is_empty() {
        bail!("no document to score: pass documents, --input FILE, or lines on standard input");
    }
    if let Some(i) = documents.iter().position(|t| t.trim().is_empty()) {
        bail!("document #{i} (line {}) is empty: there is nothing to score", i + 1);
    }
    let reranker = args.model.load_reranker()?;
    let mut scores = Vec::with_capacity(documents.len());
    for chunk in documents.chunks(args.batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        scores.extend(reranker.score(&args.query, &refs)?);
    }
    if !args.raw_scores {
        scores.iter_mut().for_each(|s| *s = swap::sigmoid(*s));
    }
    let mut out = open_output(args.output.as_ref())?;
    for (index, score) in swap::ranked(&scores) {
        writeln!(out, "{}", serde_json::to_string(&Line { index, score })?)?;
    }
    out.flush()?;
    Ok(())
}

/// One output line.
#[derive(serde::Serialize)]
struct Line {
    index: usize,
    score: f32,
}
