//! The float kernels every architecture shares beside the matmuls: attention ([`mod@attention`]), layer and RMS norms
//! and gated units ([`rows`]), rotary positions ([`rotary`]). Each is written once over a few vector operations
//! (`lanes.rs`) with one implementation per level, chosen with the integer kernels' level (`QLAYERS_ISA` forces
//! both), and every level gives the portable level's bits (the tests of each module run every level the CPU has,
//! in one process).

pub mod attention;
mod lanes;
pub mod rotary;
pub mod rows;

pub use attention::{attention, attention_into, AttentionOptions, CausalOptions, KvHeads, QkvLayout, RelativeBias};
pub use rotary::{LongRope, RopeScaling, Rotary};
pub use rows::{gated, swiglu, LayerNormParams, RmsNormParams};
