//! Int8 quantization of activations, codes in `[-127, 127]` stored row-major with each row padded like the
//! weights' K blocks; the parameters of each block are stored block-major, so that a tile finds those of its rows
//! side by side. Dynamic: one symmetric scale per row and K block, from the block's largest value. Static: one
//! calibrated step for every row and block, values beyond its range clamped.

use super::blocks::{KBlocks, K_ALIGN};
use super::simd::Int8Simd;
use crate::error::{QuantError, Result};

/// What the micro-kernel needs of one row's block besides its codes.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct BlockParams {
    /// The scale; 0 for an all-zero block.
    pub scale: f32,
    /// The sum of the codes.
    pub sum: i32,
    /// `-zero_offset * sum` for the weights' zero offset when all columns share one (0 otherwise): the exact
    /// integer correction a tile starts its dot products from.
    pub correction: i32,
}

/// Activations of an `[m, k]` matrix quantized per row and block.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuantizedActivations {
    /// Codes, `m * padded_k` bytes, row-major; each row's padding is 0.
    pub codes: Vec<i8>,
    /// Parameters of each block and row, `[block][m]`.
    pub params: Vec<BlockParams>,
}

impl QuantizedActivations {
    /// Sizes the buffers for `m` rows, keeping their allocations: a buffer reused across calls does not fault in
    /// fresh pages each time. Contents are left as they are; the quantizer writes every byte of every row.
    pub fn resize(&mut self, m: usize, blocks: &KBlocks) {
        self.codes.resize(m * blocks.padded_k, 0);
        self.params.resize(m * blocks.count, BlockParams::default());
    }
}

/// Where the quantizer writes the rows it is given.
pub(crate) struct RowsOut<'a> {
    /// Codes of the rows, `rows * padded_k` bytes.
    pub codes: &'a mut [i8],
    /// The first row's parameters of block 0; those of row `r` and block `g` are `g * stride + r` after it.
    pub params: *mut BlockParams,
    /// Rows of the whole parameter buffer.
    pub stride: usize,
    /// The weights' zero offset shared by every column, for [`BlockParams::correction`] (0 if none is shared).
    pub zero_offset: i32,
}

/// How far ahead of the block being quantized its input is prefetched, in values.
const PREFETCH_AHEAD: usize = 1024;

/// How a layer's input rows are turned into codes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InputQuant<'a> {
    /// A factor per input channel that each value is multiplied by first (SmoothQuant's `1 / s`), when given.
    pub input_scale: Option<&'a [f32]>,
    /// The calibrated step of static quantization; `None` for dynamic scales.
    pub step: Option<f32>,
}

/// Quantizes rows `x` (each `blocks.k` long) into `out`, with the vector primitives of `S`.
///
/// Dynamic (`input.step` is `None`): each row is first multiplied value by value by `input.input_scale` when
/// given (one product per value, rounded once, at every level); then per block `scale = max|x| / 127`,
/// `q = round_half_even(x * (127 / max|x|))`.
///
/// Static: `scale = step` for every block, `q = round_half_even(clamp(x * f_j, -127, 127))` with one factor per
/// input channel, `f_j = input_scale_j / step` (or `1 / step`), each rounded once in f32.
///
/// Errors on NaN or infinite input (or, dynamic, products); `first_row` numbers the rows in the error.
///
/// # Safety
/// The caller runs with `S`'s instruction set available, and `out.params` is valid for the rows' parameters.
#[inline(always)]
pub(crate) unsafe fn quantize_rows<S: Int8Simd>(
    x: &[f32],
    blocks: &KBlocks,
    first_row: usize,
    input: InputQuant<'_>,
    out: RowsOut<'_>,
) -> Result<()> {
    let step = input.step.map(|step| {
        let factors: Vec<f32> = match input.input_scale {
            Some(scale) => scale.iter().map(|s| s / step).collect(),
            None => vec![1.0 / step; blocks.k],
        };
        (step, factors)
    });
    let scales = match &step {
        Some((step, factors)) => BlockScales::Static { step: *step, factors },
        None => BlockScales::Dynamic,
    };
    // A scaled row is written here, where it stays in L1 while it is quantized.
    let scaling = input.input_scale.filter(|_| step.is_none());
    let mut scaled = vec![0f32; if scaling.is_some() { blocks.k } else { 0 }];
    for (r, (row, row_codes)) in x.chunks_exact(blocks.k).zip(out.codes.chunks_exact_mut(blocks.padded_k)).enumerate() {
        let params = |g: usize| out.params.add(g * out.stride + r);
        let row = match scaling {
            Some(scale) => {
                scaled.iter_mut().zip(row.iter().zip(scale)).for_each(|(out, (x, s))| *out = x * s);
                &scaled[..]
            }
            None => row,
        };
        quantize_row::<S>(row, blocks, row_codes, params, out.zero_offset, scales).map_err(|at| {
            QuantError::NonFinite { what: "layer input", index: (first_row + r) * blocks.k + at, value: row[at] }
        })?;
    }
    Ok(())
}

/// Where a block's scale comes from.
#[derive(Clone, Copy)]
enum BlockScales<'a> {
    /// The block's own largest value.
    Dynamic,
    /// One calibrated step, with the row's factors (`blocks.k` of them).
    Static { step: f32, factors: &'a [f32] },
}

/// Quantizes one row block by block, its padding included; on a non-finite value returns its index in the row.
///
/// # Safety
/// The caller is compiled with `S`'s instruction set; `codes` holds the padded row and `params(g)` is valid for
/// writing block `g`'s parameters, for every block.
#[inline(always)]
unsafe fn quantize_row<S: Int8Simd>(
    row: &[f32],
    blocks: &KBlocks,
    codes: &mut [i8],
    params: impl Fn(usize) -> *mut BlockParams,
    zero_offset: i32,
    scales: BlockScales<'_>,
) -> std::result::Result<(), usize> {
    debug_assert!(S::LANES <= K_ALIGN && codes.len() == blocks.padded_k);
    let non_finite =
        |start: usize, len: usize| start + row[start..start + len].iter().position(|v| !v.is_finite()).unwrap_or(0);
    let store = |g: usize, (scale, sum): (f32, i32)| {
        *params(g) = BlockParams { scale, sum, correction: zero_offset.wrapping_mul(sum).wrapping_neg() };
    };
    let factors_at = |start: usize| match scales {
        BlockScales::Static { step, factors } => Some((step, factors.as_ptr().add(start))),
        BlockScales::Dynamic => None,
    };
    // Every block but the last is `block` long, a multiple of 16 values when there are several: whole vectors.
    let last = blocks.count - 1;
    for g in 0..last {
        let start = g * blocks.block;
        // The input streams from memory once; asking for it a few blocks ahead keeps more lines in flight.
        super::prefetch::prefetch(row.as_ptr().wrapping_add(start + PREFETCH_AHEAD).cast(), blocks.block * 4);
        let out = codes.as_mut_ptr().add(start);
        let vectors = blocks.block / S::LANES;
        let quantized = quantize_block::<S>(row.as_ptr().add(start), vectors, None, factors_at(start), out);
        store(g, quantized.ok_or_else(|| non_finite(start, blocks.block))?);
    }
    // The last block: whole vectors straight from the row, then a partial one from a zero-padded copy (its padding
    // quantizes to code 0), then zeros up to the stored length.
    let (start, len) = (blocks.offset(last), blocks.len(last));
    super::prefetch::prefetch(row.as_ptr().wrapping_add(start + PREFETCH_AHEAD).cast(), len * 4);
    let (whole, rest) = (len / S::LANES, len % S::LANES);
    let padded = |values: &[f32]| {
        let mut tail = [0f32; K_ALIGN];
        tail[..rest].copy_from_slice(&values[start + len - rest..start + len]);
        tail
    };
    let tail = (rest > 0).then(|| padded(row));
    let factor_tail = match scales {
        BlockScales::Static { factors, .. } if rest > 0 => Some(padded(factors)),
        _ => None,
    };
    let out = &mut codes[start..start + blocks.padded_len(last)];
    let tail = tail.as_ref().map(|t| (t, factor_tail.as_ref()));
    let quantized = quantize_block::<S>(row.as_ptr().add(start), whole, tail, factors_at(start), out.as_mut_ptr());
    store(last, quantized.ok_or_else(|| non_finite(start, len))?);
    out[(whole + usize::from(rest > 0)) * S::LANES..].fill(0);
    Ok(())
}

/// Quantizes one block, `vectors` whole vectors at `x` followed by `tail` (a zero-padded partial vector, with the
/// factors' zero-padded tail when static) if any, into codes at `out`; returns its scale and code sum, or `None`
/// if it holds NaN or an infinity. `statics` is the step and the block's first factor, for static scales.
///
/// # Safety
/// The caller is compiled with `S`'s instruction set; `x` (and the factors) hold `vectors` vectors and `out` room
/// for their codes and the tail's.
#[inline(always)]
unsafe fn quantize_block<S: Int8Simd>(
    x: *const f32,
    vectors: usize,
    tail: Option<(&[f32; K_ALIGN], Option<&[f32; K_ALIGN]>)>,
    statics: Option<(f32, *const f32)>,
    out: *mut i8,
) -> Option<(f32, i32)> {
    let mut max_bits = S::zero_i();
    for i in 0..vectors {
        max_bits = S::abs_bits_max(max_bits, x.add(i * S::LANES));
    }
    if let Some((tail, _)) = tail {
        max_bits = S::abs_bits_max(max_bits, tail.as_ptr());
    }
    let max_bits = S::max_lane(max_bits);
    if max_bits >= f32::INFINITY.to_bits() {
        return None;
    }
    let mut sums = S::zero_i();
    if let Some((step, factors)) = statics {
        // Static: each value times its channel's factor, clamped to the codes' range.
        let code = |x: *const f32, f: *const f32| S::clamp_f(S::mul_f(S::load_f(x), S::load_f(f)), 127.0);
        for i in 0..vectors {
            sums = S::quantize_store(code(x.add(i * S::LANES), factors.add(i * S::LANES)), out.add(i * S::LANES), sums);
        }
        if let Some((tail, Some(factor_tail))) = tail {
            sums = S::quantize_store(code(tail.as_ptr(), factor_tail.as_ptr()), out.add(vectors * S::LANES), sums);
        }
        return Some((step, S::sum_lanes(sums)));
    }
    let absmax = f32::from_bits(max_bits);
    // |x * inv| <= 127 (1 + 2^-24)^2 < 127.5 (two roundings of 127 |x| / absmax): codes stay in [-127, 127].
    let inv = S::splat_f(if absmax > 0.0 { 127.0 / absmax } else { 0.0 });
    for i in 0..vectors {
        sums = S::quantize_store(S::mul_f(S::load_f(x.add(i * S::LANES)), inv), out.add(i * S::LANES), sums);
    }
    if let Some((tail, _)) = tail {
        sums = S::quantize_store(S::mul_f(S::load_f(tail.as_ptr()), inv), out.add(vectors * S::LANES), sums);
    }
    Some((absmax / 127.0, S::sum_lanes(sums)))
}
