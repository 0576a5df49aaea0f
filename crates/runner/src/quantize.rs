//! `runner quantize`: writes a pre-quantized checkpoint folder.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::model_args::{resolve, Family, ModelArgs};

/// Options of `runner quantize`. `--model` may also be a Llama (a GGUF file or an HF folder); `--quant` then takes
/// the Llama presets (`int8`, `int4`, `int2`: int8 `lm_head`).
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder to write (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// Quantizes the float model per the plan and saves it, printing sizes before and after.
pub fn run(args: QuantizeArgs) -> Result<()> {
    args.model.apply_threads()?;
    let (src, family) = resolve(&args.model.model)?;
    let plan = match (args.model.quant.plan_for(family)?, family) {
        (Some(plan), _) => plan,
        (None, Family::Llama) => swap::Plan::llama_preset("int8")?,
        (None, Family::Bert) => swap::Plan::bert_int8(),
    };
    if src.canonicalize().ok() == args.out.canonicalize().ok() {
        bail!("--out must differ from the model folder");
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} layers  {msg}").expect("a valid progress template"),
    );
    let progress = bar.clone();
    let on_layer = move |done: usize, total: usize, name: &str| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
        progress.set_message(name.to_string());
    };
    let report = match family {
        Family::Bert => swap::checkpoint::quantize_bert(&src, plan.clone(), &args.out, on_layer)?,
        Family::Llama => swap::checkpoint::quantize_llama(&src, plan.clone(), &args.out, on_layer)?,
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
