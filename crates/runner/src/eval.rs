//! `runner eval`: agreement of our embeddings with a reference file.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use swap::eval::Agreement;

use crate::model_args::ModelArgs;

/// Options of `runner eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON lines with `text` and `embedding` (for example sentence-transformers' fp32 output).
    #[arg(long)]
    reference: PathBuf,
    /// Texts per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Embeds the reference texts and compares.
pub fn run(args: EvalArgs) -> Result<()> {
    args.model.apply_threads()?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (texts, expected) = read_reference(&args.reference)?;
    let embedder = args.model.load()?;
    let mut ours = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(args.batch) {
        ours.extend(embedder.embed(&chunk.iter().map(String::as_str).collect::<Vec<_>>())?);
    }
    if let Some(i) = ours.iter().zip(&expected).position(|(a, b)| a.len() != b.len()) {
        bail!("reference embedding #{i} has {} values; the model gives {}", expected[i].len(), ours[i].len());
    }
    let a = Agreement::between(&ours, &expected);
    if args.json {
        let report = serde_json::json!({
            "texts": texts.len(),
            "cosine_mean": a.cosine_mean,
            "cosine_min": a.cosine_min,
            "top10_overlap": a.top10_overlap,
        });
        println!("{report}");
    } else {
        println!("texts          {}", texts.len());
        println!("cosine mean    {:.5}", a.cosine_mean);
        println!("cosine min     {:.5}", a.cosine_min);
        println!("top-10 overlap {:.4}", a.top10_overlap);
    }
    Ok(())
}

/// The texts and embeddings of a reference JSON-lines file.
fn read_reference(path: &PathBuf) -> Result<(Vec<String>, Vec<Vec<f32>>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut texts = Vec::new();
    let mut embeddings = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        #[derive(serde::Deserialize)]
        struct Row {
            text: String,
            embedding: Vec<f32>,
        }
        let row: Row = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: expected {{\"text\", \"embedding\"}}", path.display(), i + 1))?;
        texts.push(row.text);
        embeddings.push(row.embedding);
    }
    if texts.len() < 2 {
        bail!("{} holds {} reference rows; at least 2 are needed", path.display(), texts.len());
    }
    Ok((texts, embeddings))
}
