//! `qinfer`: one crate that re-exports the workspace's libraries, and holds its top-level examples and benches.
//!
//! - [`qlayers`]: quantized tensors and quantized candle layers.
//! - [`swap`]: models whose layers are quantized while their weights are read.

pub use qlayers;
pub use swap;
