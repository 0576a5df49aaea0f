//! The f32 micro-kernel: one tile of `ROWS` rows and one panel of `NV` vectors of columns, over one chunk of K.
//!
//! Every output is one chain of fused multiply-adds over K in order, from zero, with the bias added once at the
//! end (and the layer's activation, if any, applied to that): `y = (fma(x[k-1], w[k-1], ... fma(x[0], w[0], 0))) + bias`. Each level computes exactly these operations,
//! so every level gives the same bits, and splitting K into chunks (the chain's value is stored and reloaded
//! between them) changes nothing.

use super::microkernel::{opaque, store_output_row};
use super::simd::Int8Simd;
use crate::activation::Activation;

/// Everything one float tile needs; pointers are valid for the tile's rows, the panel's chunk and the columns.
pub(crate) struct FloatTile {
    /// The input of the tile's first row at the chunk's first K value.
    pub a: *const f32,
    /// Floats from one input row to the next.
    pub lda: usize,
    /// The panel's weights at the chunk's first K value: `nr` floats per K value, one per column.
    pub w: *const f32,
    /// K values in the chunk.
    pub steps: usize,
    /// Bias of the panel's columns (zeros where the layer has none), padded to `nr`.
    pub bias: *const f32,
    /// Output of the first row and column, rows `ldo` floats apart.
    pub out: *mut f32,
    /// Stride between output rows.
    pub ldo: usize,
    /// Valid columns in this panel (`nr` except in the last panel).
    pub cols: usize,
    /// The tile's running sums between chunks, `[ROWS][nr]`: read unless `first`, written unless `last`.
    pub partial: *mut f32,
    /// Whether the chunk is the first of K (the sums start at zero).
    pub first: bool,
    /// Whether the chunk is the last of K (the sums plus the bias go to `out`).
    pub last: bool,
    /// Applied to the outputs as they are stored, when given.
    pub activation: Option<Activation>,
}

/// Computes one float tile: `sums[m][j] = fma(x[m][k], w[k][j], sums[m][j])` for each K value of the chunk.
///
/// # Safety
/// the CPU supports the instruction set `S` was built for (the caller runs inside a function compiled with its target features); every pointer of `t` is valid for the tile's `ROWS` rows, the panel's `NV` vectors of
/// columns and the chunk's `steps` K values, and no other thread touches the tile's output or partial sums meanwhile.
#[inline(always)]
pub(crate) unsafe fn float_tile<S: Int8Simd, const ROWS: usize, const NV: usize>(t: &FloatTile) {
    let nr = NV * S::LANES;
    let mut acc = [[S::zero_f(); NV]; ROWS];
    if !t.first {
        for (m, row) in acc.iter_mut().enumerate() {
            *row = std::array::from_fn(|v| S::load_f(t.partial.add(m * nr + v * S::LANES)));
        }
    }
    // Each row's pointer lives in its own register (see `opaque`); the loop indexes them with one counter.
    let rows: [*const f32; ROWS] = std::array::from_fn(|m| opaque(t.a.add(m * t.lda)));
    let acc = fma_steps::<S, ROWS, NV>(acc, &rows, t.w, t.steps);
    if !t.last {
        for (m, row) in acc.iter().enumerate() {
            for (v, &acc) in row.iter().enumerate() {
                S::store_f(t.partial.add(m * nr + v * S::LANES), acc);
            }
        }
        return;
    }
    let bias: [S::F; NV] = std::array::from_fn(|v| S::load_f(t.bias.add(v * S::LANES)));
    for (m, row) in acc.iter().enumerate() {
        // `acc * 1 + bias` rounds once, as `acc + bias` does.
        let values = std::array::from_fn(|v| S::fma_f(row[v], S::splat_f(1.0), bias[v]));
        store_output_row::<S, NV>(values, t.out.add(m * t.ldo), t.cols, t.activation);
    }
}

/// `acc[m][j] = fma(rows[m][k], w[k][j], acc[m][j])` for `k` in `0..steps`, the sums passed in and out by value so
/// that they stay in registers for the whole loop.
///
/// # Safety
/// As [`float_tile`]: the rows hold `steps` values and the panel at `w` holds `steps` K values.
#[inline(always)]
unsafe fn fma_steps<S: Int8Simd, const ROWS: usize, const NV: usize>(
    mut acc: [[S::F; NV]; ROWS],
    rows: &[*const f32; ROWS],
    mut w: *const f32,
    steps: usize,
) -> [[S::F; NV]; ROWS] {
    for k in 0..steps {
        let b: [S::F; NV] = std::array::from_fn(|v| S::load_f(w.add(v * S::LANES)));
        for (row, &a) in acc.iter_mut().zip(rows) {
            let x = S::splat_f(*a.add(k));
            for (acc, &b) in row.iter_mut().zip(&b) {
                *acc = S::fma_f(x, b, *acc);
            }
        }
        w = w.add(NV * S::LANES);
    }
    acc
}
