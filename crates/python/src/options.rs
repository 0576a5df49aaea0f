//! The arguments every model class shares: which model (a path or a Hub id), which quantization (a preset name or
//! a plan), how many threads; checked here so that bad ones raise `ValueError` or `FileNotFoundError`.

use std::path::{Path, PathBuf};

use pyo3::exceptions::PyFileNotFoundError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use swap::{Plan, Task};

use crate::errors::{compute, contained, runtime_error, value_error};

/// A model located and its quantization chosen, ready to load.
pub struct ModelChoice {
    /// The model's local file or folder.
    pub path: PathBuf,
    /// What the model does.
    pub task: Task,
    /// The plan to load it with (`None`: the model's default, or a checkpoint as saved).
    pub plan: Option<Plan>,
    /// Kernel threads for this model's calls (`None`: the process-wide count).
    pub threads: Option<usize>,
}

impl ModelChoice {
    /// Locates `model`, which must do `task` when given (`class` names the Python class, for messages), and reads `quant`
    /// (a preset or scheme name) or `plan` (a plan file's path, or a dict in a plan file's shape; it replaces
    /// `quant`).
    pub fn new(
        py: Python<'_>,
        model: &str,
        task: Option<Task>,
        class: &str,
        quant: Option<&str>,
        plan: Option<&Bound<'_, PyAny>>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        if threads == Some(0) {
            return Err(value_error("threads must be at least 1 (or None for all cores)"));
        }
        let (path, task) = locate(py, model, task, class)?;
        let plan = match (plan, quant) {
            (Some(plan), _) => Some(read_plan(py, plan)?),
            (None, Some(name)) => {
                Some(swap::locate::preset(name, &path, task).map_err(|e| value_error(format!("{e:#}")))?)
            }
            (None, None) => None,
        };
        Ok(Self { path, task, plan, threads })
    }

    /// The model loaded by `open` (given the path and the plan) with the GIL released and under the chosen
    /// thread count, and that count, which the model's later calls run under.
    pub fn load<T: Send>(
        self,
        py: Python<'_>,
        open: impl FnOnce(&Path, Option<Plan>) -> anyhow::Result<T> + Send,
    ) -> PyResult<(T, Option<usize>)> {
        let Self { path, plan, threads, .. } = self;
        Ok((compute(py, threads, || open(&path, plan))?, threads))
    }
}

/// `model` as a local path, and its task: an existing file or folder, or a Hub id (`owner/name[@revision]`)
/// fetched through the hf-hub cache. Anything else raises `FileNotFoundError`; a model of another task than
/// `task` raises `ValueError` naming the class to use.
fn locate(py: Python<'_>, model: &str, task: Option<Task>, class: &str) -> PyResult<(PathBuf, Task)> {
    if !Path::new(model).exists() && !is_hub_id(model) {
        return Err(PyFileNotFoundError::new_err(format!(
            "no model at {model:?}: it is not a file or a folder, nor a Hub id (owner/name)"
        )));
    }
    let model = model.to_string();
    let (path, found) = py.detach(|| contained(|| swap::locate::locate(&model))).map_err(runtime_error)?;
    if task.is_some_and(|task| task != found) {
        let other = match found {
            Task::Embedding => "qinfer.TextEmbedding",
            Task::Reranking => "qinfer.Reranker",
            Task::Generation => "qinfer.Generator",
        };
        return Err(value_error(format!("{model} does {found}, not what {class} does: use {other}")));
    }
    Ok((path, found))
}

/// Whether `model` has the shape of a Hub id: `owner/name`, optionally `@revision`, and no other path parts.
fn is_hub_id(model: &str) -> bool {
    let name = model.split('@').next().unwrap_or_default();
    let mut parts = name.split('/');
    let valid =
        |p: &str| !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
    matches!((parts.next(), parts.next(), parts.next()), (Some(owner), Some(repo), None) if valid(owner) && valid(repo))
}

/// A plan from a path (TOML or JSON file) or from a dict in a plan file's shape.
fn read_plan(py: Python<'_>, plan: &Bound<'_, PyAny>) -> PyResult<Plan> {
    let invalid = |e: anyhow::Error| value_error(format!("{e:#}"));
    if plan.is_instance_of::<PyDict>() {
        let json: String = py.import("json")?.call_method1("dumps", (plan,))?.extract()?;
        return Plan::parse(&json).map_err(invalid);
    }
    let path: PathBuf = plan.extract().map_err(|_| value_error("plan must be a path to a plan file or a dict"))?;
    if !path.is_file() {
        return Err(PyFileNotFoundError::new_err(format!("no plan file at {}", path.display())));
    }
    Plan::from_file(&path).map_err(invalid)
}

/// The texts of `texts` (a string, or a sequence of strings) and whether it was one string; an empty sequence,
/// an item that is not a string, or an empty text raises `ValueError`.
pub fn texts_of(texts: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<String>, bool)> {
    let (texts, single) = match texts.extract::<String>() {
        Ok(text) => (vec![text], true),
        Err(_) => {
            let items =
                texts.try_iter().map_err(|_| value_error(format!("{what} must be a string or a list of strings")))?;
            let mut list = Vec::new();
            for (i, item) in items.enumerate() {
                let item = item?;
                let text = item.extract::<String>().map_err(|_| {
                    let kind = item.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
                    value_error(format!("{what}[{i}] is {kind}, not a string"))
                })?;
                list.push(text);
            }
            (list, false)
        }
    };
    if texts.is_empty() {
        return Err(value_error(format!("{what} is empty: pass at least one text")));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(value_error(format!("{what}[{i}] is empty: there is nothing to embed or score")));
    }
    Ok((texts, single))
}

/// Which scheme each layer of a loaded model got, as `{layer: scheme}`.
pub fn layer_schemes<'py>(py: Python<'py>, layers: &[swap::LayerReport]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for layer in layers {
        dict.set_item(&layer.name, layer.scheme.to_string())?;
    }
    Ok(dict)
}
