//! `runner bench`: fp32 against quantized schemes, timed in one run. For BERT, candle-transformers' fp32 model runs
//! beside ours; for a Llama model, see [`crate::bench_llama`].

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use swap::{Embedder, ModelKind, PairTokens, Placement, Plan, Reranker, Task};

use crate::baseline::CandleBert;
use crate::model_args::{apply_threads, encoder_preset, locate, DEFAULT_MODEL};

/// Options of `runner bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// A model folder in Hugging Face layout, a Hub id, or a Llama GGUF file.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub(crate) model: String,
    /// Comma-separated schemes to time (`fp32`, presets, any scheme name); default `fp32,int8` for BERT,
    /// `fp32,w8a8,int8,int4` for Llama.
    #[arg(long, value_delimiter = ',')]
    pub(crate) quant: Option<Vec<String>>,
    /// A plan file (TOML or JSON, as `quantize --auto` writes) to time beside the presets; repeatable.
    #[arg(long)]
    pub(crate) plan: Vec<PathBuf>,
    /// A pre-quantized checkpoint folder of the same model (`runner quantize --out`) to time as saved; repeatable.
    #[arg(long)]
    pub(crate) checkpoint: Vec<PathBuf>,
    /// Texts per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens per text.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Tokens of the single text timed for latency.
    #[arg(long, default_value_t = 16)]
    short_seq: usize,
    /// Timed runs per workload (the median is reported); default 10 for BERT, 3 for Llama.
    #[arg(long)]
    pub(crate) iters: Option<usize>,
    /// Llama: tokens of the prompt whose prefill is timed.
    #[arg(long, default_value_t = 256)]
    pub(crate) prompt_tokens: usize,
    /// Llama: tokens decoded one at a time after the prompt.
    #[arg(long, default_value_t = 128)]
    pub(crate) decode_tokens: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Where the layers run (as every model command's `--device`: `cpu`, `cuda[:N]`, `metal`, `candle-cpu`);
    /// candle-transformers' baseline runs on the same device.
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Leave out candle-transformers' baseline (its fp32 BERT; for a Llama GGUF file on a `--device` other than
    /// `cpu`, its `quantized_llama`).
    #[arg(long)]
    pub(crate) no_baseline: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// One variant of the model to time: a preset or scheme (`--quant`), a plan file (`--plan`) or a pre-quantized
/// checkpoint (`--checkpoint`).
pub(crate) struct Variant {
    /// The name its row is printed under.
    pub(crate) name: String,
    /// The folder or file to load.
    pub(crate) path: PathBuf,
    /// The plan to quantize with while loading; `None` runs a checkpoint as saved.
    pub(crate) plan: Option<Plan>,
}

/// The variants `args` asks for on the model at `path`: every `--quant` name (else `defaults`), read by `preset`,
/// then every `--plan` file and every `--checkpoint` folder, which must hold a model of the same family.
pub(crate) fn variants(
    args: &BenchArgs,
    path: &std::path::Path,
    task: Task,
    defaults: &[&str],
    preset: impl Fn(&str) -> Result<Plan>,
) -> Result<Vec<Variant>> {
    let names = args.quant.clone().unwrap_or_else(|| defaults.iter().map(|n| n.to_string()).collect());
    let mut variants = names
        .into_iter()
        .map(|name| Ok(Variant { plan: Some(preset(&name)?), path: path.to_path_buf(), name }))
        .collect::<Result<Vec<_>>>()?;
    for file in &args.plan {
        let plan = Plan::from_file(file).with_context(|| format!("reading the plan {}", file.display()))?;
        variants.push(Variant { name: format!("plan {}", file.display()), path: path.to_path_buf(), plan: Some(plan) });
    }
    for dir in &args.checkpoint {
        let (checkpoint, kind) = locate(&dir.display().to_string())?;
        if kind != task {
            bail!("the checkpoint {} does {kind}, not {task} like {}", dir.display(), path.display());
        }
        variants.push(Variant { name: format!("checkpoint {}", dir.display()), path: checkpoint, plan: None });
    }
    Ok(variants)
}

/// A model under test.
enum Contender {
    Ours(Box<Embedder>),
    /// A cross-encoder: each sequence is scored as one (query, document) pair.
    Reranker(Box<Reranker>),
    Candle(Box<CandleBert>),
}

impl Contender {
    /// Our model of `task` at `path`, quantized per `plan`, its layers placed as `placement` says.
    fn load(task: Task, path: &std::path::Path, plan: Option<Plan>, placement: &Placement) -> Result<Self> {
        Ok(match task {
            Task::Reranking => Self::Reranker(Box::new(Reranker::open_on(path, plan, placement)?)),
            _ => Self::Ours(Box::new(Embedder::open_on(path, plan, placement)?)),
        })
    }

    fn run(&self, ids: &[u32], batch: usize, seq: usize) -> Result<()> {
        match self {
            Self::Ours(e) => {
                let sequences: Vec<Vec<u32>> = ids.chunks(seq).map(<[u32]>::to_vec).collect();
                e.embed_token_ids(&sequences).map(drop)
            }
            Self::Reranker(r) => {
                let pair = |ids: &[u32]| PairTokens { ids: ids.to_vec(), types: vec![0; ids.len()], truncated: false };
                let pairs: Vec<PairTokens> = ids.chunks(seq).map(pair).collect();
                r.score_tokens(&pairs).map(drop)
            }
            Self::Candle(c) => c.embed(ids, batch, seq).map(drop),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Self::Ours(e) => e.parameter_bytes() as u64,
            Self::Reranker(r) => r.parameter_bytes() as u64,
            Self::Candle(c) => c.bytes(),
        }
    }

    /// The longest sequence it takes, for ours.
    fn max_tokens(&self) -> Option<usize> {
        match self {
            Self::Ours(e) => Some(e.pipeline().max_seq_length),
            Self::Reranker(r) => Some(r.max_tokens()),
            Self::Candle(_) => None,
        }
    }
}

/// One row of the results.
#[derive(serde::Serialize)]
struct Row {
    name: String,
    load_ms: f64,
    memory_bytes: u64,
    batch_ms: f64,
    tokens_per_s: f64,
    short_ms: f64,
    speedup_vs_fp32: Option<f64>,
    speedup_vs_candle: Option<f64>,
}

/// Loads every contender, then times them in interleaved rounds so that machine noise falls on all alike.
pub fn run(args: BenchArgs) -> Result<()> {
    apply_threads(args.threads)?;
    let (path, task) = locate(&args.model)?;
    match task {
        Task::Generation => crate::bench_llama::run(&args, &path),
        Task::Embedding | Task::Reranking => bench_encoder(&args, path, task),
    }
}

/// Times an embedder (texts embedded) or a reranker (each sequence scored as a pair) under its variants.
fn bench_encoder(args: &BenchArgs, dir: PathBuf, task: Task) -> Result<()> {
    let iters = args.iters.unwrap_or(10);
    if args.batch == 0 || args.seq < 2 || args.short_seq < 2 || iters == 0 {
        bail!("--batch and --iters must be at least 1, --seq and --short-seq at least 2");
    }
    let kind = ModelKind::of_folder(&dir)?.0;
    let variants = variants(args, &dir, task, &["fp32", "int8"], |name| encoder_preset(name, kind))?;
    let placement = Placement::parse(&args.device)?;
    let mut contenders: Vec<(String, f64, Contender)> = Vec::new();
    // candle-transformers' baseline reads BERT embedders only.
    if !args.no_baseline && kind.arch.model_types.contains(&"bert") && task == Task::Embedding {
        let start = Instant::now();
        let model = CandleBert::load(&dir, placement.candle_device().unwrap_or(&candle_core::Device::Cpu))?;
        contenders.push(("candle-transformers fp32".into(), ms(start), Contender::Candle(Box::new(model))));
    }
    for Variant { name, path, plan } in variants {
        let start = Instant::now();
        let contender = Contender::load(task, &path, plan, &placement).with_context(|| format!("loading {name}"))?;
        contenders.push((name, ms(start), contender));
    }
    let max_len = contenders.iter().find_map(|(_, _, c)| c.max_tokens()).unwrap_or(args.seq);
    if args.seq > max_len || args.short_seq > max_len {
        bail!("--seq {} / --short-seq {} exceed the model's {max_len} tokens", args.seq, args.short_seq);
    }
    let vocab = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(dir.join("config.json"))?)?
        ["vocab_size"]
        .as_u64()
        .context("config.json has no vocab_size")? as u32;
    let batch_ids = token_ids(args.batch * args.seq, vocab);
    let short_ids = token_ids(args.short_seq, vocab);
    let short_iters = iters * 5;
    let mut batch_times = vec![Vec::new(); contenders.len()];
    let mut short_times = vec![Vec::new(); contenders.len()];
    // One untimed warm-up round, then interleaved timed rounds.
    for round in 0..=short_iters {
        for (i, (_, _, c)) in contenders.iter().enumerate() {
            if round <= iters {
                let start = Instant::now();
                c.run(&batch_ids, args.batch, args.seq)?;
                if round > 0 {
                    batch_times[i].push(ms(start));
                }
            }
            let start = Instant::now();
            c.run(&short_ids, 1, args.short_seq)?;
            if round > 0 {
                short_times[i].push(ms(start));
            }
        }
    }
    let medians: Vec<f64> = batch_times.iter_mut().map(|t| median(t)).collect();
    let reference = |name: &str| contenders.iter().position(|(n, _, _)| n == name).map(|i| medians[i]);
    let (fp32, candle) = (reference("fp32"), reference("candle-transformers fp32"));
    let rows: Vec<Row> = contenders
        .iter()
        .enumerate()
        .map(|(i, (name, load_ms, c))| Row {
            name: name.clone(),
            load_ms: *load_ms,
            memory_bytes: c.bytes(),
            batch_ms: medians[i],
            tokens_per_s: (args.batch * args.seq) as f64 / (medians[i] / 1e3),
            short_ms: median(&mut short_times[i]),
            speedup_vs_fp32: fp32.map(|f| f / medians[i]),
            speedup_vs_candle: candle.map(|f| f / medians[i]),
        })
        .collect();
    let machine = machine(
        &dir,
        serde_json::json!({
            "batch": args.batch, "seq": args.seq, "short_seq": args.short_seq, "iters": iters, "device": args.device
        }),
    )?;
    if args.json {
        println!("{}", serde_json::json!({ "machine": machine, "results": rows }));
    } else {
        print_table(&machine, &rows, args, iters);
    }
    Ok(())
}

/// What the run measured on: model, CPU, kernel level and threads, with the workload's `settings` merged in.
pub(crate) fn machine(model: &std::path::Path, settings: serde_json::Value) -> Result<serde_json::Value> {
    let mut machine = serde_json::json!({
        "model": model.display().to_string(),
        "cpu": qlayers::kernels::cpu_name(),
        "isa": qlayers::kernels::selected_isa()?.to_string(),
        "threads": qlayers::threads::num_threads(),
    });
    if let (Some(all), serde_json::Value::Object(extra)) = (machine.as_object_mut(), settings) {
        all.extend(extra);
    }
    Ok(machine)
}

/// The first line of a table: model, CPU, kernel level and threads.
pub(crate) fn print_machine(machine: &serde_json::Value) {
    println!(
        "{} | {} | kernels {} | {} threads",
        machine["model"].as_str().unwrap_or_default(),
        machine["cpu"].as_str().unwrap_or_default(),
        machine["isa"].as_str().unwrap_or_default(),
        machine["threads"]
    );
}

fn print_table(machine: &serde_json::Value, rows: &[Row], args: &BenchArgs, iters: usize) {
    print_machine(machine);
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(26);
    println!(
        "median of {} runs of {} x {} tokens, {} runs of 1 x {}",
        iters,
        args.batch,
        args.seq,
        iters * 5,
        args.short_seq
    );
    println!(
        "{:<width$} {:>9} {:>10} {:>11} {:>10} {:>8} {:>9} {:>11}",
        "scheme",
        "load ms",
        "memory MB",
        "ms / batch",
        "tokens/s",
        "vs fp32",
        "vs candle",
        format!("ms 1x{}", args.short_seq),
        width = width
    );
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
    for r in rows {
        println!(
            "{:<width$} {:>9.0} {:>10.1} {:>11.1} {:>10.0} {:>8} {:>9} {:>11.2}",
            r.name,
            r.load_ms,
            r.memory_bytes as f64 / 1e6,
            r.batch_ms,
            r.tokens_per_s,
            ratio(r.speedup_vs_fp32),
            ratio(r.speedup_vs_candle),
            r.short_ms,
            width = width
        );
    }
}

/// Deterministic pseudo-random token ids in `[1000, vocab)` (past BERT's special and unused tokens).
pub(crate) fn token_ids(count: usize, vocab: u32) -> Vec<u32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let low = 1000.min(vocab.saturating_sub(1));
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            low + (state % u64::from(vocab - low)) as u32
        })
        .collect()
}

pub(crate) fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

pub(crate) fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
