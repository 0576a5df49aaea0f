//! `swap`: builds encoders (embedders, rerankers) and Llama models whose layers are quantized while their weights
//! are read, following a [`Plan`] of which layer gets which scheme. [`arch`] is the registry of architectures.

pub mod analysis;
pub mod arch;
pub mod checkpoint;
pub mod embedder;
mod encoder_folder;
pub mod eval;
pub mod export;
pub mod generator;
pub mod gguf_tokenizer;
pub mod gguf_weights;
pub mod loader;
pub mod locate;
pub mod models;
pub mod nn;
pub mod plan;
pub mod quanto;
pub mod reranker;
pub mod sampling;
pub mod source;

pub use arch::{ModelKind, Task};
pub use embedder::{normalize, Embedder, PipelineConfig, Pooling};
pub use generator::{Generation, Generator, Length, StopReason, TextStream};
pub use loader::{LayerReport, Placement, QuantLoader};
pub use nn::{conv2d, conv2d_no_bias, linear, linear_b, linear_no_bias};
pub use plan::Plan;
pub use reranker::{ranked, sigmoid, PairTokens, Reranker};
pub use sampling::{Sampler, Sampling};
pub use source::{resolve_model, ModelFiles, ModelSource, ResolveOptions, SENTENCE_BERT_FILES};
