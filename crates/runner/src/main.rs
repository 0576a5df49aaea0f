//! `runner`: the command-line front end of the engine (embed, quantize, bench, eval, serve).

mod baseline;
mod bench;
mod embed;
mod eval;
mod model_args;
mod quantize;
mod serve;

use clap::{Parser, Subcommand};

/// Quantized BERT embeddings on candle: embed texts, quantize checkpoints, compare fp32 with int8, serve over HTTP.
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
    /// Write a pre-quantized checkpoint folder.
    Quantize(quantize::QuantizeArgs),
    /// Time fp32 against quantized schemes (and candle-transformers' fp32 BERT) in one run.
    Bench(bench::BenchArgs),
    /// Compare embeddings with a reference file (cosine mean and min, top-10 neighbour overlap).
    Eval(eval::EvalArgs),
    /// Serve embeddings over HTTP: OpenAI's `/v1/embeddings` and text-embeddings-inference's `/embed`.
    Serve(serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
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
