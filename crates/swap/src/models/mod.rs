//! Model code written against `qlayers` layers and float kernels (`qlayers::float_ops`): one file per
//! architecture, the blocks they share beside them.

pub mod bert;
mod checks;
pub mod distilbert;
mod embedding;
mod encoder;
mod encoder_tensors;
pub mod heads;
pub mod llama;
pub mod modernbert;
pub mod mpnet;
mod projection;

use anyhow::Result;

/// A text encoder: token ids in, one hidden row per token out. Every embedding and reranking architecture is one,
/// and [`crate::arch`] builds them from a `config.json`.
pub trait TextEncoder: Send + Sync {
    /// Hidden states of every token of every sequence: `[sum of lengths, hidden]`, sequence after sequence (no
    /// padding). `token_types` gives each token's segment (a cross-encoder's query and document); every token is
    /// type 0 when `None`. Each sequence's rows are the same whatever it is batched with.
    fn forward_packed(&self, sequences: &[&[u32]], token_types: Option<&[&[u32]]>) -> Result<Vec<f32>>;

    /// Width of the hidden states.
    fn hidden_size(&self) -> usize;

    /// Token ids the model knows (`0..vocab_size`).
    fn vocab_size(&self) -> usize;

    /// The longest sequence the model takes, in tokens.
    fn max_tokens(&self) -> usize;

    /// Bytes of the parameters that are not Linear layers (embedding tables, norms, biases of attention).
    fn embedding_bytes(&self) -> usize;
}
