//! `runner quantize`: writes a pre-quantized checkpoint folder, per a plan or a plan chosen automatically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use swap::analysis::{auto_plan, Candidate, Target};
use swap::{Plan, Task};

use crate::inspect::{candidate_schemes, measure, CalibrationData};
use crate::model_args::{locate, ModelArgs};

/// Options of `runner quantize`. `--model` may also be a Llama (a GGUF file or an HF folder); `--quant` then takes
/// the Llama presets (`int8`, `int4`, `int2`: int8 `lm_head`).
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder to write (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Choose each layer's scheme: the fewest bytes that meet `--target` on the calibration data, from each layer's
    /// measured sensitivity (as `runner inspect` shows it), verified by evaluating the whole plan.
    #[arg(long, requires = "target", conflicts_with_all = ["quant", "plan"])]
    auto: bool,
    /// What `--auto` must reach: `cosine>=0.999` (embedders: mean cosine to the float embeddings), `ppl<=+2%`
    /// (Llama: perplexity over the float model's) or `score-error<=0.01` (rerankers: mean absolute difference of the
    /// raw scores from the float model's).
    #[arg(long, requires = "auto")]
    target: Option<Target>,
    /// Candidate schemes for `--auto`, comma-separated (default: those of `runner inspect`).
    #[arg(long, value_delimiter = ',', requires = "auto")]
    candidates: Vec<String>,
    /// Where `--auto` saves its plan (TOML; default `OUT/plan.toml`), for `--plan` in every other command.
    #[arg(long, requires = "auto")]
    save_plan: Option<PathBuf>,
    #[command(flatten)]
    calibration: CalibrationData,
}

/// Quantizes the float model per the plan and saves it, printing sizes before and after.
pub fn run(args: QuantizeArgs) -> Result<()> {
    args.model.apply_threads()?;
    let (src, task) = locate(&args.model.model)?;
    if src.canonicalize().ok() == args.out.canonicalize().ok() {
        bail!("--out must differ from the model folder");
    }
    let plan = match args.model.quant.plan_for(&src, task)? {
        _ if args.auto => automatic(&args, task)?,
        Some(plan) => plan,
        None => swap::locate::preset("int8", &src, task)?,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} layers  {msg}").expect("a valid progress template"),
    );
    let progress = bar.clone();
    let on_layer = move |done: usize, total: usize, name: &str| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
        progress.set_message(name.to_string());
    };
    let report = match task {
        Task::Embedding | Task::Reranking => swap::export::quantize_encoder(&src, plan.clone(), &args.out, on_layer)?,
        Task::Generation => swap::export::quantize_llama(&src, plan.clone(), &args.out, on_layer)?,
    };
    bar.finish_and_clear();
    println!("plan      {plan}");
    println!("layers    {}", report.layers.len());
    println!("before    {:.1} MB ({})", report.source_bytes as f64 / 1e6, src.display());
    println!(
        "after     {:.1} MB ({}), {:.2}x smaller",
        report.saved_bytes as f64 / 1e6,
        args.out.display(),
        report.source_bytes as f64 / report.saved_bytes as f64
    );
    Ok(())
}

/// Measures every layer's sensitivity, finds the automatic plan, compares it with uniform int8 and saves it.
fn automatic(args: &QuantizeArgs, task: Task) -> Result<Plan> {
    let target = args.target.context("--auto needs --target")?;
    // Before the measurement, which takes minutes.
    target.check_fits(task)?;
    let probe = args.calibration.probe(&args.model.model)?;
    let candidates: Vec<Candidate> =
        candidate_schemes(&args.candidates, probe.task())?.into_iter().map(Candidate::from).collect();
    let table = measure(&probe, &candidates, true, None)?;
    let found = auto_plan(&probe, &table, target)?;
    let (src, _) = locate(&args.model.model)?;
    let int8 = swap::locate::preset("int8", &src, task)?;
    let uniform = probe.evaluate(&int8)?;
    let float = probe.float();
    let mb = |bytes: usize| bytes as f64 / 1e6;
    println!("calibration  {}", args.calibration.describe());
    println!("float        {}; Linear layers {:.2} MB", float.quality, mb(float.linear_bytes));
    println!("uniform int8 {}; Linear layers {:.2} MB ({int8})", uniform.quality, mb(uniform.linear_bytes));
    println!(
        "auto {target}  {}; Linear layers {:.2} MB ({:.1}% of uniform int8; {} search round(s), predicted loss {:.3e})",
        found.evaluation.quality,
        mb(found.evaluation.linear_bytes),
        100.0 * found.evaluation.linear_bytes as f64 / uniform.linear_bytes as f64,
        found.rounds,
        found.predicted_loss,
    );
    let plan_path = args.save_plan.clone().unwrap_or_else(|| args.out.join("plan.toml"));
    save_plan(&plan_path, &found.plan)?;
    println!("plan saved   {}", plan_path.display());
    Ok(found.plan)
}

/// Writes `plan` as TOML to `path`, creating its folder.
fn save_plan(path: &Path, plan: &Plan) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, plan.to_toml()).with_context(|| format!("cannot write {}", path.display()))
}
