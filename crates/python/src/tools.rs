//! `qinfer.quantize` and `qinfer.inspect`: a pre-quantized checkpoint written, and each layer's sensitivity to
//! each scheme measured, as `runner quantize` and `runner inspect` do.

use std::path::PathBuf;

use pyo3::prelude::*;
use swap::analysis::{default_schemes, probe_on_text, sensitivity, Candidate, DEFAULT_CALIBRATION};
use swap::plan::glob_match;
use swap::Task;

use crate::errors::{compute, value_error};
use crate::options::ModelChoice;

/// Writes a pre-quantized checkpoint of the float model `model` (an encoder or decoder folder, a GGUF file or a
/// Hub id) into the folder `out`, per `quant` or `plan` (default: the model's `int8` preset). Returns
/// `{"plan", "layers", "source_bytes", "saved_bytes"}`.
#[pyfunction]
#[pyo3(signature = (model, out, quant = None, plan = None, threads = None))]
pub fn quantize<'py>(
    py: Python<'py>,
    model: &str,
    out: PathBuf,
    quant: Option<String>,
    plan: Option<Bound<'py, PyAny>>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let quant = quant.or_else(|| plan.is_none().then(|| "int8".to_string()));
    let choice = ModelChoice::new(py, model, None, "quantize", quant.as_deref(), plan.as_ref(), threads)?;
    let task = choice.task;
    if choice.path.canonicalize().ok() == out.canonicalize().ok() {
        return Err(value_error("out must differ from the model's folder"));
    }
    let plan = choice.plan.expect("a preset or a plan is always chosen here");
    let report = compute(py, threads, || {
        let ignore = |_: usize, _: usize, _: &str| {};
        match task {
            Task::Embedding | Task::Reranking => {
                swap::export::quantize_encoder(&choice.path, plan.clone(), &out, ignore)
            }
            Task::Generation => swap::export::quantize_llama(&choice.path, plan.clone(), &out, ignore),
        }
    })?;
    let json = serde_json::json!({
        "plan": plan.to_string(),
        "layers": report
            .layers
            .iter()
            .map(|l| (l.name.clone(), serde_json::Value::from(l.scheme.to_string())))
            .collect::<serde_json::Map<_, _>>(),
        "source_bytes": report.source_bytes,
        "saved_bytes": report.saved_bytes,
    });
    from_json(py, &json)
}

/// Each layer's sensitivity: for every layer (or those matching the glob `layers`) and candidate scheme
/// (`schemes`, default those of `runner inspect`), the weight round-trip error and, unless `weights_only`, the
/// whole model's loss with that layer alone quantized, measured on `calibration` (texts, or one text for a
/// decoder; default: 48 built-in sentences). Returns a list of dicts, one per layer, as `runner inspect --json`
/// writes its `layers`.
#[pyfunction]
#[pyo3(signature = (model, schemes = None, calibration = None, layers = None, weights_only = false, threads = None))]
pub fn inspect<'py>(
    py: Python<'py>,
    model: &str,
    schemes: Option<Vec<String>>,
    calibration: Option<Bound<'py, PyAny>>,
    layers: Option<String>,
    weights_only: bool,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let choice = ModelChoice::new(py, model, None, "inspect", None, None, threads)?;
    let task = choice.task;
    let names: Vec<String> = match schemes {
        Some(names) if names.is_empty() => return Err(value_error("schemes is empty")),
        Some(names) => names,
        None => default_schemes(task).into_iter().map(String::from).collect(),
    };
    let candidates = names
        .iter()
        .map(|n| n.trim().parse::<qlayers::LayerScheme>().map(Candidate::from).map_err(|e| value_error(format!("{e}"))))
        .collect::<PyResult<Vec<Candidate>>>()?;
    let text = match calibration {
        None => DEFAULT_CALIBRATION.to_string(),
        Some(c) => match c.extract::<String>() {
            Ok(text) => text,
            Err(_) => crate::options::texts_of(&c, "calibration")?.0.join("\n"),
        },
    };
    let table = compute(py, threads, || {
        let probe = probe_on_text(&choice.path, task, &text, usize::MAX, 128)?;
        let shapes: Vec<_> = probe
            .layers()
            .iter()
            .filter(|l| layers.as_deref().is_none_or(|glob| glob_match(glob, &l.name)))
            .cloned()
            .collect();
        if shapes.is_empty() {
            anyhow::bail!("no layer matches {:?}", layers.as_deref().unwrap_or_default());
        }
        sensitivity(&probe, &shapes, &candidates, !weights_only, |_, _, _| {})
    })?;
    from_json(py, &serde_json::to_value(&table).map_err(|e| value_error(e.to_string()))?)
}

/// A JSON value as Python objects (dicts, lists, numbers, strings).
fn from_json<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}
