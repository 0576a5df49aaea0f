//! The one GEMM driver: quantizes activations, splits the output into tasks of row chunks and panel ranges,
//! and runs the micro-kernel of the chosen level over each.

use std::ops::Range;

use super::activations::{quantize_rows, BlockParams, InputQuant, QuantizedActivations, RowsOut};
use super::blocks::KBlocks;
use super::float::FloatJob;
use super::float_tile::{float_tile, FloatTile};
use super::isa::Isa;
use super::microkernel::{tile, BlockGeometry, Tile};
use super::packed::{PackedWeights, PanelLayout};
use super::reference::Reference;
use super::simd::Int8Simd;
use crate::activation::Activation;
use crate::error::{QuantError, Result};
use crate::quant::Bits;
use crate::threads::{num_threads, parallel_for, SharedMut};

/// Activation bytes a task's row chunk may take, so that it stays in L2 while the task walks its panels.
const ROW_CHUNK_BYTES: usize = 192 * 1024;

/// Input bytes (f32) of one row chunk when quantizing is streamed into the multiplication: small enough that the
/// next chunk's input, fetched into L2 while this chunk's tiles run, leaves room there for the weights.
const STREAM_INPUT_BYTES: usize = 128 * 1024;

/// Weights (`k * n`) below which quantizing is not streamed (measured: 384 x 384 loses, 384 x 1536 gains).
const STREAM_MIN_WEIGHTS: usize = 256 * 1024;

/// K values walked at a time when several row tiles share the panels: a panel's share of them (at most 16 KB of
/// codes) stays in L1 while the row tiles pass.
const K_CHUNK: usize = 512;

thread_local! {
    /// The calling thread's quantized activations, reused by its matmuls: a model's layers then quantize into the
    /// same pages call after call instead of faulting in fresh ones (several MB for long inputs). It keeps the
    /// largest size the thread has needed.
    static ACTIVATIONS: std::cell::RefCell<QuantizedActivations> = std::cell::RefCell::default();
}

/// What every task of one matmul reads.
pub(crate) struct Job<'a> {
    w: &'a PackedWeights,
    acts: ActivationBuffers,
    /// Bias padded to whole panels (zeros where the layer has none).
    bias: &'a [f32],
    /// Applied to the outputs as they are stored, when given.
    activation: Option<Activation>,
    out: SharedMut<f32>,
}

/// The activation buffers of one matmul, shared by its tasks: quantizing tasks write disjoint rows, and the
/// multiplying tasks that follow only read.
#[derive(Clone, Copy)]
struct ActivationBuffers {
    codes: SharedMut<i8>,
    params: SharedMut<BlockParams>,
    /// Rows of the buffers.
    rows: usize,
}

impl ActivationBuffers {
    fn new(acts: &mut QuantizedActivations, rows: usize) -> Self {
        Self { codes: SharedMut(acts.codes.as_mut_ptr()), params: SharedMut(acts.params.as_mut_ptr()), rows }
    }
}

/// Declares a level's entry points: functions compiled with its target features, into which the generic driver,
/// micro-kernel and quantizer are inlined, so that each level gets code vectorized for it.
macro_rules! level {
    (
        $module:ident, $simd:ty, mr = $mr:literal, nv = $nv:literal, wide_mr = $wmr:literal, wide_nv = $wnv:literal,
        float_mr = $fmr:literal, float_nv = $fnv:literal $(, features = $features:literal)?
    ) => {
        mod $module {
            use super::*;

            /// Rows of the micro-tile of 4- and 2-bit codes.
            pub(super) const MR: usize = $mr;
            /// Columns of the micro-tile of 4- and 2-bit codes.
            pub(super) const NR: usize = $nv * <$simd as Int8Simd>::LANES;
            /// Rows of the micro-tile of 8-bit codes.
            pub(super) const WIDE_MR: usize = $wmr;
            /// Columns of the micro-tile of 8-bit codes.
            pub(super) const WIDE_NR: usize = $wnv * <$simd as Int8Simd>::LANES;
            /// Rows of the float micro-tile.
            pub(super) const FLOAT_MR: usize = $fmr;
            /// Columns of the float micro-tile (and of a float panel).
            pub(super) const FLOAT_NR: usize = $fnv * <$simd as Int8Simd>::LANES;

            /// Runs the float tiles of `rows` x `panels`.
            ///
            /// # Safety
            /// The CPU supports this level, `job.w` is packed for it, and no other thread writes these tiles.
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn run_float(job: &FloatJob<'_>, rows: Range<usize>, panels: Range<usize>) {
                run_float_tiles::<$simd, $fmr, $fnv>(job, rows, panels)
            }

            /// Runs the tiles of `rows` x `panels`.
            ///
            /// # Safety
            /// The CPU supports this level, `job.w` is packed for it, the rows' activations are quantized, and no
            /// other thread writes these tiles.
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn run(job: &Job<'_>, rows: Range<usize>, panels: Range<usize>, fetch: &[f32]) {
                match job.w.bits {
                    Bits::B8 => run_tiles::<$simd, $wmr, $wnv, true>(job, rows, panels, fetch),
                    _ => run_tiles::<$simd, $mr, $nv, false>(job, rows, panels, fetch),
                }
            }

            /// Quantizes activation rows.
            ///
            /// # Safety
            /// The CPU supports this level.
            $(#[target_feature(enable = $features)])?
            pub(super) unsafe fn quantize(
                x: &[f32],
                blocks: &KBlocks,
                first_row: usize,
                input: InputQuant<'_>,
                out: RowsOut<'_>,
            ) -> Result<()> {
                quantize_rows::<$simd>(x, blocks, first_row, input, out)
            }

            /// How this level wants weights of `bits`-bit codes packed.
            pub(super) fn layout(bits: Bits) -> PanelLayout {
                PanelLayout {
                    nr: match bits {
                        Bits::B8 => WIDE_NR,
                        _ => NR,
                    },
                    wide_xor: <$simd as Int8Simd>::WIDE_XOR,
                    wide_offset: <$simd as Int8Simd>::WIDE_OFFSET,
                }
            }
        }
    };
}

// Integer tiles: 4-bit and 2-bit codes are unpacked in registers, which 6 x 2 vectors leave room for; 8-bit codes
// go straight in, and on AVX-512 8 x 3 vectors (24 sums, 3 weight vectors, a broadcast) take 11 loads per 24 dot
// products instead of 8 per 12 (measured 1.1-1.3x at BERT's shapes, Intel Xeon). 4-bit codes at 8 x 3 ran 4x
// slower: their unpacking spills.
// Float tiles: 6 x 2 vectors keeps 12 sums, 2 weight vectors and a broadcast in the 16 registers of AVX2, with
// two weight loads and six broadcasts per twelve multiply-adds; AVX-512's 32 registers hold 8 x 3 (24 sums, 3
// weight vectors, a broadcast): 11 loads per 24 multiply-adds, which keeps both FMA units of an Intel core busy
// (measured at K = 384: 90% of the FMA peak against 70% for 6 x 2).
level!(reference_level, Reference, mr = 4, nv = 1, wide_mr = 4, wide_nv = 1, float_mr = 4, float_nv = 1);
#[cfg(target_arch = "x86_64")]
level!(
    avx2_level,
    super::super::x86::avx2::Avx2,
    mr = 4,
    nv = 2,
    wide_mr = 4,
    wide_nv = 2,
    float_mr = 6,
    float_nv = 2,
    features = "avx2,fma,f16c"
);
#[cfg(target_arch = "x86_64")]
level!(
    avx512_level,
    super::super::x86::avx512::Avx512Vnni,
    mr = 6,
    nv = 2,
    wide_mr = 8,
    wide_nv = 3,
    float_mr = 8,
    float_nv = 3,
    features = "avx512f,avx512bw,avx512vl,avx512vnni"
);

/// Calls `$f` in the entry module of `$isa`.
macro_rules! on_level {
    ($isa:expr, $module:ident => $call:expr) => {
        match $isa {
            Isa::Reference => {
                use reference_level as $module;
                $call
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                use avx2_level as $module;
                $call
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                use avx512_level as $module;
                $call
            }
            #[cfg(not(target_arch = "x86_64"))]
            other => unreachable!("{other} is never supported on this target"),
        }
    };
}

impl Isa {
    /// How weights of `bits`-bit codes are packed for this level.
    pub(crate) fn panel_layout(self, bits: Bits) -> PanelLayout {
        on_level!(self, level => level::layout(bits))
    }

    /// Rows of this level's micro-tile for `bits`-bit codes.
    fn tile_rows(self, bits: Bits) -> usize {
        on_level!(self, level => match bits {
            Bits::B8 => level::WIDE_MR,
            _ => level::MR,
        })
    }

    /// Columns of this level's float panels.
    pub(crate) fn float_panel_width(self) -> usize {
        on_level!(self, level => level::FLOAT_NR)
    }

    /// Rows of this level's float micro-tile.
    pub(crate) fn float_tile_rows(self) -> usize {
        on_level!(self, level => level::FLOAT_MR)
    }

    /// Runs the float tiles of `rows` x `panels` of `job`.
    ///
    /// # Safety
    /// The CPU supports this level, `job.w` is packed for it, and no other thread writes these tiles meanwhile.
    pub(crate) unsafe fn run_float(self, job: &FloatJob<'_>, rows: Range<usize>, panels: Range<usize>) {
        on_level!(self, level => level::run_float(job, rows, panels))
    }
}

/// Splits an `m`-row output of `panels` panels into tasks of row chunks and panel ranges and runs `task` on each,
/// in parallel: a row chunk's input (`row_bytes` a row) stays in L2 while its task walks its panels, and there are
/// enough tasks for every thread even when there are few rows.
pub(crate) fn for_each_task(
    m: usize,
    mr: usize,
    row_bytes: usize,
    panels: usize,
    task: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let rows_per_chunk = (ROW_CHUNK_BYTES / row_bytes).max(mr).next_multiple_of(mr).min(m.next_multiple_of(mr));
    let row_chunks = m.div_ceil(rows_per_chunk);
    let wanted_tasks = 4 * num_threads();
    let panel_splits = wanted_tasks.div_ceil(row_chunks).clamp(1, panels);
    let panels_per_task = panels.div_ceil(panel_splits);
    let panel_tasks = panels.div_ceil(panels_per_task);
    parallel_for(row_chunks * panel_tasks, |t| {
        let (rc, pc) = (t / panel_tasks, t % panel_tasks);
        let rows = rc * rows_per_chunk..((rc + 1) * rows_per_chunk).min(m);
        task(rows, pc * panels_per_task..((pc + 1) * panels_per_task).min(panels));
    });
}

impl PackedWeights {
    /// `y = x W^T + bias` for `x` of `m` rows of `k` values, row-major; returns `m x n` values, row-major.
    ///
    /// Activations are quantized to int8 per row and K block on the fly; each row's result depends on that row
    /// alone. Errors on NaN or infinite input, or on sizes that do not match.
    pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Result<Vec<f32>> {
        check_matmul(x, m, self.blocks.k, self.n, bias)?;
        // SAFETY: the matmul writes every one of the `m * n` outputs.
        unsafe { with_fresh_output(m * self.n, |out| self.matmul_to(x, m, bias, None, out)) }
    }

    /// [`PackedWeights::matmul`] into `out` (`m x n` values, overwritten), with `activation` applied to each
    /// output as it is stored: a caller that keeps its buffers from call to call spares the fresh pages a new
    /// output costs, and an activation here spares a pass over the output.
    pub fn matmul_into(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        activation: Option<Activation>,
        out: &mut [f32],
    ) -> Result<()> {
        check_matmul(x, m, self.blocks.k, self.n, bias)?;
        check_output(out, m, self.n)?;
        // SAFETY: `out` holds `m * n` floats.
        unsafe { self.matmul_to(x, m, bias, activation, out.as_mut_ptr()) }
    }

    /// The matmul of checked operands into `out`, with this thread's activation buffers.
    ///
    /// # Safety
    /// `out` is valid for writes of `m * n` floats, and nothing else accesses them during the call.
    unsafe fn matmul_to(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        activation: Option<Activation>,
        out: *mut f32,
    ) -> Result<()> {
        if m == 0 {
            return Ok(());
        }
        let job = |acts: &mut QuantizedActivations| self.matmul_with(x, m, bias, activation, acts, out);
        ACTIVATIONS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut acts) => job(&mut acts),
            // Only a matmul nested inside another on the same thread finds the buffers taken.
            Err(_) => job(&mut QuantizedActivations::default()),
        })
    }

    /// The matmul with `acts` as the activation buffers: quantizes every row, then splits the output into tasks
    /// of row chunks and panel ranges.
    ///
    /// # Safety
    /// As [`PackedWeights::matmul_to`].
    unsafe fn matmul_with(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        activation: Option<Activation>,
        acts: &mut QuantizedActivations,
        out: *mut f32,
    ) -> Result<()> {
        acts.resize(m, &self.blocks);
        let acts = ActivationBuffers::new(acts, m);
        let mut padded_bias = vec![0f32; self.panels() * self.nr];
        if let Some(b) = bias {
            padded_bias[..self.n].copy_from_slice(b);
        }
        let job = Job { w: self, acts, bias: &padded_bias, activation, out: SharedMut(out) };
        let mr = self.isa.tile_rows(self.bits);
        let stream_rows = (STREAM_INPUT_BYTES / (4 * self.blocks.k)).max(mr).next_multiple_of(mr);
        // Streaming pays where each row's multiplication is long enough to hide the next rows' input; small
        // weights (which stay in L2 anyway) multiply faster after one parallel quantizing pass.
        let streams = self.blocks.k * self.n >= STREAM_MIN_WEIGHTS && m.div_ceil(stream_rows) >= 4 * num_threads();
        if streams {
            self.run_streamed(x, m, &job, stream_rows)
        } else {
            self.quantize_activations(x, m, acts)?;
            self.run_split(m, &job);
            Ok(())
        }
    }

    /// Runs every tile of `job`, whose activations are all quantized, as tasks of row chunks and panel ranges:
    /// enough tasks for every thread even when there are few rows.
    fn run_split(&self, m: usize, job: &Job<'_>) {
        for_each_task(m, self.isa.tile_rows(self.bits), self.blocks.padded_k, self.panels(), |rows, panels| {
            // SAFETY: the level is supported (checked when the weights were packed); every row was quantized
            // before; tasks write disjoint tiles.
            unsafe { on_level!(self.isa, level => level::run(job, rows, panels, &[])) }
        });
    }

    /// Quantizes and multiplies `x` chunk by chunk of `rows_per_chunk` rows: each thread claims a chunk,
    /// quantizes it, claims its next chunk and runs the first one's tiles over every panel while fetching the next
    /// one's input into cache, so that reading the input from memory overlaps the multiplication instead of
    /// preceding it.
    fn run_streamed(&self, x: &[f32], m: usize, job: &Job<'_>, rows_per_chunk: usize) -> Result<()> {
        let chunks = m.div_ceil(rows_per_chunk);
        let chunk_rows = |c: usize| c * rows_per_chunk..((c + 1) * rows_per_chunk).min(m);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let claim = || next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first_error = FirstError::default();
        parallel_for(num_threads(), |_| {
            let mut chunk = claim();
            while chunk < chunks {
                let rows = chunk_rows(chunk);
                // SAFETY: this thread claimed the chunk, so no other touches its rows.
                if let Err(err) = unsafe { self.quantize_chunk(x, rows.clone(), job.acts) } {
                    first_error.keep(err);
                    // Later chunks are not worth computing: the call fails.
                    next.store(chunks, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                let following = claim();
                let fetch: &[f32] = match following < chunks {
                    true => {
                        let r = chunk_rows(following);
                        &x[r.start * self.blocks.k..r.end * self.blocks.k]
                    }
                    false => &[],
                };
                // SAFETY: as in `run_split`; the chunk's rows were quantized just above.
                unsafe { on_level!(self.isa, level => level::run(job, rows, 0..self.panels(), fetch)) }
                chunk = following;
            }
        });
        first_error.into_result()
    }

    /// Quantizes all `m` rows of activations into `acts`, in parallel chunks of rows.
    fn quantize_activations(&self, x: &[f32], m: usize, acts: ActivationBuffers) -> Result<()> {
        // About 64 K values per task, and at least one task per thread when there are enough rows.
        let rows_per_task = (64 * 1024 / self.blocks.k).clamp(1, m.div_ceil(num_threads()));
        let first_error = FirstError::default();
        parallel_for(m.div_ceil(rows_per_task), |t| {
            let rows = t * rows_per_task..((t + 1) * rows_per_task).min(m);
            // SAFETY: each task writes its own rows.
            if let Err(err) = unsafe { self.quantize_chunk(x, rows, acts) } {
                first_error.keep(err);
            }
        });
        first_error.into_result()
    }

    /// Quantizes input rows `rows` into their place in `acts`.
    ///
    /// # Safety
    /// `acts` holds buffers sized for the whole input, and no other thread touches rows `rows` meanwhile.
    unsafe fn quantize_chunk(&self, x: &[f32], rows: Range<usize>, acts: ActivationBuffers) -> Result<()> {
        let blocks = &self.blocks;
        let codes = std::slice::from_raw_parts_mut(
            acts.codes.get().add(rows.start * blocks.padded_k),
            rows.len() * blocks.padded_k,
        );
        let out = RowsOut {
            codes,
            params: acts.params.get().add(rows.start),
            stride: acts.rows,
            zero_offset: self.uniform_zero_offset.unwrap_or(0),
        };
        let x = &x[rows.start * blocks.k..rows.end * blocks.k];
        let input = InputQuant { input_scale: self.input_scale.as_deref(), step: self.activation_step };
        on_level!(self.isa, level => level::quantize(x, blocks, rows.start, input, out))
    }
}

/// The first error the tasks of one parallel region met (the one the call reports).
#[derive(Default)]
struct FirstError(std::sync::Mutex<Option<QuantError>>);

impl FirstError {
    /// Keeps `err` unless an earlier one is kept.
    fn keep(&self, err: QuantError) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(err);
    }

    /// `Err` with the kept error, if any.
    fn into_result(self) -> Result<()> {
        match self.0.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// Checks a matmul's operands: `x` holds `m` rows of `k` values, and the bias, if any, `n` values.
pub(crate) fn check_matmul(x: &[f32], m: usize, k: usize, n: usize, bias: Option<&[f32]>) -> Result<()> {
    if x.len() != m * k {
        return Err(QuantError::ShapeMismatch {
            what: "matmul input vs [m, k]",
            left: vec![x.len()],
            right: vec![m, k],
        });
    }
    match bias {
        Some(b) if b.len() != n => {
            Err(QuantError::ShapeMismatch { what: "bias vs output features", left: vec![b.len()], right: vec![n] })
        }
        _ => Ok(()),
    }
}

/// Checks that a caller's output buffer holds `m x n` values.
pub(crate) fn check_output(out: &[f32], m: usize, n: usize) -> Result<()> {
    match out.len() == m * n {
        true => Ok(()),
        false => {
            Err(QuantError::ShapeMismatch { what: "matmul output vs [m, n]", left: vec![out.len()], right: vec![m, n] })
        }
    }
}

/// A new buffer of `len` floats (see [`output_buffer`]) filled by `fill`, which is handed its start.
///
/// # Safety
/// `fill`, when it returns `Ok`, has written every one of the `len` floats.
pub(crate) unsafe fn with_fresh_output(len: usize, fill: impl FnOnce(*mut f32) -> Result<()>) -> Result<Vec<f32>> {
    let mut out = std::mem::ManuallyDrop::new(output_buffer(len));
    if let Err(err) = fill(out.as_mut_ptr().cast::<f32>()) {
        std::mem::ManuallyDrop::into_inner(out);
        return Err(err);
    }
    // SAFETY: MaybeUninit<f32> has the layout of f32, and `fill` wrote every element.
    Ok(unsafe { Vec::from_raw_parts(out.as_mut_ptr().cast::<f32>(), out.len(), out.capacity()) })
}

/// Outputs at least this large ask for transparent huge pages.
const HUGE_OUTPUT_BYTES: usize = 4 << 20;

/// An uninitialized buffer of `len` floats: every element is written by exactly one tile, so no memset. A large
/// output is fresh memory at every call (the allocator returns it to the system when it is freed), and faulting it
/// in 4 KB pages costs up to a quarter of the call (768 x 3072 at M = 4096); on Linux its 2 MB-aligned interior is marked for
/// huge pages first, so that it faults in 2 MB at a time.
fn output_buffer(len: usize) -> Vec<std::mem::MaybeUninit<f32>> {
    let mut out: Vec<std::mem::MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit needs no initialization.
    unsafe { out.set_len(len) };
    if len * 4 >= HUGE_OUTPUT_BYTES {
        super::aligned::advise_huge_pages(out.as_ptr().cast(), len * 4);
    }
    out
}

/// Runs every tile of `rows` x `panels`: panels outer, so a panel stays in cache while the row tiles pass.
/// `fetch` (possibly empty) is brought into L2 meanwhile: each tile gets an equal share, which it asks for a cache
/// line every four dot steps.
///
/// # Safety
/// the CPU supports the instruction set `S` was built for (the caller runs inside a function compiled with its target features); `job`'s buffers cover `rows` and `panels`, the rows' activations are quantized, and no other
/// thread writes these tiles meanwhile.
#[inline(always)]
unsafe fn run_tiles<S: Int8Simd, const MR: usize, const NV: usize, const WIDE: bool>(
    job: &Job<'_>,
    rows: Range<usize>,
    panels: Range<usize>,
    fetch: &[f32],
) {
    let w = job.w;
    let blocks = &w.blocks;
    let geo = BlockGeometry::<S> {
        count: blocks.count,
        block: blocks.block,
        last_padded: blocks.padded_len(blocks.count - 1),
        bits: w.bits.count() as usize,
        per_block: w.per_block,
        shared_zero_offset: w.uniform_zero_offset.is_some(),
        has_mins: !w.mins.is_empty() || !w.half_mins.is_empty(),
        half: w.half_params(),
        lookup: w.lookup.as_ref().map(|table| S::load_table16(table.as_ptr())),
    };
    let nr = NV * S::LANES;
    let params = w.param_blocks() * nr;
    let row_tiles = rows.len().div_ceil(MR);
    // One row tile (decoding) has no other tile to share a panel's chunk with: it walks each panel's K whole, so
    // that the weights stream in order (chunks would stride from panel to panel).
    let blocks_per_chunk = if row_tiles == 1 { blocks.count } else { (K_CHUNK / blocks.block).max(1) };
    let chunks = blocks.count.div_ceil(blocks_per_chunk);
    // Partial sums of every tile of the task between K chunks.
    let mut partial = if chunks > 1 { vec![0f32; panels.len() * row_tiles * MR * nr] } else { Vec::new() };
    // Each tile's share of `fetch`, in whole cache lines of 16 floats.
    let fetch_per_tile = fetch.len().div_ceil(chunks * panels.len() * row_tiles).next_multiple_of(16).max(16);
    let mut fetch = fetch.chunks(fetch_per_tile);
    for chunk in 0..chunks {
        let chunk_blocks = chunk * blocks_per_chunk..((chunk + 1) * blocks_per_chunk).min(blocks.count);
        for (pi, p) in panels.clone().enumerate() {
            let col0 = p * nr;
            for (ti, m0) in rows.clone().step_by(MR).enumerate() {
                let tile_fetch = fetch.next().unwrap_or_default();
                let t = Tile {
                    a: job.acts.codes.get().add(m0 * blocks.padded_k),
                    a_row_stride: blocks.padded_k,
                    a_params: job.acts.params.get().add(m0),
                    a_params_stride: job.acts.rows,
                    w: w.codes.as_ptr().add(p * w.panel_bytes),
                    w_scales: w.scales.as_ptr().wrapping_add(p * params),
                    w_zero_offsets: w.zero_offsets.as_ptr().wrapping_add(p * params),
                    w_mins: w.mins.as_ptr().wrapping_add(p * params),
                    w_half_scales: w.half_scales.as_ptr().wrapping_add(p * params),
                    w_half_mins: w.half_mins.as_ptr().wrapping_add(p * params),
                    bias: job.bias.as_ptr().add(col0),
                    out: job.out.get().add(m0 * w.n + col0),
                    ldo: w.n,
                    cols: nr.min(w.n - col0),
                    blocks: chunk_blocks.clone(),
                    partial: partial.as_mut_ptr().wrapping_add((pi * row_tiles + ti) * MR * nr),
                    streams_weights: ti == 0,
                    fetch: tile_fetch.as_ptr().cast(),
                    fetch_end: tile_fetch.as_ptr_range().end.cast(),
                    activation: job.activation,
                };
                dispatch_tile::<S, MR, NV, WIDE>((rows.end - m0).min(MR), &t, &geo);
            }
        }
    }
}

/// Picks the tile instantiation for `rows` rows (at most `MR`), the weights' bit width and their lookup table:
/// with `WIDE`, 8-bit codes (the only ones its shape is used for), else 4- or 2-bit ones.
///
/// # Safety
/// As [`tile`]; `rows` is 1 to `MR`.
#[inline(always)]
unsafe fn dispatch_tile<S: Int8Simd, const MR: usize, const NV: usize, const WIDE: bool>(
    rows: usize,
    t: &Tile,
    geo: &BlockGeometry<S>,
) {
    macro_rules! by_bits {
        ($rows:literal) => {
            match (WIDE, geo.bits, geo.lookup.is_some()) {
                (true, _, _) => tile::<S, $rows, NV, 8, false>(t, geo),
                (false, 4, false) => tile::<S, $rows, NV, 4, false>(t, geo),
                (false, 4, true) => tile::<S, $rows, NV, 4, true>(t, geo),
                (false, _, _) => tile::<S, $rows, NV, 2, false>(t, geo),
            }
        };
    }
    debug_assert!(rows >= 1 && rows <= MR);
    match rows {
        1 => by_bits!(1),
        2 => by_bits!(2),
        3 => by_bits!(3),
        4 => by_bits!(4),
        5 if MR >= 5 => by_bits!(5),
        6 if MR >= 6 => by_bits!(6),
        7 if MR >= 7 => by_bits!(7),
        _ if MR >= 8 => by_bits!(8),
        _ => unreachable!("a tile has at most {MR} rows"),
    }
}

/// Runs every float tile of `rows` x `panels`, K chunk by K chunk: a panel's chunk stays in L2 while the row tiles
/// pass, and each tile keeps its running sums in a partial buffer between chunks.
///
/// # Safety
/// the CPU supports the instruction set `S` was built for (the caller runs inside a function compiled with its target features); `job`'s input, bias and output cover `rows` and `panels`, and no other thread writes these
/// tiles meanwhile.
#[inline(always)]
unsafe fn run_float_tiles<S: Int8Simd, const MR: usize, const NV: usize>(
    job: &FloatJob<'_>,
    rows: Range<usize>,
    panels: Range<usize>,
) {
    let w = job.w;
    let nr = NV * S::LANES;
    let row_tiles = rows.len().div_ceil(MR);
    // As for the integer tiles: one row tile walks each panel's K whole.
    let k_chunk = if row_tiles == 1 { w.k } else { w.k_chunk() };
    let chunks = w.k.div_ceil(k_chunk);
    let mut partial = if chunks > 1 { vec![0f32; panels.len() * row_tiles * MR * nr] } else { Vec::new() };
    let weights = w.panels.as_ptr().cast::<f32>();
    for chunk in 0..chunks {
        let k0 = chunk * k_chunk;
        let steps = k_chunk.min(w.k - k0);
        for (pi, p) in panels.clone().enumerate() {
            let col0 = p * nr;
            for (ti, m0) in rows.clone().step_by(MR).enumerate() {
                let t = FloatTile {
                    a: job.x.as_ptr().add(m0 * w.k + k0),
                    lda: w.k,
                    w: weights.add((p * w.k + k0) * nr),
                    steps,
                    bias: job.bias.as_ptr().add(col0),
                    out: job.out.get().add(m0 * w.n + col0),
                    ldo: w.n,
                    cols: nr.min(w.n - col0),
                    partial: partial.as_mut_ptr().wrapping_add((pi * row_tiles + ti) * MR * nr),
                    first: chunk == 0,
                    last: chunk + 1 == chunks,
                    activation: job.activation,
                };
                dispatch_float_tile::<S, MR, NV>((rows.end - m0).min(MR), &t);
            }
        }
    }
}

/// Picks the float tile instantiation for `rows` rows (at most `MR`).
///
/// # Safety
/// As [`float_tile`]; `rows` is 1 to `MR`.
#[inline(always)]
unsafe fn dispatch_float_tile<S: Int8Simd, const MR: usize, const NV: usize>(rows: usize, t: &FloatTile) {
    debug_assert!(rows >= 1 && rows <= MR);
    match rows {
        1 => float_tile::<S, 1, NV>(t),
        2 => float_tile::<S, 2, NV>(t),
        3 => float_tile::<S, 3, NV>(t),
        4 => float_tile::<S, 4, NV>(t),
        5 if MR >= 5 => float_tile::<S, 5, NV>(t),
        6 if MR >= 6 => float_tile::<S, 6, NV>(t),
        7 if MR >= 7 => float_tile::<S, 7, NV>(t),
        _ if MR >= 8 => float_tile::<S, 8, NV>(t),
        _ => unreachable!("a float tile has at most {MR} rows"),
    }
}
