//! `runner inspect`: what each layer costs under each scheme: weight round-trip error and the whole model's loss
//! with that layer alone quantized, as a table, JSON and SVG charts.

mod calibration;
mod plots;
mod table;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use qlayers::LayerScheme;
use serde::Serialize;
use swap::analysis::{default_schemes, sensitivity, Candidate, Evaluation, LayerSensitivity, LayerShape, Probe};
use swap::plan::glob_match;
use swap::{Plan, Task};

pub use calibration::{CalibrationArgs, CalibrationData};

/// Options of `runner inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub calibration: CalibrationArgs,
    /// Candidate schemes, comma-separated or repeated (default: int8 per channel, int4 and int2 in groups of 32, 64
    /// and 128, symmetric and asymmetric, NF4 and k-means in groups of 64).
    #[arg(long = "quant", value_delimiter = ',')]
    pub schemes: Vec<String>,
    /// Also try every W8A8 candidate with SmoothQuant at this strength (0 to 1; 0.5 in the paper): activation
    /// outliers moved into the weights by per-channel factors from the calibration data (BERT).
    #[arg(long)]
    pub smooth: Option<f32>,
    /// Only the layers whose names match this glob.
    #[arg(long)]
    pub layers: Option<String>,
    /// Weight errors only: skip the whole-model evaluation of each layer and scheme.
    #[arg(long)]
    pub weights_only: bool,
    /// Print one JSON document instead of tables.
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the per-layer table as Markdown: weight MSE and single-layer loss under each scheme.
    #[arg(long)]
    pub markdown: bool,
    /// Write SVG charts into this folder: per-layer sensitivity and weight SNR, and for one layer its weight
    /// histogram under each scheme's grid and each scheme's error histogram.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The layer whose weights and errors the charts show (default: the most sensitive layer).
    #[arg(long)]
    pub plot_layer: Option<String>,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report<'a> {
    model: &'a str,
    calibration: String,
    float: Evaluation,
    schemes: Vec<String>,
    /// Each scheme on every layer (empty with `--weights-only`).
    uniform: &'a [Evaluation],
    layers: &'a [LayerSensitivity],
}

/// Runs the analysis and prints or draws it.
pub fn run(args: InspectArgs) -> Result<()> {
    let probe = args.calibration.probe()?;
    let mut candidates: Vec<Candidate> =
        candidate_schemes(&args.schemes, probe.task())?.into_iter().map(Candidate::from).collect();
    if let Some(alpha) = args.smooth {
        let w8a8 =
            candidates.iter().filter(|c| matches!(c.scheme, LayerScheme::W8A8 { .. })).copied().collect::<Vec<_>>();
        if w8a8.is_empty() {
            bail!("--smooth applies to W8A8 candidates (w8a8-bN...), and none is listed");
        }
        candidates.extend(w8a8.into_iter().map(|c| Candidate { smoothing: Some(alpha), ..c }));
    }
    let table = measure(&probe, &candidates, !args.weights_only, args.layers.as_deref())?;
    // Each candidate on every layer at once, next to its single-layer losses.
    let uniform = match args.weights_only {
        true => Vec::new(),
        false => candidates
            .iter()
            .map(|c| probe.evaluate_with(&Plan::uniform(c.scheme), c.smoothing))
            .collect::<Result<Vec<_>>>()?,
    };
    if let Some(dir) = &args.plot {
        let written = plots::write_all(dir, &probe, &table, args.plot_layer.as_deref())?;
        eprintln!("wrote {} charts into {}", written.len(), dir.display());
    }
    if args.json {
        let report = Report {
            model: &args.calibration.model,
            calibration: args.calibration.data.describe(),
            float: probe.float(),
            schemes: candidates.iter().map(ToString::to_string).collect(),
            uniform: &uniform,
            layers: &table,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.markdown {
        table::markdown(&probe, &candidates, &table, &uniform);
    } else {
        table::print(&probe, &candidates, &table, &uniform);
    }
    Ok(())
}

/// The schemes named (or the defaults of the model family), parsed.
pub fn candidate_schemes(names: &[String], task: Task) -> Result<Vec<LayerScheme>> {
    let names: Vec<&str> = match names.is_empty() {
        true => default_schemes(task),
        false => names.iter().map(String::as_str).collect(),
    };
    let schemes = names.iter().map(|n| Ok(n.trim().parse::<LayerScheme>()?)).collect::<Result<Vec<_>>>()?;
    if schemes.is_empty() {
        bail!("no candidate scheme");
    }
    Ok(schemes)
}

/// How a task's single-layer loss is named in tables and charts, and whether it reads as a percentage.
pub(crate) struct LossNames {
    /// In a table title.
    pub long: &'static str,
    /// In a column header.
    pub short: &'static str,
    /// In a chart title.
    pub chart: &'static str,
    /// On a chart axis.
    pub unit: &'static str,
    /// KL in nats, shown as the perplexity change it approximates.
    pub percent: bool,
}

/// The names of `task`'s loss ([`swap::analysis::Quality::loss`]).
pub(crate) fn loss_names(task: Task) -> LossNames {
    match task {
        Task::Embedding => LossNames {
            long: "1 - mean cosine",
            short: "1 - cos",
            chart: "1 - mean cosine to the float embeddings",
            unit: "1 - cosine",
            percent: false,
        },
        Task::Reranking => LossNames {
            long: "mean |score - float score|",
            short: "score err",
            chart: "mean absolute error of the raw scores against the float model's",
            unit: "score error",
            percent: false,
        },
        Task::Generation => LossNames {
            long: "KL divergence from the float model (nats)",
            short: "KL",
            chart: "KL divergence of next-token distributions from the float model",
            unit: "KL (nats)",
            percent: true,
        },
    }
}

/// [`sensitivity`] over the layers matching `filter`, with a progress bar on stderr.
pub fn measure(
    probe: &Probe,
    candidates: &[Candidate],
    end_to_end: bool,
    filter: Option<&str>,
) -> Result<Vec<LayerSensitivity>> {
    let bar = ProgressBar::new(probe.layers().len() as u64).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} layers {elapsed}  {msg}").expect("a valid template"),
    );
    let progress = |i: usize, total: usize, name: &str| {
        bar.set_length(total as u64);
        bar.set_position(i as u64);
        bar.set_message(name.to_string());
    };
    let layers: Vec<LayerShape> =
        probe.layers().iter().filter(|l| filter.is_none_or(|glob| glob_match(glob, &l.name))).cloned().collect();
    if layers.is_empty() {
        bail!("no layer matches {:?}", filter.unwrap_or_default());
    }
    let table = sensitivity(probe, &layers, candidates, end_to_end, progress)?;
    bar.finish_and_clear();
    Ok(table)
}
