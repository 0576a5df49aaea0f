//! The terminal tables of `runner inspect`.

use swap::analysis::{Candidate, Evaluation, LayerSensitivity, Probe};

/// Prints the weight SNR and single-layer loss of every layer and scheme, then a summary per scheme.
/// `uniform` holds each candidate's evaluation on every layer at once (or nothing).
pub fn print(probe: &Probe, candidates: &[Candidate], table: &[LayerSensitivity], uniform: &[Evaluation]) {
    let float = probe.float();
    let loss = super::loss_names(probe.task());
    let loss_name = loss.long;
    println!("float model: {}, Linear layers {:.2} MB", float.quality, float.linear_bytes as f64 / 1e6);
    let name_width = table.iter().map(|l| l.layer.name.len()).max().unwrap_or(5).max(5);
    let names: Vec<String> = candidates.iter().map(ToString::to_string).collect();
    let width = names.iter().map(String::len).max().unwrap_or(8).max(9);
    let header = |title: &str| {
        println!("\n{title}");
        print!("{:name_width$}  {:>11}", "layer", "shape");
        names.iter().for_each(|n| print!("  {n:>width$}"));
        println!();
    };
    let rows = |cell: &dyn Fn(&swap::analysis::SchemeResult) -> String| {
        for layer in table {
            let shape = format!("{}x{}", layer.layer.out_features, layer.layer.in_features);
            print!("{:name_width$}  {shape:>11}", layer.layer.name);
            layer.results.iter().for_each(|r| print!("  {:>width$}", cell(r)));
            println!();
        }
    };
    header("weight round trip: SNR in dB (higher is better)");
    rows(&|r| format!("{:.2}", r.weight_snr_db));
    if table.iter().any(|l| l.results.iter().any(|r| r.loss.is_some())) {
        header(&format!("whole model with only this layer quantized: {loss_name} (lower is better)"));
        rows(&|r| {
            r.loss.map_or("-".into(), |l| if loss.percent { format!("{:+.3}%", l * 100.0) } else { format!("{l:.2e}") })
        });
    }
    println!("\nper scheme, over these layers (and the whole model with every layer under it):");
    println!("{:>width$}  {:>10}  {:>12}  {:>14}  every layer", "scheme", "MB", "mean SNR dB", "sum of losses");
    for (s, name) in names.iter().enumerate() {
        let bytes: usize = table.iter().map(|l| l.results[s].bytes).sum();
        let snr = table.iter().map(|l| l.results[s].weight_snr_db).sum::<f64>() / table.len() as f64;
        let loss: Option<f64> = table.iter().map(|l| l.results[s].loss).sum();
        let loss = loss.map_or("-".into(), |l| format!("{l:.3e}"));
        let whole = uniform.get(s).map_or("-".into(), |e| e.quality.to_string());
        println!("{name:>width$}  {:>10.3}  {snr:>12.2}  {loss:>14}  {whole}", bytes as f64 / 1e6);
    }
}

/// Prints one Markdown table: per layer, each candidate's weight MSE and single-layer loss; then each candidate on
/// every layer at once.
pub fn markdown(probe: &Probe, candidates: &[Candidate], table: &[LayerSensitivity], uniform: &[Evaluation]) {
    let loss = |l: f64| format!("{l:.2e}");
    let metric = super::loss_names(probe.task()).short;
    print!("| layer | shape |");
    candidates.iter().for_each(|c| print!(" {c} MSE | {c} {metric} |"));
    println!();
    println!("|---|---|{}", "---:|---:|".repeat(candidates.len()));
    for layer in table {
        print!("| {} | {}x{} |", layer.layer.name, layer.layer.out_features, layer.layer.in_features);
        for r in &layer.results {
            print!(" {:.3e} | {} |", r.weight_mse, r.loss.map_or("-".into(), loss));
        }
        println!();
    }
    if !uniform.is_empty() {
        print!("| **every layer** | |");
        uniform.iter().for_each(|e| print!(" | {} |", e.quality));
        println!();
    }
}
