//! Dynamic int8 quantization of activations: one symmetric scale per row and K block, codes in `[-127, 127]`,
//! stored row-major with each row padded like the weights' K blocks.

use super::blocks::KBlocks;
use crate::error::{QuantError, Result};

/// Activations of an `[m, k]` matrix quantized per row and block.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuantizedActivations {
    /// Codes, `m * padded_k` bytes, row-major; each row's padding is 0.
    pub codes: Vec<i8>,
    /// Scale of each row and block, `[m][blocks]`; 0 for an all-zero block.
    pub scales: Vec<f32>,
    /// Sum of the codes of each row and block, `[m][blocks]`.
    pub sums: Vec<i32>,
}

impl QuantizedActivations {
    /// Sizes the buffers for `m` rows, keeping their allocations: a buffer reused across calls does not fault in
    /// fresh pages each time. Contents are left as they are; the quantizer writes every byte of every row.
    pub fn resize(&mut self, m: usize, blocks: &KBlocks) {
        self.codes.resize(m * blocks.padded_k, 0);
        self.scales.resize(m * blocks.count, 0.0);
        self.sums.resize(m * blocks.count, 0);
    }
}

/// `1.5 * 2^23`: adding it to a float below `2^22` in magnitude leaves the integer nearest to it (ties to even)
/// in the low mantissa bits. Vectorizes everywhere, unlike `round_ties_even` without SSE4.1.
const ROUNDER: f32 = 12_582_912.0;

/// How far ahead of the block being quantized its input is prefetched, in values.
const PREFETCH_AHEAD: usize = 1024;

/// Quantizes rows `x` (each `blocks.k` long) into `codes` (rows of `blocks.padded_k`), `scales` and `sums`.
/// `scale = max|x| / 127`, `q = round_half_even(x * 127 / max|x|)`. Errors on NaN or infinite input; `first_row`
/// numbers the rows in the error.
#[inline(always)]
pub(crate) fn quantize_rows(
    x: &[f32],
    blocks: &KBlocks,
    first_row: usize,
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) -> Result<()> {
    let rows = x
        .chunks_exact(blocks.k)
        .zip(codes.chunks_exact_mut(blocks.padded_k))
        .zip(scales.chunks_exact_mut(blocks.count).zip(sums.chunks_exact_mut(blocks.count)));
    for (r, ((row, row_codes), (row_scales, row_sums))) in rows.enumerate() {
        quantize_row(row, blocks, row_codes, row_scales, row_sums).map_err(|at| QuantError::NonFinite {
            what: "layer input",
            index: (first_row + r) * blocks.k + at,
            value: row[at],
        })?;
        row_codes[blocks.k..].fill(0);
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
        // The input streams from memory once; asking for it a few blocks ahead keeps more lines in flight.
        super::microkernel::prefetch(row.as_ptr().wrapping_add(start + PREFETCH_AHEAD).cast(), len * 4);
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
