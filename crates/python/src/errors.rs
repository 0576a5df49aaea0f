//! How engine work runs from Python: without the GIL, under its model's thread count, with errors and panics
//! turned into exceptions (`RuntimeError`; argument checks raise `ValueError` and `FileNotFoundError` before).

use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// A `ValueError` with `message`.
pub fn value_error(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// A `RuntimeError` with the engine's whole message (its causes after colons).
pub fn runtime_error(error: anyhow::Error) -> PyErr {
    PyRuntimeError::new_err(format!("{error:#}"))
}

/// Runs `work` with the GIL released and kernel calls capped at `threads` (see
/// `qlayers::threads::with_num_threads`); an error becomes a `RuntimeError`, and so does a panic, which never
/// reaches Python as one.
pub fn compute<T: Send>(
    py: Python<'_>,
    threads: Option<usize>,
    work: impl FnOnce() -> anyhow::Result<T> + Send,
) -> PyResult<T> {
    py.detach(|| contained(|| qlayers::threads::with_num_threads(threads, work))).map_err(runtime_error)
}

/// `work`'s result, or a panic in it as an error.
pub fn contained<T>(work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(anyhow::anyhow!("the engine panicked: {message}"))
    })
}
