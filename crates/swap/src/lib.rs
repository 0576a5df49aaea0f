//! `swap`: builds BERT and Llama models whose layers are quantized while their weights are read, following a
//! [`Plan`] of which layer gets which scheme.

pub mod plan;

pub use plan::Plan;
