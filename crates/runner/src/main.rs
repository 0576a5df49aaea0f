//! `runner`: the command-line front end of the engine (embed, rerank, generate, quantize, bench, eval, inspect,
//! serve).

mod baseline;
mod bench;
mod bench_llama;
mod embed;
mod eval;
mod generate;
mod inspect;
mod model_args;
mod quantize;
mod rerank;
mod serve;

use clap::{Parser, Subcommand};

/// Quantized encoders and Llama generation on candle: embed texts, rerank documents, generate text, quantize
/// checkpoints, compare fp32 with int8 and int4, inspect what each layer's quantization costs, serve over HTTP.
#[derive(Parser)]
#[command(name = "runner", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts; one JSON object per text (`index`, `tokens`, `embedding`).
    Embed(embed::EmbedArgs),
    /// Score documents against a query with a cross-encoder; one JSON object per document (`index`, `score`), best
    /// first.
    Rerank(rerank::RerankArgs),
    /// Generate text with a Llama model (GGUF file or Hugging Face folder), streamed, with tokens/s at the end.
    Generate(generate::GenerateArgs),
    /// Write a pre-quantized checkpoint folder.
    Quantize(quantize::QuantizeArgs),
    /// Time fp32 against quantized schemes (and candle-transformers' fp32 BERT) in one run.
    Bench(bench::BenchArgs),
    /// Compare embeddings with a reference file (cosine, top-10 overlap), or measure a Llama's perplexity.
    Eval(eval::EvalArgs),
    /// Per-layer quantization error under each scheme (weights and whole model), as a table, JSON or SVG charts.
    Inspect(inspect::InspectArgs),
    /// Serve embeddings over HTTP: OpenAI's `/v1/embeddings` and text-embeddings-inference's `/embed`.
    Serve(serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Rerank(args) => rerank::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
