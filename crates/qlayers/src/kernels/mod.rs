//! Fused dequant-matmul kernels on integer codes.
//!
//! One generic driver (`driver.rs`) and micro-kernel (`microkernel.rs`) over a small trait of vector primitives
//! (`simd.rs`: `Int8Simd`), implemented by each level: `reference.rs` (portable), AVX2 and AVX-512 VNNI. The level is
//! chosen once at run time ([`selected_isa`]) and can be forced with `QLAYERS_ISA`.
//!
//! Every scheme reduces to the same integer formula. With unsigned weight codes `u`, zero points `z`, weight
//! scales `s_w`, and activations quantized per row and K block `g` to codes `q` in `[-127, 127]` with scale `s_x`:
//! `y[m][n] = bias[n] + sum_g s_x[m][g] * s_w[n][g] * sum_{k in g} (u[n][k] - z[n][g]) * q[m][k]`.
//! Codebook weights fit the same formula: their 4-bit codes are looked up in a 16-entry table of 8-bit codes
//! `u = L + 128` (zero point 128) inside the micro-kernel, then multiplied as 8-bit codes.
//!
//! f32 weights ([`FloatWeights`], `float.rs`) run on the same driver's task split and levels, with their own
//! micro-kernel (`float_tile.rs`): one chain of fused multiply-adds per output over K in order, so every level gives
//! the same bits.

mod activations;
mod aligned;
mod blocks;
mod driver;
mod float;
mod float_tile;
mod isa;
mod microkernel;
mod packed;
mod prefetch;
mod reference;
mod simd;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use blocks::MAX_BLOCK;
pub use float::FloatWeights;
pub use isa::{cpu_name, selected_isa, Isa, ISA_ENV};
pub(crate) use packed::{check_activation_step, check_input_scale};
pub use packed::{PackedWeights, WeightCodes};
pub use prefetch::prefetch;
