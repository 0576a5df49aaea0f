//! Dynamic int8 quantization of activations: one symmetric scale per row and K block, codes in `[-127, 127]`,
//! stored interleaved for the micro-kernels.

use super::blocks::KBlocks;
use crate::error::{QuantError, Result};

/// Activations of an `[m, k]` matrix quantized per row and block.
///
/// Rows are grouped in tiles of `tile_rows` (the level's micro-tile height; the last tile is padded with zero
/// rows). Inside a tile, each step of 4 K values stores 4 bytes of every row in turn, so a micro-kernel reads a
/// step of all its rows from one pointer.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuantizedActivations {
    /// Interleaved codes, `tiles * tile_rows * padded_k` bytes; padding is 0.
    pub codes: Vec<i8>,
    /// Scale of each row and block, `[padded rows][blocks]`; 0 for an all-zero block.
    pub scales: Vec<f32>,
    /// Sum of the codes of each row and block, `[padded rows][blocks]`.
    pub sums: Vec<i32>,
}

impl QuantizedActivations {
    /// Zeroed buffers for `m` rows, padded to whole tiles of `tile_rows`.
    pub fn zeroed(m: usize, blocks: &KBlocks, tile_rows: usize) -> Self {
        let rows = m.next_multiple_of(tile_rows);
        Self {
            codes: vec![0; rows * blocks.padded_k],
            scales: vec![0.0; rows * blocks.count],
            sums: vec![0; rows * blocks.count],
        }
    }
}

/// `1.5 * 2^23`: adding it to a float below `2^22` in magnitude leaves the integer nearest to it (ties to even)
/// in the low mantissa bits. Vectorizes everywhere, unlike `round_ties_even` without SSE4.1.
const ROUNDER: f32 = 12_582_912.0;

/// Quantizes rows `x` (whole tiles of `tile_rows` rows, the last possibly short, each row `blocks.k` long)
/// into `codes` (interleaved), `scales` and `sums`. `scale = max|x| / 127`, `q = round_half_even(x * 127 / max|x|)`.
/// Errors on NaN or infinite input; `first_row` numbers the rows in the error.
#[inline(always)]
pub(crate) fn quantize_rows(
    x: &[f32],
    blocks: &KBlocks,
    tile_rows: usize,
    first_row: usize,
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) -> Result<()> {
    // One tile's rows, row-major, then interleaved into `codes` with sequential writes.
    let mut tile_codes = vec![0i8; tile_rows * blocks.padded_k];
    let tile_bytes = tile_rows * blocks.padded_k;
    let row_groups = x.chunks(tile_rows * blocks.k).zip(codes.chunks_exact_mut(tile_bytes));
    for (t, (tile_x, tile_out)) in row_groups.enumerate() {
        let rows = tile_x.len() / blocks.k;
        if rows < tile_rows {
            tile_codes.fill(0);
        }
        for (r, (row, row_codes)) in
            tile_x.chunks_exact(blocks.k).zip(tile_codes.chunks_exact_mut(blocks.padded_k)).enumerate()
        {
            let row_index = t * tile_rows + r;
            let params = row_index * blocks.count..(row_index + 1) * blocks.count;
            quantize_row(row, blocks, row_codes, &mut scales[params.clone()], &mut sums[params]).map_err(|at| {
                QuantError::NonFinite {
                    what: "layer input",
                    index: (first_row + row_index) * blocks.k + at,
                    value: row[at],
                }
            })?;
        }
        for (s, step) in tile_out.chunks_exact_mut(4 * tile_rows).enumerate() {
            for (r, four) in step.chunks_exact_mut(4).enumerate() {
                four.copy_from_slice(&tile_codes[r * blocks.padded_k + 4 * s..][..4]);
            }
        }
    }
    Ok(())
}

/// Quantizes one row block by block; on a non-finite value returns its index in the row.
#[inline(always)]
fn quantize_row(
    row: &[f32],
    blocks: &KBlocks,
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) -> std::result::Result<(), usize> {
    for g in 0..blocks.count {
        let (start, len) = (blocks.offset(g), blocks.len(g));
        let values = &row[start..start + len];
        let absmax = abs_max(values);
        if !absmax.is_finite() {
            return Err(start + values.iter().position(|v| !v.is_finite()).unwrap_or(0));
        }
        let inv = if absmax > 0.0 { 127.0 / absmax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in codes[start..start + len].iter_mut().zip(values) {
            let c = ((v * inv).clamp(-127.0, 127.0) + ROUNDER).to_bits() as i32 - ROUNDER.to_bits() as i32;
            sum += c;
            *q = c as i8;
        }
        scales[g] = absmax / 127.0;
        sums[g] = sum;
    }
    Ok(())
}

/// Largest `|v|`, or NaN if `values` holds NaN or an infinity. Works on the bits: for non-negative floats the
/// integer order of the bit patterns is the numeric order, and NaN and the infinities sort above every finite value,
/// so one integer max (which vectorizes everywhere) finds both.
#[inline(always)]
fn abs_max(values: &[f32]) -> f32 {
    const ABS: u32 = 0x7fff_ffff;
    const INFINITY: u32 = 0x7f80_0000;
    // An integer max reduction: associative, so the compiler vectorizes it at full width.
    let max = values.iter().fold(0u32, |m, v| m.max(v.to_bits() & ABS));
    if max >= INFINITY {
        f32::NAN
    } else {
        f32::from_bits(max)
    }
}
