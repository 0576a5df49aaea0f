//! Dynamic int8 quantization of activations: one symmetric scale per row and K block, codes in `[-127, 127]`.

use super::blocks::KBlocks;
use crate::error::{QuantError, Result};

/// Activations of an `[m, k]` matrix quantized per row and block, laid out for the micro-kernels.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuantizedActivations {
    /// Codes, `m` rows of `padded_k` bytes; padding is 0.
    pub codes: Vec<i8>,
    /// Scale of each row and block, `[m][blocks]`; 0 for an all-zero block.
    pub scales: Vec<f32>,
    /// Sum of the codes of each row and block, `[m][blocks]`.
    pub sums: Vec<i32>,
}

impl QuantizedActivations {
    /// Buffers for `m` rows, zeroed.
    pub fn zeroed(m: usize, blocks: &KBlocks) -> Self {
        Self {
            codes: vec![0; m * blocks.padded_k],
            scales: vec![0.0; m * blocks.count],
            sums: vec![0; m * blocks.count],
        }
    }
}

/// Rounds to the nearest integer, ties to even, for `|v| < 2^22`: adding and removing `1.5 * 2^23` leaves the
/// float unit to do the rounding. Vectorizes on every target, unlike `round_ties_even` without SSE4.1.
#[inline(always)]
fn round_half_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Quantizes rows `x` (each `blocks.k` long) into `codes`, `scales` and `sums` (each sized for those rows).
/// `scale = max|x| / 127`, `q = round_half_even(x * 127 / max|x|)`. Errors on NaN or infinite input.
#[inline(always)]
pub(crate) fn quantize_rows(
    x: &[f32],
    blocks: &KBlocks,
    codes: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) -> Result<()> {
    let rows = x.chunks_exact(blocks.k).zip(codes.chunks_exact_mut(blocks.padded_k));
    let params = scales.chunks_exact_mut(blocks.count).zip(sums.chunks_exact_mut(blocks.count));
    for (r, ((row, row_codes), (row_scales, row_sums))) in rows.zip(params).enumerate() {
        for g in 0..blocks.count {
            let (start, len) = (blocks.offset(g), blocks.len(g));
            let values = &row[start..start + len];
            let (mut absmax, mut finite) = (0f32, true);
            for &v in values {
                absmax = absmax.max(v.abs());
                finite &= v.abs() < f32::INFINITY;
            }
            if !finite {
                let at = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
                return Err(QuantError::NonFinite {
                    what: "layer input",
                    index: r * blocks.k + start + at,
                    value: values[at],
                });
            }
            let inv = if absmax > 0.0 { 127.0 / absmax } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in row_codes[start..start + len].iter_mut().zip(values) {
                let c = round_half_even(v * inv).clamp(-127.0, 127.0) as i32;
                sum += c;
                *q = c as i8;
            }
            row_scales[g] = absmax / 127.0;
            row_sums[g] = sum;
        }
    }
    Ok(())
}
