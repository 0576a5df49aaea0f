//! `runner eval`: agreement of our embeddings (or a reranker's scores) with a reference file, or a Llama model's
//! perplexity on a text.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use swap::eval::Agreement;

use crate::model_args::{LlmArgs, ModelArgs};

/// Options of `runner eval`: a kind of evaluation, embeddings when none is named.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    kind: Option<EvalKind>,
    #[command(flatten)]
    embeddings: EmbeddingsArgs,
}

#[derive(Subcommand, Debug)]
enum EvalKind {
    /// Embeddings against a reference file: cosine mean and min, top-10 neighbour overlap (the default).
    Embeddings(EmbeddingsArgs),
    /// Perplexity of a Llama model on a text, in non-overlapping windows.
    Perplexity(PerplexityArgs),
    /// A reranker's raw scores against a reference file: mean and largest error, queries ranked alike.
    Scores(ScoresArgs),
}

/// Runs the evaluation asked for.
pub fn run(args: EvalArgs) -> Result<()> {
    match args.kind {
        Some(EvalKind::Perplexity(p)) => perplexity(p),
        Some(EvalKind::Embeddings(e)) => embeddings(e),
        Some(EvalKind::Scores(s)) => scores(s),
        None => embeddings(args.embeddings),
    }
}

/// Options of `runner eval perplexity`.
#[derive(Args, Debug)]
struct PerplexityArgs {
    #[command(flatten)]
    model: LlmArgs,
    /// The text (UTF-8).
    #[arg(long)]
    text: PathBuf,
    /// Tokens per window; each window runs from an empty cache.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Score only the first N tokens of the text.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn perplexity(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.text).with_context(|| format!("cannot read {}", args.text.display()))?;
    let generator = args.model.load()?;
    let mut ids = generator.encode(&text)?;
    if let Some(n) = args.max_tokens {
        ids.truncate(n);
    }
    let context = generator.model().config().context_length;
    if args.window > context {
        bail!("--window {} exceeds the model's context of {context} tokens", args.window);
    }
    let start = Instant::now();
    let ppl = generator.model().perplexity(&ids, args.window)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let report = serde_json::json!({
            "tokens": ids.len(), "window": args.window, "perplexity": ppl, "seconds": seconds,
        });
        println!("{report}");
    } else {
        println!("tokens      {}", ids.len());
        println!("window      {}", args.window);
        println!("perplexity  {ppl:.4}");
        println!("time        {seconds:.1} s ({:.0} tokens/s)", ids.len() as f64 / seconds);
    }
    Ok(())
}

/// Options of `runner eval embeddings`.
#[derive(Args, Debug)]
struct EmbeddingsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON lines with `text` and `embedding` (for example sentence-transformers' fp32 output).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Texts per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Embeds the reference texts and compares.
fn embeddings(args: EmbeddingsArgs) -> Result<()> {
    let reference = args.reference.context("--reference FILE is required (JSON lines with text and embedding)")?;
    args.model.apply_threads()?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (texts, expected) = read_reference(&reference)?;
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

/// Options of `runner eval scores`.
#[derive(Args, Debug)]
struct ScoresArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON lines with `query`, `document` and `score` (the raw logit, for example transformers' fp32 output).
    #[arg(long)]
    reference: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Scores the reference pairs and compares: the absolute errors, and for each query with several documents
/// whether its documents come out in the reference's order.
fn scores(args: ScoresArgs) -> Result<()> {
    args.model.apply_threads()?;
    #[derive(serde::Deserialize)]
    struct Row {
        query: String,
        document: String,
        score: f32,
    }
    let path = &args.reference;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rows = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str::<Row>(line).with_context(|| {
                format!("{} line {}: expected {{\"query\", \"document\", \"score\"}}", path.display(), i + 1)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if rows.is_empty() {
        bail!("{} holds no reference pairs", path.display());
    }
    let reranker = args.model.load_reranker()?;
    let ours: Vec<f32> =
        rows.iter().map(|r| Ok(reranker.score(&r.query, &[r.document.as_str()])?[0])).collect::<Result<_>>()?;
    let errors: Vec<f64> = ours.iter().zip(&rows).map(|(o, r)| f64::from((o - r.score).abs())).collect();
    let mean_error = errors.iter().sum::<f64>() / errors.len() as f64;
    let max_error = errors.iter().copied().fold(0.0, f64::max);
    let mut queries: Vec<&str> = rows.iter().map(|r| r.query.as_str()).collect();
    queries.dedup();
    let order = |scores: &[f32]| swap::ranked(scores).into_iter().map(|(i, _)| i).collect::<Vec<_>>();
    let (mut ranked, mut alike) = (0, 0);
    for query in queries.iter().filter(|q| rows.iter().filter(|r| r.query == **q).count() > 1) {
        let picked: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].query == *query).collect();
        let theirs: Vec<f32> = picked.iter().map(|&i| rows[i].score).collect();
        let mine: Vec<f32> = picked.iter().map(|&i| ours[i]).collect();
        ranked += 1;
        alike += usize::from(order(&theirs) == order(&mine));
    }
    if args.json {
        let report = serde_json::json!({
            "pairs": rows.len(), "mean_error": mean_error, "max_error": max_error,
            "queries_ranked": ranked, "queries_ranked_alike": alike,
        });
        println!("{report}");
    } else {
        println!("pairs          {}", rows.len());
        println!("mean error     {mean_error:.3e}");
        println!("max error      {max_error:.3e}");
        println!("ranked alike   {alike} of {ranked} queries with several documents");
    }
    Ok(())
}
