//! `qinfer.Generator`: text from a decoder LLM (a GGUF file or a Hugging Face folder), whole or streamed.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use swap::{Length, Sampling, Task};

use crate::errors::{compute, contained, value_error};
use crate::options::{layer_schemes, ModelChoice};

/// Pieces a stream may hold that Python has not taken yet; the model waits beyond that.
const STREAM_BUFFER: usize = 64;

/// A decoder LLM, quantized as it loads.
#[pyclass(frozen, module = "qinfer")]
pub struct Generator {
    generator: Arc<swap::Generator>,
    threads: Option<usize>,
}

/// What one generation asks for, checked.
struct Request {
    ids: Vec<u32>,
    length: Length,
    sampling: Sampling,
}

impl Generator {
    /// The prompt's token ids (after the chat template with `chat`) and the sampling options, checked; its
    /// arguments are those of `generate` and `stream`, as Python passes them.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        prompt: &str,
        length: Length,
        temperature: f32,
        top_p: f32,
        seed: Option<u64>,
        chat: bool,
        system: Option<&str>,
    ) -> PyResult<Request> {
        if prompt.trim().is_empty() {
            return Err(value_error("the prompt is empty"));
        }
        let invalid = |e: anyhow::Error| value_error(format!("{e:#}"));
        let sampling = Sampling::from_options(temperature, top_p, seed).map_err(invalid)?;
        let text = match chat {
            true => self.generator.chat_prompt(system, prompt).map_err(invalid)?,
            false => prompt.to_string(),
        };
        let ids = self.generator.encode(&text).map_err(invalid)?;
        Ok(Request { ids, length, sampling })
    }
}

#[pymethods]
impl Generator {
    /// Loads `model` (a GGUF file, a decoder folder in Hugging Face layout, or a Hub id) quantized per `quant`
    /// (`None`: a GGUF's own blocks, a float folder in int8, a checkpoint as saved; `"int8"`, `"int4"`,
    /// `"int2"`, `"fp32"` or a scheme) or `plan`, with `threads` kernel threads.
    #[new]
    #[pyo3(signature = (model, quant = None, plan = None, threads = None))]
    fn new(
        py: Python<'_>,
        model: &str,
        quant: Option<String>,
        plan: Option<Bound<'_, PyAny>>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let choice =
            ModelChoice::new(py, model, Some(Task::Generation), "Generator", quant.as_deref(), plan.as_ref(), threads)?;
        let (generator, threads) = choice.load(py, swap::Generator::open)?;
        Ok(Self { generator: Arc::new(generator), threads })
    }

    /// Up to `max_tokens` tokens after `prompt` (with `chat`, the prompt is the user's message in the model's
    /// chat template, after `system`), as text; `temperature` 0 is greedy, else sampling from the `top_p` nucleus
    /// with `seed` (the same seed gives the same text, as `runner generate --seed` does). Stops at the
    /// end-of-sequence token (unless `ignore_eos`) or a full context.
    #[pyo3(signature = (prompt, max_tokens = 128, temperature = 0.7, top_p = 0.9, seed = None, chat = false, system = None, ignore_eos = false))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_p: f32,
        seed: Option<u64>,
        chat: bool,
        system: Option<&str>,
        ignore_eos: bool,
    ) -> PyResult<String> {
        let length = Length { max_tokens, ignore_eos };
        let request = self.request(prompt, length, temperature, top_p, seed, chat, system)?;
        compute(py, self.threads, || {
            let generation = self.generator.generate(&request.ids, request.length, request.sampling, |_| Ok(()))?;
            self.generator.decode(&generation.tokens)
        })
    }

    /// [`Generator::generate`] as an iterator of text pieces, each yielded as soon as the model has produced
    /// it (the model runs on a thread of its own; dropping the iterator stops it).
    #[pyo3(signature = (prompt, max_tokens = 128, temperature = 0.7, top_p = 0.9, seed = None, chat = false, system = None, ignore_eos = false))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_p: f32,
        seed: Option<u64>,
        chat: bool,
        system: Option<&str>,
        ignore_eos: bool,
    ) -> PyResult<TextStream> {
        let length = Length { max_tokens, ignore_eos };
        let request = self.request(prompt, length, temperature, top_p, seed, chat, system)?;
        let (pieces, receiver) = sync_channel(STREAM_BUFFER);
        let generator = Arc::clone(&self.generator);
        let threads = self.threads;
        std::thread::Builder::new()
            .name("qinfer-stream".into())
            .spawn(move || {
                let mut text = swap::TextStream::new(generator.tokenizer());
                let result = contained(|| {
                    qlayers::threads::with_num_threads(threads, || {
                        generator.generate(&request.ids, request.length, request.sampling, |id| {
                            let piece = text.push(id)?;
                            // The reader went away: stop generating.
                            pieces.send(Ok(piece)).map_err(|_| anyhow::anyhow!("the stream was dropped"))
                        })
                    })
                });
                if let Err(e) = result {
                    let _ = pieces.send(Err(format!("{e:#}")));
                }
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the generation thread: {e}")))?;
        Ok(TextStream { pieces: Mutex::new(receiver) })
    }

    /// Which scheme each Linear layer got, `{layer: scheme}`.
    #[getter]
    fn plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        layer_schemes(py, self.generator.layers())
    }

    /// The model's context length in tokens (prompt and answer).
    #[getter]
    fn context_length(&self) -> usize {
        self.generator.model().config().context_length
    }

    fn __repr__(&self) -> String {
        format!("Generator(context_length={})", self.context_length())
    }
}

/// The text pieces of one generation, as they come (see `Generator.stream`).
#[pyclass(frozen, module = "qinfer")]
pub struct TextStream {
    pieces: Mutex<Receiver<Result<String, String>>>,
}

#[pymethods]
impl TextStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next piece (waiting for it without the GIL), or the end; an engine error raises `RuntimeError`.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let next = py.detach(|| self.pieces.lock().unwrap_or_else(PoisonError::into_inner).recv());
        match next {
            Ok(Ok(piece)) => Ok(Some(piece)),
            Ok(Err(message)) => Err(PyRuntimeError::new_err(message)),
            // The generation thread is done and every piece taken.
            Err(_) => Ok(None),
        }
    }
}
