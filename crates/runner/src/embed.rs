//! `runner embed`: texts in, one JSON line per embedding out.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::model_args::ModelArgs;

/// Options of `runner embed`.
#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A file with one text per line (`-` for standard input).
    #[arg(long, conflicts_with = "texts")]
    input: Option<PathBuf>,
    /// Write the JSON lines to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Texts per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Put the model's prompt of this name before each text (`config_sentence_transformers.json`'s `prompts`, such
    /// as `query` for Qwen3-Embedding); without it, the model's default prompt if it names one.
    #[arg(long)]
    prompt_name: Option<String>,
    /// Texts to embed; without them (and without --input) texts are read from standard input, one per line.
    texts: Vec<String>,
}

/// Embeds every text and writes `{"index", "tokens", "embedding"}` per line.
pub fn run(args: EmbedArgs) -> Result<()> {
    args.model.apply_threads()?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let texts = read_texts(&args.texts, args.input.as_ref())?;
    if texts.is_empty() {
        bail!("no text to embed: pass texts, --input FILE, or lines on standard input");
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        bail!("text #{i} (line {}) is empty: there is nothing to embed", i + 1);
    }
    let embedder = args.model.load()?;
    let mut out = open_output(args.output.as_ref())?;
    let mut index = 0;
    for chunk in texts.chunks(args.batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        // Tokenized once: the counts and the embeddings come from the same ids.
        let ids = embedder.encode_with_prompt(&refs, args.prompt_name.as_deref())?;
        for (embedding, ids) in embedder.embed_token_ids(&ids)?.into_iter().zip(&ids) {
            let tokens = ids.len();
            writeln!(out, "{}", serde_json::to_string(&Line { index, tokens, embedding })?)?;
            index += 1;
        }
    }
    out.flush()?;
    Ok(())
}

/// A buffered writer on `path`, or on standard output.
pub(crate) fn open_output(path: Option<&PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// One output line (fields in this order; floats printed as the shortest text that reads back to the same f32).
#[derive(serde::Serialize)]
struct Line {
    index: usize,
    tokens: usize,
    embedding: Vec<f32>,
}

/// The texts of the command line, else the lines of `input` (a file, or standard input for `-` or none).
pub(crate) fn read_texts(texts: &[String], input: Option<&PathBuf>) -> Result<Vec<String>> {
    if !texts.is_empty() {
        return Ok(texts.to_vec());
    }
    let reader: Box<dyn BufRead> = match input {
        Some(path) if path.as_os_str() != "-" => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
        _ => Box::new(std::io::stdin().lock()),
    };
    reader.lines().collect::<std::io::Result<Vec<_>>>().context("input is not UTF-8 text")
}
