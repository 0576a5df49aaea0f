//! The micro-kernel, written once over [`Int8Simd`]: one `ROWS x NV * LANES` tile of the output over all K blocks.
//!
//! Per block it accumulates exact i32 dot products, then folds them into f32 accumulators with fused multiply-adds
//! in a fixed order; every instruction set rounds those the same way, so all give bit-identical results.

use super::activations::BlockParams;
use super::prefetch::prefetch;
use super::simd::Int8Simd;
use crate::activation::Activation;

/// Everything one tile needs; pointers are valid for the tile's rows, panel and columns.
pub(crate) struct Tile {
    /// The activation codes of the tile's first row.
    pub a: *const i8,
    /// Bytes from one activation row to the next.
    pub a_row_stride: usize,
    /// Activation block parameters of the first row and block 0; row `m`'s of block `g` are
    /// `g * a_params_stride + m` after it.
    pub a_params: *const BlockParams,
    /// Rows of the activation parameter buffer.
    pub a_params_stride: usize,
    /// The panel's codes.
    pub w: *const u8,
    /// The panel's scales, `[param block][nr]`.
    pub w_scales: *const f32,
    /// The panel's zero offsets, `[param block][nr]`.
    pub w_zero_offsets: *const i16,
    /// The panel's minimums, `[param block][nr]` (read only when the geometry says the weights have them).
    pub w_mins: *const f32,
    /// The panel's per-block scales in f16, `[param block][nr]`, when the geometry says so.
    pub w_half_scales: *const u16,
    /// The panel's minimums in f16, `[param block][nr]`, when the geometry says so.
    pub w_half_mins: *const u16,
    /// Bias of the panel's columns (zeros where the layer has none), padded to `nr`.
    pub bias: *const f32,
    /// Output of the first row and column, rows `ldo` floats apart.
    pub out: *mut f32,
    /// Stride between output rows.
    pub ldo: usize,
    /// Valid columns in this panel (`nr` except in the last panel).
    pub cols: usize,
    /// The K blocks this call covers; K is walked in chunks so that a panel's chunk stays in L1.
    pub blocks: std::ops::Range<usize>,
    /// Partial sums of the tile between chunks, `[ROWS][nr]`: read unless the chunk is the first, written unless
    /// it is the last (then the result goes to `out`).
    pub partial: *mut f32,
    /// Whether the tile is the first to read its panel's chunk, which then streams from memory and is worth asking
    /// for ahead; the tiles after it find the chunk in cache.
    pub streams_weights: bool,
    /// Memory to bring into L2 while the tile computes (the next row chunk's input), one cache line per four
    /// steps, up to `fetch_end`; empty when equal.
    pub fetch: *const u8,
    /// End of `fetch`.
    pub fetch_end: *const u8,
    /// Applied to the outputs as they are stored, when given.
    pub activation: Option<Activation>,
}

/// What every tile of one matmul shares: block geometry, the form of the weight parameters and the lookup table.
pub(crate) struct BlockGeometry<S: Int8Simd> {
    /// Number of K blocks.
    pub count: usize,
    /// Start offset of each block in a stored row is `g * block`.
    pub block: usize,
    /// Stored (padded) length of the last block.
    pub last_padded: usize,
    /// Bits per weight code.
    pub bits: usize,
    /// Whether weight scales and zero offsets are per block (else per column, applied once at the end).
    pub per_block: bool,
    /// Whether every column and block has the same zero offset (symmetric weights): the activations' block
    /// parameters then hold its correction.
    pub shared_zero_offset: bool,
    /// Whether the weights have per-block minimums (`w = (u - z) * scale + min`).
    pub has_mins: bool,
    /// Whether per-block scales and minimums are f16.
    pub half: bool,
    /// The table 4-bit codes are looked up in (from [`Int8Simd::load_table16`], built once per matmul), when the
    /// weights have one.
    pub lookup: Option<S::I>,
}

/// Computes one tile. `BITS` is the weight code width (8, 4 or 2); with `LOOKUP` (4-bit codes only), each code is
/// replaced by its 8-bit code in `geo.lookup`, multiplied as 8-bit codes are.
///
/// Per block `g`: `exact = -zero_offset * sum(x) + dot` (i32, exact), then
/// `acc = fma(exact as f32, x_scale, acc)` with per-column weight scales, or
/// `acc = fma(exact as f32, x_scale * w_scale, acc)` with per-block ones, then with minimums
/// `acc = fma(x_scale * sum(x) as f32, min, acc)`. At the end
/// `out = fma(acc, w_scale, bias)` (per column) or `fma(acc, 1, bias)` (per block).
///
/// # Safety
/// the CPU supports the instruction set `S` was built for (the caller runs inside a function compiled with its target features); every pointer of `t` is valid for the tile's `ROWS` rows, its panel and its K blocks, and no
/// other thread touches the tile's output or partial sums meanwhile.
#[inline(always)]
pub(crate) unsafe fn tile<S: Int8Simd, const ROWS: usize, const NV: usize, const BITS: usize, const LOOKUP: bool>(
    t: &Tile,
    geo: &BlockGeometry<S>,
) {
    let nr = NV * S::LANES;
    let table = match geo.lookup {
        Some(table) => table,
        None => S::zero_i(),
    };
    let mut fetch = Fetch { next: t.fetch, end: t.fetch_end };
    let mut accf = [[S::zero_f(); NV]; ROWS];
    if t.blocks.start > 0 {
        for (m, row) in accf.iter_mut().enumerate() {
            *row = std::array::from_fn(|v| S::load_f(t.partial.add(m * nr + v * S::LANES)));
        }
    }
    // Blocks lie end to end in both operands, so one cursor walks them all.
    let start = t.blocks.start * geo.block;
    let mut cursor = Cursor::<ROWS> {
        rows: std::array::from_fn(|m| opaque(t.a.add(start + m * t.a_row_stride))),
        w: t.w.add(start * nr * BITS / 8),
    };
    for g in t.blocks.clone() {
        let padded = if g + 1 == geo.count { geo.last_padded } else { geo.block };
        let params = if geo.per_block { g * nr } else { 0 };
        let x_params = t.a_params.add(g * t.a_params_stride);
        // The integer sums start at the zero-point correction `-zero_offset * sum(x)`, so that after the dot
        // products they hold the exact `sum (u - z) * q` with no subtraction per accumulator. A shared zero
        // offset's correction was computed with the codes.
        let mut acc: [[S::I; NV]; ROWS] = match geo.shared_zero_offset {
            true => std::array::from_fn(|m| [S::splat_i((*x_params.add(m)).correction); NV]),
            false => {
                let zero_offsets: [S::I; NV] =
                    std::array::from_fn(|v| S::load_i16(t.w_zero_offsets.add(params + v * S::LANES)));
                std::array::from_fn(|m| {
                    let x_sum = S::splat_i((*x_params.add(m)).sum);
                    std::array::from_fn(|v| S::sub_mul_i(S::zero_i(), zero_offsets[v], x_sum))
                })
            }
        };
        match t.streams_weights {
            true => dot_block::<S, ROWS, NV, BITS, LOOKUP, true>(&mut cursor, table, padded / 4, &mut acc, &mut fetch),
            false => {
                dot_block::<S, ROWS, NV, BITS, LOOKUP, false>(&mut cursor, table, padded / 4, &mut acc, &mut fetch)
            }
        }

        let w_scales: [S::F; NV] = match (geo.per_block, geo.half) {
            (true, false) => std::array::from_fn(|v| S::load_f(t.w_scales.add(params + v * S::LANES))),
            (true, true) => std::array::from_fn(|v| S::load_f16(t.w_half_scales.add(params + v * S::LANES))),
            (false, _) => [S::zero_f(); NV],
        };
        for m in 0..ROWS {
            let x_scale = S::splat_f((*x_params.add(m)).scale);
            for v in 0..NV {
                let scale = if geo.per_block { S::mul_f(x_scale, w_scales[v]) } else { x_scale };
                accf[m][v] = S::fma_f(S::to_f(acc[m][v]), scale, accf[m][v]);
            }
        }
        if geo.has_mins {
            let mins: [S::F; NV] = match geo.half {
                true => std::array::from_fn(|v| S::load_f16(t.w_half_mins.add(params + v * S::LANES))),
                false => std::array::from_fn(|v| S::load_f(t.w_mins.add(params + v * S::LANES))),
            };
            for (m, row) in accf.iter_mut().enumerate() {
                let BlockParams { scale, sum, .. } = *x_params.add(m);
                let x_total = scale * sum as f32;
                for (acc, &min) in row.iter_mut().zip(&mins) {
                    *acc = S::fma_f(S::splat_f(x_total), min, *acc);
                }
            }
        }
    }
    if t.blocks.end < geo.count {
        for (m, row) in accf.iter().enumerate() {
            for (v, &acc) in row.iter().enumerate() {
                S::store_f(t.partial.add(m * nr + v * S::LANES), acc);
            }
        }
    } else {
        store_tile::<S, ROWS, NV>(t, geo, &accf);
    }
}

/// Applies the final scale and bias and writes the tile, clipping to `cols` columns.
///
/// # Safety
/// As [`tile`].
#[inline(always)]
unsafe fn store_tile<S: Int8Simd, const ROWS: usize, const NV: usize>(
    t: &Tile,
    geo: &BlockGeometry<S>,
    accf: &[[S::F; NV]; ROWS],
) {
    let final_scales: [S::F; NV] = match geo.per_block {
        true => [S::splat_f(1.0); NV],
        false => std::array::from_fn(|v| S::load_f(t.w_scales.add(v * S::LANES))),
    };
    let bias: [S::F; NV] = std::array::from_fn(|v| S::load_f(t.bias.add(v * S::LANES)));
    for (m, row) in accf.iter().enumerate() {
        let values = std::array::from_fn(|v| S::fma_f(row[v], final_scales[v], bias[v]));
        store_output_row::<S, NV>(values, t.out.add(m * t.ldo), t.cols, t.activation);
    }
}

/// Writes one row of a tile's outputs, the first `cols` of its `NV` vectors (all of them in a full panel), then
/// applies `activation` to them while they are in L1.
///
/// # Safety
/// the CPU supports the instruction set `S` was built for (the caller runs inside a function compiled with its target features); `out` is valid for writes of `cols` floats (`cols` at most `NV * S::LANES`), which no other
/// thread touches meanwhile.
#[inline(always)]
pub(crate) unsafe fn store_output_row<S: Int8Simd, const NV: usize>(
    values: [S::F; NV],
    out: *mut f32,
    cols: usize,
    activation: Option<Activation>,
) {
    if cols == NV * S::LANES {
        for (v, &value) in values.iter().enumerate() {
            S::store_f(out.add(v * S::LANES), value);
        }
    } else {
        let mut clipped = [0f32; 64];
        for (v, &value) in values.iter().enumerate() {
            S::store_f(clipped.as_mut_ptr().add(v * S::LANES), value);
        }
        std::ptr::copy_nonoverlapping(clipped.as_ptr(), out, cols);
    }
    if let Some(activation) = activation {
        activation.apply_all(std::slice::from_raw_parts_mut(out, cols));
    }
}

/// Where a tile's dot products are: each activation row's next byte and the panel's next code byte.
struct Cursor<const ROWS: usize> {
    rows: [*const i8; ROWS],
    w: *const u8,
}

/// Accumulates `steps` steps of 4 K values (a multiple of 4) from `at`, and moves it past them:
/// `acc[m][v] += dot(row m, panel vector v)`; with `LOOKUP`, 4-bit codes are first looked up in `table`; with
/// `PREFETCH`, weights are asked for ahead of their use.
///
/// # Safety
/// the CPU supports the instruction set `S` was built for (the caller runs inside a function compiled with its target features); the rows and the panel at `at` hold `4 * steps` more K values.
#[inline(always)]
unsafe fn dot_block<
    S: Int8Simd,
    const ROWS: usize,
    const NV: usize,
    const BITS: usize,
    const LOOKUP: bool,
    const PREFETCH: bool,
>(
    at: &mut Cursor<ROWS>,
    table: S::I,
    steps: usize,
    acc: &mut [[S::I; NV]; ROWS],
    fetch: &mut Fetch,
) {
    // Codes of one load: 4 K values of each of the panel's columns.
    let load_bytes = NV * S::LANES * 4;
    // A small tile (decoding's one row) has few accumulators, so that its dot products wait on each other: the
    // high 4-bit fields then go to accumulators of their own, added in at the end, which halves each chain.
    let split = BITS == 4 && ROWS * NV <= 4;
    let mut high = [[S::zero_i(); NV]; ROWS];
    // One load of codes holds `8 / BITS` steps.
    let steps_per_load = 8 / BITS;
    // Four steps at a time (blocks are padded to 16 values), unrolled so that loop overhead stays off the
    // dot-product ports' critical path; row and weight pointers advance once per four steps, and each access inside
    // is at a constant offset from them.
    for _ in (0..steps).step_by(4) {
        fetch.one_line();
        let (rows, w) = (&at.rows, at.w);
        let loads = 4 / steps_per_load;
        if PREFETCH {
            prefetch(w.wrapping_add(PREFETCH_LOADS * load_bytes), loads * load_bytes);
        }
        for l in 0..loads {
            let raw: [S::I; NV] = std::array::from_fn(|v| S::load_bytes(w.add(l * load_bytes + v * S::LANES * 4)));
            let first = 4 * l * steps_per_load;
            match BITS {
                8 => step::<S, ROWS, NV, true>(rows, first, &raw, acc),
                4 => {
                    // Looked-up codes are 8-bit codes: they take the wide dot product.
                    let decode = |code: S::I| if LOOKUP { S::lookup16(table, code) } else { code };
                    step::<S, ROWS, NV, LOOKUP>(rows, first, &raw.map(|r| decode(S::bit_field::<0, 4>(r))), acc);
                    let high_acc = if split { &mut high } else { &mut *acc };
                    step::<S, ROWS, NV, LOOKUP>(
                        rows,
                        first + 4,
                        &raw.map(|r| decode(S::bit_field::<4, 4>(r))),
                        high_acc,
                    );
                }
                2 => {
                    step::<S, ROWS, NV, false>(rows, first, &raw.map(|r| S::bit_field::<0, 2>(r)), acc);
                    step::<S, ROWS, NV, false>(rows, first + 4, &raw.map(|r| S::bit_field::<2, 2>(r)), acc);
                    step::<S, ROWS, NV, false>(rows, first + 8, &raw.map(|r| S::bit_field::<4, 2>(r)), acc);
                    step::<S, ROWS, NV, false>(rows, first + 12, &raw.map(|r| S::bit_field::<6, 2>(r)), acc);
                }
                _ => unreachable!("bit widths are 2, 4 or 8"),
            }
        }
        at.rows = at.rows.map(|r| r.add(16));
        at.w = w.add(loads * load_bytes);
    }
    if split {
        for (row, high) in acc.iter_mut().zip(&high) {
            for (acc, &high) in row.iter_mut().zip(high) {
                *acc = S::add_i(*acc, high);
            }
        }
    }
}

/// Weight loads fetched ahead: far enough to hide a trip to memory at a few rows per tile (short inputs), where
/// the kernel otherwise waits on every new line of the panel.
const PREFETCH_LOADS: usize = 16;

/// `p`, hidden from the optimizer: row pointers computed as `base + m * stride` are otherwise folded back into that
/// sum and re-derived at every step (an add per row and step), instead of living in their own registers.
#[inline(always)]
pub(crate) fn opaque<T>(p: *const T) -> *const T {
    p.with_addr(opaque_addr(p.addr()))
}

/// `addr`, through an empty assembly block that claims to change it.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(always)]
fn opaque_addr(mut addr: usize) -> usize {
    // SAFETY: the block is empty; it reads and writes nothing.
    unsafe { std::arch::asm!("/* {0} */", inout(reg) addr, options(pure, nomem, nostack, preserves_flags)) };
    addr
}

/// `addr`, through [`std::hint::black_box`] where inline assembly is not available.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[inline(always)]
fn opaque_addr(addr: usize) -> usize {
    std::hint::black_box(addr)
}

/// A range of memory brought into L2 (not L1, where the tile's operands live) a cache line at a time, spread over
/// the dot products: a burst of misses would fill the core's line fill buffers and stall them.
pub(crate) struct Fetch {
    next: *const u8,
    end: *const u8,
}

impl Fetch {
    /// Asks for the next line, if any is left.
    #[inline(always)]
    fn one_line(&mut self) {
        if self.next < self.end {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch is a hint; it reads nothing architecturally and never faults.
            unsafe {
                std::arch::x86_64::_mm_prefetch(self.next.cast::<i8>(), std::arch::x86_64::_MM_HINT_T1)
            };
            self.next = self.next.wrapping_add(64);
        }
    }
}

/// One step of 4 K values: row `m`'s 4 activation bytes are at `rows[m] + offset`.
///
/// # Safety
/// the CPU supports the instruction set `S` was built for (the caller runs inside a function compiled with its target features); each `rows[m] + offset` is valid for reading 4 bytes.
#[inline(always)]
unsafe fn step<S: Int8Simd, const ROWS: usize, const NV: usize, const WIDE: bool>(
    rows: &[*const i8; ROWS],
    offset: usize,
    w: &[S::I; NV],
    acc: &mut [[S::I; NV]; ROWS],
) {
    for (row, &a) in acc.iter_mut().zip(rows) {
        let x = S::broadcast4(a.add(offset));
        for (acc, &w) in row.iter_mut().zip(w) {
            *acc = if WIDE { S::dot_wide(*acc, w, x) } else { S::dot_narrow(*acc, w, x) };
        }
    }
}
