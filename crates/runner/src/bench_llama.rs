//! `runner bench` on a Llama model: prefill of a prompt and one-token decoding after it, fp32 against each
//! quantized plan and, on a GGUF file with `--device` other than `cpu`, candle-transformers' `quantized_llama` on
//! the file's own blocks on the same device, timed in interleaved rounds of one run.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use swap::models::llama::{argmax, LlamaModel};
use swap::{Generator, Plan, Task};

use crate::baseline::CandleQuantizedLlama;
use crate::bench::{machine, median, ms, print_machine, token_ids, variants, BenchArgs, Variant};

/// A decoder under test.
enum Decoder {
    Ours(Box<LlamaModel>),
    Candle(Box<CandleQuantizedLlama>),
}

impl Decoder {
    /// Runs `prompt`, then decodes `steps` tokens one at a time, greedily; returns the seconds of each part.
    fn time(&mut self, prompt: &[u32], steps: usize) -> Result<(f64, f64)> {
        let start = Instant::now();
        match self {
            Self::Ours(model) => {
                let mut cache = model.new_cache();
                let mut next = argmax(&model.forward(prompt, &mut cache)?);
                let prefill = start.elapsed().as_secs_f64();
                let start = Instant::now();
                for _ in 0..steps {
                    next = argmax(&model.forward(&[next], &mut cache)?);
                }
                Ok((prefill, start.elapsed().as_secs_f64()))
            }
            Self::Candle(model) => {
                let mut next = argmax(&model.forward(prompt, 0)?);
                let prefill = start.elapsed().as_secs_f64();
                let start = Instant::now();
                for i in 0..steps {
                    next = argmax(&model.forward(&[next], prompt.len() + i)?);
                }
                Ok((prefill, start.elapsed().as_secs_f64()))
            }
        }
    }

    /// Bytes of the weights read per token.
    fn bytes(&self) -> usize {
        match self {
            Self::Ours(model) => model.linear_bytes(),
            Self::Candle(model) => model.bytes() as usize,
        }
    }
}

/// One row of the results.
#[derive(serde::Serialize)]
struct Row {
    name: String,
    plan: String,
    load_ms: f64,
    linear_bytes: usize,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    prefill_vs_fp32: Option<f64>,
    decode_vs_fp32: Option<f64>,
}

/// Times every `--quant` plan of the model at `path`.
pub fn run(args: &BenchArgs, path: &Path) -> Result<()> {
    let iters = args.iters.unwrap_or(3);
    if iters == 0 || args.prompt_tokens == 0 || args.decode_tokens == 0 {
        bail!("--iters, --prompt-tokens and --decode-tokens must be at least 1");
    }
    let variants = variants(args, path, Task::Generation, &["fp32", "w8a8", "int8", "int4"], |name| {
        swap::locate::preset(name, path, Task::Generation)
    })?;
    let placement = swap::Placement::parse(&args.device)?;
    let mut contenders: Vec<(String, String, f64, Decoder)> = Vec::new();
    let mut config = None;
    for Variant { name, path, plan } in variants {
        let shown = plan.as_ref().map_or_else(|| "as saved".to_string(), Plan::to_string);
        let start = Instant::now();
        let generator = Generator::open_on(&path, plan, &placement).with_context(|| format!("loading {name}"))?;
        config.get_or_insert_with(|| generator.model().config().clone());
        contenders.push((name, shown, ms(start), Decoder::Ours(Box::new(generator.into_model()))));
    }
    // Beside layers on candle's kernels only: on the CPU, candle's quantized kernels pick their SIMD when compiled
    // (target features), and this build targets baseline x86-64, so they would run scalar code.
    if let (false, true, Some(device)) = (args.no_baseline, path.is_file(), placement.candle_device()) {
        let start = Instant::now();
        let model = CandleQuantizedLlama::load(path, device)?;
        let baseline = Decoder::Candle(Box::new(model));
        contenders.push(("candle quantized_llama".into(), "the file's blocks".into(), ms(start), baseline));
    }
    let config = config.context("no variant to time")?;
    if args.prompt_tokens + args.decode_tokens > config.context_length {
        bail!(
            "{} + {} tokens exceed the model's context of {}",
            args.prompt_tokens,
            args.decode_tokens,
            config.context_length
        );
    }
    let prompt = token_ids(args.prompt_tokens, config.vocab_size as u32);
    let (mut prefill, mut decode) = (vec![Vec::new(); contenders.len()], vec![Vec::new(); contenders.len()]);
    // One untimed warm-up round, then interleaved timed rounds.
    for round in 0..=iters {
        for (i, (_, _, _, model)) in contenders.iter_mut().enumerate() {
            let (prefill_s, decode_s) = model.time(&prompt, args.decode_tokens)?;
            if round > 0 {
                prefill[i].push(args.prompt_tokens as f64 / prefill_s);
                decode[i].push(args.decode_tokens as f64 / decode_s);
            }
        }
    }
    let prefill: Vec<f64> = prefill.iter_mut().map(|t| median(t)).collect();
    let decode: Vec<f64> = decode.iter_mut().map(|t| median(t)).collect();
    let fp32 = contenders.iter().position(|(n, ..)| n == "fp32");
    let rows: Vec<Row> = contenders
        .iter()
        .enumerate()
        .map(|(i, (name, plan, load_ms, model))| Row {
            name: name.clone(),
            plan: plan.clone(),
            load_ms: *load_ms,
            linear_bytes: model.bytes(),
            prefill_tokens_per_s: prefill[i],
            decode_tokens_per_s: decode[i],
            prefill_vs_fp32: fp32.map(|f| prefill[i] / prefill[f]),
            decode_vs_fp32: fp32.map(|f| decode[i] / decode[f]),
        })
        .collect();
    let settings =
        serde_json::json!({"prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens, "iters": iters});
    let machine = machine(path, settings)?;
    if args.json {
        println!("{}", serde_json::json!({ "machine": machine, "results": rows }));
        return Ok(());
    }
    print_machine(&machine);
    println!(
        "median of {iters} runs: prefill of {} tokens, then {} tokens decoded one at a time",
        args.prompt_tokens, args.decode_tokens
    );
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(8);
    println!(
        "{:<width$} {:>9} {:>16} {:>17} {:>8} {:>16} {:>8}",
        "scheme", "load ms", "weights MB/token", "prefill tokens/s", "vs fp32", "decode tokens/s", "vs fp32"
    );
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
    for r in &rows {
        println!(
            "{:<width$} {:>9.0} {:>16.1} {:>17.1} {:>8} {:>16.1} {:>8}",
            r.name,
            r.load_ms,
            r.linear_bytes as f64 / 1e6,
            r.prefill_tokens_per_s,
            ratio(r.prefill_vs_fp32),
            r.decode_tokens_per_s,
            ratio(r.decode_vs_fp32)
        );
    }
    Ok(())
}
