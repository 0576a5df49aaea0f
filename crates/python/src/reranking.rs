//! `qinfer.Reranker`: cross-encoder relevance scores of documents for a query.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use swap::Task;

use crate::errors::{compute, value_error};
use crate::options::{layer_schemes, texts_of, ModelChoice};

/// A cross-encoder reranker (`*ForSequenceClassification`), quantized as it loads.
#[pyclass(frozen, module = "qinfer")]
pub struct Reranker {
    reranker: swap::Reranker,
    threads: Option<usize>,
}

#[pymethods]
impl Reranker {
    /// Loads `model` (a folder in Hugging Face layout or a Hub id) quantized per `quant` or `plan`, with
    /// `threads` kernel threads, as `TextEmbedding` does.
    #[new]
    #[pyo3(signature = (model, quant = Some("int8".to_string()), plan = None, threads = None))]
    fn new(
        py: Python<'_>,
        model: &str,
        quant: Option<String>,
        plan: Option<Bound<'_, PyAny>>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let choice =
            ModelChoice::new(py, model, Some(Task::Reranking), "Reranker", quant.as_deref(), plan.as_ref(), threads)?;
        let (reranker, threads) = choice.load(py, swap::Reranker::open)?;
        Ok(Self { reranker, threads })
    }

    /// Scores each of `documents` against `query` and returns the best `top_n` (default: all), best first, as
    /// dicts `{"index", "score", "document"}`: `score` is the relevance in (0, 1) (the sigmoid of the model's
    /// raw score, which is `raw_score`). Pairs longer than the model's maximum are cut.
    #[pyo3(signature = (query, documents, top_n = None))]
    fn rerank<'py>(
        &self,
        py: Python<'py>,
        query: &str,
        documents: &Bound<'py, PyAny>,
        top_n: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        if query.trim().is_empty() {
            return Err(value_error("query is empty"));
        }
        let (documents, _) = texts_of(documents, "documents")?;
        let scores = compute(py, self.threads, || {
            let refs: Vec<&str> = documents.iter().map(String::as_str).collect();
            self.reranker.score(query, &refs)
        })?;
        let ranked = swap::ranked(&scores);
        let list = PyList::empty(py);
        for &(index, raw) in ranked.iter().take(top_n.unwrap_or(ranked.len())) {
            let item = PyDict::new(py);
            item.set_item("index", index)?;
            item.set_item("score", swap::sigmoid(raw))?;
            item.set_item("raw_score", raw)?;
            item.set_item("document", &documents[index])?;
            list.append(item)?;
        }
        Ok(list)
    }

    /// Tokens per (query, document) pair; longer pairs are cut.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.reranker.max_tokens()
    }

    /// Which scheme each Linear layer got, `{layer: scheme}`.
    #[getter]
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        layer_schemes(py, self.reranker.layers())
    }

    fn __repr__(&self) -> String {
        format!("Reranker({:?})", self.reranker.dir().display().to_string())
    }
}
