//! Dynamic int8 quantization of activations: one symmetric scale per row and K block, codes in `[-127, 127]`,
//! stored row-major with each row padded like the weights' K blocks.

use super::blocks::{KBlocks, K_ALIGN};
use super::simd::Int8Simd;
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

/// How far ahead of the block being quantized its input is prefetched, in values.
const PREFETCH_AHEAD: usize = 1024;

/// Quantizes rows `x` (each `blocks.k` long) into `codes` (rows of `blocks.padded_k`), `scales` and `sums`, with
/// the vector primitives of `S`. `scale = max|x| / 127`, `q = round_half_even(x * 127 / max|x|)`. Errors on NaN or
/// infinite input; `first_row` numbers the rows in the error.
///
/// # Safety
/// The caller runs with `S`'s instruction set available.
#[inline(always)]
pub(crate) unsafe fn quantize_rows<S: Int8Simd>(
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
        quantize_row::<S>(row, blocks, row_codes, row_scales, row_sums).map_err(|at| QuantError::NonFinite {
            what: "layer input",
            index: (first_row + r) * blocks.k + at,
            value: row[at],
        })?;
    }
    Ok(())
}

/// Quantizes one row block by block, its padding included; on a non-finite value returns its index in the row.
#[inline(always)]
unsafe fn quantize_row<S: Int8Simd>(
    row: &[f32],
    blocks: &KBlocks,
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) -> std::result::Result<(), usize> {
    debug_assert!(S::LANES <= K_ALIGN && codes.len() == blocks.padded_k);
    for g in 0..blocks.count {
        let (start, len) = (blocks.offset(g), blocks.len(g));
        // The input streams from memory once; asking for it a few blocks ahead keeps more lines in flight.
        super::microkernel::prefetch(row.as_ptr().wrapping_add(start + PREFETCH_AHEAD).cast(), len * 4);
        // Whole vectors straight from the row; a last partial one from a zero-padded copy (its padding quantizes
        // to code 0).
        let (whole, rest) = (len / S::LANES, len % S::LANES);
        let tail = (rest > 0).then(|| {
            let mut tail = [0f32; K_ALIGN];
            tail[..rest].copy_from_slice(&row[start + len - rest..start + len]);
            tail
        });
        let out = &mut codes[start..start + blocks.padded_len(g)];
        let Some((scale, sum)) = quantize_block::<S>(row.as_ptr().add(start), whole, tail.as_ref(), out.as_mut_ptr())
        else {
            let values = &row[start..start + len];
            return Err(start + values.iter().position(|v| !v.is_finite()).unwrap_or(0));
        };
        let written = (whole + usize::from(rest > 0)) * S::LANES;
        if written < out.len() {
            out[written..].fill(0);
        }
        scales[g] = scale;
        sums[g] = sum;
    }
    Ok(())
}

/// Quantizes one block, `vectors` whole vectors at `x` followed by `tail` (a zero-padded partial vector) if any,
/// into codes at `out`; returns its scale and code sum, or `None` if it holds NaN or an infinity.
#[inline(always)]
unsafe fn quantize_block<S: Int8Simd>(
    x: *const f32,
    vectors: usize,
    tail: Option<&[f32; K_ALIGN]>,
    out: *mut i8,
) -> Option<(f32, i32)> {
    let mut max_bits = S::zero_i();
    for i in 0..vectors {
        max_bits = S::abs_bits_max(max_bits, x.add(i * S::LANES));
    }
    if let Some(tail) = tail {
        max_bits = S::abs_bits_max(max_bits, tail.as_ptr());
    }
    let max_bits = S::max_lane(max_bits);
    if max_bits >= f32::INFINITY.to_bits() {
        return None;
    }
    let absmax = f32::from_bits(max_bits);
    // |x * inv| <= 127 (1 + 2^-24)^2 < 127.5 (two roundings of 127 |x| / absmax): codes stay in [-127, 127].
    let inv = S::splat_f(if absmax > 0.0 { 127.0 / absmax } else { 0.0 });
    let mut sums = S::zero_i();
    for i in 0..vectors {
        sums = S::quantize_store(x.add(i * S::LANES), inv, out.add(i * S::LANES), sums);
    }
    if let Some(tail) = tail {
        sums = S::quantize_store(tail.as_ptr(), inv, out.add(vectors * S::LANES), sums);
    }
    Some((absmax / 127.0, S::sum_lanes(sums)))
}
