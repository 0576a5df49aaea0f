//! `qinfer.TextEmbedding`: sentence embeddings as sentence-transformers' `encode` gives them.

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use swap::{Embedder, Task};

use crate::errors::{compute, value_error};
use crate::options::{layer_schemes, texts_of, ModelChoice};

/// A sentence-embedding model (BERT, RoBERTa, MPNet, ModernBERT, Qwen3 embedders, ...), quantized as it loads.
#[pyclass(frozen, module = "qinfer")]
pub struct TextEmbedding {
    embedder: Embedder,
    threads: Option<usize>,
}

#[pymethods]
impl TextEmbedding {
    /// Loads `model` (a folder in Hugging Face layout or a Hub id) quantized per `quant` (`"int8"`: the
    /// architecture's default plan; `"fp32"`; any scheme name; `None`: a pre-quantized checkpoint as saved) or
    /// `plan` (a plan file, or a dict in its shape), with `threads` kernel threads (default: all cores).
    #[new]
    #[pyo3(signature = (model, quant = Some("int8".to_string()), plan = None, threads = None))]
    fn new(
        py: Python<'_>,
        model: &str,
        quant: Option<String>,
        plan: Option<Bound<'_, PyAny>>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let choice = ModelChoice::new(
            py,
            model,
            Some(Task::Embedding),
            "TextEmbedding",
            quant.as_deref(),
            plan.as_ref(),
            threads,
        )?;
        let (embedder, threads) = choice.load(py, Embedder::open)?;
        Ok(Self { embedder, threads })
    }

    /// Embeds `texts` (a list of strings: a 2-D float32 array, one row per text; one string: a 1-D array),
    /// `batch_size` texts per model call, L2-normalised when `normalize` is true (`None`: as the model's
    /// pipeline does), each after the model's prompt `prompt_name` (`None`: its default prompt, if any). Texts
    /// longer than `max_seq_length` tokens are cut.
    #[pyo3(signature = (texts, batch_size = 32, normalize = None, prompt_name = None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        batch_size: usize,
        normalize: Option<bool>,
        prompt_name: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if batch_size == 0 {
            return Err(value_error("batch_size must be at least 1"));
        }
        let (texts, single) = texts_of(texts, "texts")?;
        let normalize = normalize.unwrap_or(self.embedder.pipeline().normalize);
        self.embedder.prompt(prompt_name.as_deref()).map_err(|e| value_error(format!("{e:#}")))?;
        let flat = compute(py, self.threads, || {
            let mut flat = Vec::with_capacity(texts.len() * self.embedder.dimensions());
            for chunk in texts.chunks(batch_size) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let ids = self.embedder.encode_with_prompt(&refs, prompt_name.as_deref())?;
                for mut row in self.embedder.pool_token_ids(&ids)? {
                    if normalize {
                        swap::normalize(&mut row);
                    }
                    flat.extend(row);
                }
            }
            Ok(flat)
        })?;
        let array = PyArray1::from_vec(py, flat);
        match single {
            true => Ok(array.into_any()),
            false => Ok(array.reshape([texts.len(), self.embedder.dimensions()])?.into_any()),
        }
    }

    /// Width of the embeddings.
    #[getter]
    fn dimensions(&self) -> usize {
        self.embedder.dimensions()
    }

    /// Tokens per text; longer texts are cut.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.embedder.pipeline().max_seq_length
    }

    /// Which scheme each Linear layer got, `{layer: scheme}`.
    #[getter]
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        layer_schemes(py, self.embedder.layers())
    }

    /// Bytes of the model's parameters in memory.
    #[getter]
    fn parameter_bytes(&self) -> usize {
        self.embedder.parameter_bytes()
    }

    fn __repr__(&self) -> String {
        format!(
            "TextEmbedding({:?}, dimensions={}, max_seq_length={})",
            self.embedder.dir().display().to_string(),
            self.embedder.dimensions(),
            self.embedder.pipeline().max_seq_length
        )
    }
}
