//! `qinfer` for Python: the engine's embedders, rerankers and generators as Python classes, and its quantization
//! and sensitivity analysis as functions (PyO3, one abi3 wheel for CPython 3.9+; built with maturin).
//!
//! Every call into the engine releases the GIL ([`errors::compute`]), so Python threads run meanwhile, and runs
//! under the thread count its model was made with; engine errors and panics come back as Python exceptions.

mod embedding;
mod errors;
mod generation;
mod options;
mod reranking;
mod tools;

use pyo3::prelude::*;

/// The module `qinfer`.
#[pymodule]
fn qinfer(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_class::<embedding::TextEmbedding>()?;
    module.add_class::<reranking::Reranker>()?;
    module.add_class::<generation::Generator>()?;
    module.add_class::<generation::TextStream>()?;
    module.add_function(wrap_pyfunction!(tools::quantize, module)?)?;
    module.add_function(wrap_pyfunction!(tools::inspect, module)?)?;
    Ok(())
}
