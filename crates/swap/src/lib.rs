//! `swap`: builds BERT and Llama models whose layers are quantized while their weights are read, following a
//! [`Plan`] of which layer gets which scheme.

pub mod analysis;
pub mod checkpoint;
pub mod embedder;
pub mod eval;
pub mod generator;
pub mod gguf_tokenizer;
pub mod gguf_weights;
pub mod loader;
pub mod models;
pub mod plan;
pub mod quanto;
pub mod sampling;
pub mod source;

pub use embedder::{normalize, Embedder, PipelineConfig, Pooling};
pub use generator::{Generation, Generator, StopReason, TextStream};
pub use loader::{LayerReport, QuantLoader};
pub use plan::Plan;
pub use sampling::{Sampler, Sampling};
pub use source::{resolve_model, ModelFiles, ModelSource, ResolveOptions, SENTENCE_BERT_FILES};
