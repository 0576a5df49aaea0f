//! `runner generate`: text from a Llama model, streamed as it is produced, with prompt and decode speed at the end.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use clap::Args;
use swap::{Length, Sampling, TextStream};

use crate::model_args::LlmArgs;

/// Options of `runner generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: LlmArgs,
    /// The prompt (read from standard input when not given).
    #[arg(long)]
    prompt: Option<String>,
    /// Wrap the prompt in the model's chat template as the user's message, with the assistant's turn opened.
    #[arg(long)]
    chat: bool,
    /// A system message for `--chat`.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate; generation also stops at the end-of-sequence token or a full context.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Go on past the end-of-sequence token (for benchmarks and tests, as llama.cpp's --ignore-eos).
    #[arg(long)]
    ignore_eos: bool,
    /// Sampling temperature; 0 picks the most likely token every time (greedy).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling: draw from the most likely tokens whose probabilities add up to this.
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// Seed of the sampler: the same seed, prompt and model give the same text (random when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object at the end (text, token counts, speeds) instead of streaming.
    #[arg(long)]
    json: bool,
}

/// Loads the model and generates.
pub fn run(args: GenerateArgs) -> Result<()> {
    let sampling = Sampling::from_options(args.temperature, args.top_p, args.seed)?;
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read the prompt from standard input")?;
            text
        }
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let generator = args.model.load()?;
    let text = match args.chat {
        true => generator.chat_prompt(args.system.as_deref(), &prompt)?,
        false => prompt,
    };
    let ids = generator.encode(&text)?;
    let mut stream = TextStream::new(generator.tokenizer());
    let mut out = std::io::stdout().lock();
    let length = Length { max_tokens: args.max_tokens, ignore_eos: args.ignore_eos };
    let generation = generator.generate(&ids, length, sampling, |id| {
        let piece = stream.push(id)?;
        if !args.json {
            out.write_all(piece.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    })?;
    let seed = match sampling {
        Sampling::Greedy => None,
        Sampling::Random { seed, .. } => Some(seed),
    };
    if args.json {
        let report = serde_json::json!({
            "text": generator.decode(&generation.tokens)?,
            "tokens": generation.tokens,
            "prompt_tokens": generation.prompt_tokens,
            "generated_tokens": generation.tokens.len(),
            "prefill_tokens_per_s": generation.prefill_tokens_per_s(),
            "decode_tokens_per_s": generation.decode_tokens_per_s(),
            "stop": generation.stop,
            "seed": seed,
        });
        writeln!(out, "{report}")?;
    } else {
        writeln!(out)?;
        eprintln!(
            "prompt {} tokens at {:.1} tokens/s; generated {} tokens at {:.1} tokens/s; stopped: {:?}{}",
            generation.prompt_tokens,
            generation.prefill_tokens_per_s(),
            generation.tokens.len(),
            generation.decode_tokens_per_s(),
            generation.stop,
            seed.map_or_else(String::new, |s| format!("; seed {s}")),
        );
    }
    Ok(())
}
