//! The SVG charts of `runner inspect --plot DIR`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use svgplot::{BarChart, Histogram, Overlay, Series};
use swap::analysis::{grid_levels, weight_round_trip, LayerSensitivity, Probe};

/// Losses below this are drawn at it on the log axis of the sensitivity chart (a layer can even improve the
/// metric by chance, a loss below 0).
const LOSS_FLOOR: f64 = 1e-7;
/// Grids with more levels than this are left off the weight histogram (int8's 255 lines would hide it).
const MAX_GRID_LEVELS: usize = 16;

/// Writes every chart into `dir` (created if missing) and returns the paths written.
pub fn write_all(dir: &Path, probe: &Probe, table: &[LayerSensitivity], layer: Option<&str>) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    let mut write = |name: &str, svg: String| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    let categories: Vec<&str> = table.iter().map(|l| l.layer.name.as_str()).collect();
    let schemes: Vec<String> = table[0].results.iter().map(|r| r.candidate.to_string()).collect();
    let chart = |values: &dyn Fn(&LayerSensitivity, usize) -> f64| {
        schemes.iter().enumerate().fold(BarChart::new(categories.iter().copied()), |chart, (s, name)| {
            chart.series(Series::new(name.as_str(), table.iter().map(|l| values(l, s)).collect()))
        })
    };
    if table.iter().all(|l| l.results.iter().all(|r| r.loss.is_some())) {
        let names = super::loss_names(probe.task());
        let (what, unit) = (names.chart, names.unit);
        let svg = chart(&|l, s| l.results[s].loss.unwrap_or(0.0).max(LOSS_FLOOR))
            .title(format!("Sensitivity: {what}, with only this layer quantized"))
            .x_label("layer")
            .y_label(format!("{unit} (log; below {LOSS_FLOOR:e} drawn at it)"))
            .log_y(true)
            .render()?;
        write("sensitivity.svg", svg)?;
    }
    let svg = chart(&|l, s| l.results[s].weight_snr_db.min(200.0))
        .title("Weight round trip: signal-to-noise ratio per layer")
        .x_label("layer")
        .y_label("SNR (dB)")
        .render()?;
    write("weight_snr.svg", svg)?;

    let chosen = match layer {
        Some(name) => table.iter().find(|l| l.layer.name == name).with_context(|| format!("no layer {name}"))?,
        None => most_sensitive(table),
    };
    let name = &chosen.layer.name;
    let weight = probe.weight(name)?;
    let values: Vec<f32> = weight.flatten_all()?.to_vec1()?;
    let widest = values.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).map_or(0, |(i, _)| i);
    let mut histogram = Histogram::new(&values)
        .bins(120)
        .title(format!("{name}: weights, with each scheme's grid for the group of its largest weight"))
        .x_label("weight")
        .y_label("count (log)")
        .log_y(true);
    for result in chosen.results.iter().filter(|r| r.candidate.smoothing.is_none()) {
        let levels = grid_levels(weight, result.candidate.scheme, widest)?;
        if !levels.is_empty() && levels.len() <= MAX_GRID_LEVELS {
            let levels = levels.iter().map(|&l| f64::from(l)).collect();
            histogram = histogram.overlay(Overlay::new(result.candidate.to_string(), levels));
        }
    }
    write("weights.svg", histogram.render()?)?;
    for result in chosen.results.iter().filter(|r| r.candidate.smoothing.is_none()) {
        let round_trip: Vec<f32> = weight_round_trip(weight, result.candidate.scheme)?.flatten_all()?.to_vec1()?;
        let errors: Vec<f32> = values.iter().zip(&round_trip).map(|(w, r)| w - r).collect();
        let svg = Histogram::new(&errors)
            .bins(120)
            .title(format!("{name}: round-trip error under {} (SNR {:.1} dB)", result.candidate, result.weight_snr_db))
            .x_label("weight - dequantized weight")
            .y_label("count (log)")
            .log_y(true)
            .render()?;
        write(&format!("errors_{}.svg", result.candidate), svg)?;
    }
    Ok(written)
}

/// The layer whose worst scheme loses the most (or, without losses, whose weights round-trip worst).
fn most_sensitive(table: &[LayerSensitivity]) -> &LayerSensitivity {
    let worst = |l: &LayerSensitivity| -> f64 {
        l.results.iter().map(|r| r.loss.unwrap_or(-r.weight_snr_db)).fold(f64::NEG_INFINITY, f64::max)
    };
    table.iter().max_by(|a, b| worst(a).total_cmp(&worst(b))).expect("the table has a layer")
}
