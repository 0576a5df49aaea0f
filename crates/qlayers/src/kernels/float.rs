//! f32 weights packed into the float micro-kernel's panels, and their matmul on the shared driver.
//!
//! Columns of the output (rows of the `[n, k]` weight) are grouped into panels of `nr` columns; inside a panel
//! each K value stores its `nr` weights, one per column (zeros past the last column). A task multiplies a chunk of
//! rows by a range of panels, K chunk by K chunk, so that a panel's chunk stays in L2 while the row tiles pass.

use super::aligned::CacheAligned;
use super::driver::{check_matmul, check_output, for_each_task, with_fresh_output};
use super::isa::Isa;
use crate::activation::Activation;
use crate::error::{QuantError, Result};
use crate::threads::SharedMut;

/// Most bytes of one panel's K chunk: it stays in L2 while the row tiles pass, and a task's row chunk is sized by
/// the K chunk (not the whole K), so that at long K (bert-base's 3072) a panel's chunk read from L3 serves 64 rows
/// instead of 16: K is split into equal chunks of at most 853 values at 48 columns (every K up to 768 is one chunk).
/// Against chunks of 512 KB: bert-base fp32 0.96x the time (Intel Xeon), MiniLM unchanged. Chunks small enough for
/// L1 (16 KB) were measured slower (78-88% of the FMA peak at BERT's shapes against 86-96%, AMD EPYC), since every
/// chunk after the first reloads and stores each tile's partial sums.
pub(crate) const FLOAT_CHUNK_BYTES: usize = 160 * 1024;

/// f32 weights of an `[n, k]` matrix in the panel layout of one kernel level.
#[derive(Debug, Clone)]
pub struct FloatWeights {
    pub(crate) isa: Isa,
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// Columns per panel.
    pub(crate) nr: usize,
    /// Panels one after another, `[panel][k][nr]`, starting on a cache line.
    pub(crate) panels: CacheAligned,
}

/// What every task of one float matmul reads.
pub(crate) struct FloatJob<'a> {
    pub w: &'a FloatWeights,
    pub x: &'a [f32],
    /// Bias padded to whole panels (zeros where the layer has none).
    pub bias: &'a [f32],
    /// Applied to the outputs as they are stored, when given.
    pub activation: Option<Activation>,
    pub out: SharedMut<f32>,
}

impl FloatWeights {
    /// Packs `weight` (`n` rows of `k` values, row-major: PyTorch's Linear layout) for the kernels of `isa`, which
    /// must be supported by this CPU.
    pub fn new(isa: Isa, weight: &[f32], n: usize, k: usize) -> Result<Self> {
        if !isa.is_supported() {
            return Err(QuantError::InvalidScheme(format!("kernel level {isa} is not supported by this CPU")));
        }
        if weight.len() != n * k || n == 0 || k == 0 {
            return Err(QuantError::ShapeMismatch {
                what: "f32 weight vs [n, k] (both at least 1)",
                left: vec![weight.len()],
                right: vec![n, k],
            });
        }
        let nr = isa.float_panel_width();
        let panel_count = n.div_ceil(nr);
        let mut panels = CacheAligned::zeroed(panel_count * k * nr * 4);
        let values = panels.as_mut_f32();
        for (row, weights) in weight.chunks_exact(k).enumerate() {
            let (panel, column) = (row / nr, row % nr);
            let panel = &mut values[panel * k * nr..][..k * nr];
            for (kk, &w) in weights.iter().enumerate() {
                panel[kk * nr + column] = w;
            }
        }
        Ok(Self { isa, n, k, nr, panels })
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The kernel level the weights are packed for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes the packed weights take.
    pub fn storage_bytes(&self) -> usize {
        self.panels.len()
    }

    /// Number of panels.
    pub(crate) fn panel_count(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    /// K values a panel's chunk holds: K split into equal chunks of at most [`FLOAT_CHUNK_BYTES`] of weights.
    pub(crate) fn k_chunk(&self) -> usize {
        let most = (FLOAT_CHUNK_BYTES / (4 * self.nr)).max(1);
        self.k.div_ceil(self.k.div_ceil(most))
    }

    /// `y = x W^T + bias` for `x` of `m` rows of `k` values, row-major; returns `m x n` values, row-major. Each
    /// output is one chain of fused multiply-adds over K in order plus the bias, so every level gives the same
    /// bits and each row's result depends on that row alone. Non-finite input propagates, as in any f32 matmul.
    pub fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Result<Vec<f32>> {
        check_matmul(x, m, self.k, self.n, bias)?;
        // SAFETY: the matmul writes every one of the `m * n` outputs.
        unsafe {
            with_fresh_output(m * self.n, |out| {
                self.matmul_to(x, m, bias, None, out);
                Ok(())
            })
        }
    }

    /// [`FloatWeights::matmul`] into `out` (`m x n` values, overwritten), with `activation` applied to each
    /// output as it is stored (see [`crate::PackedWeights::matmul_into`]).
    pub fn matmul_into(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        activation: Option<Activation>,
        out: &mut [f32],
    ) -> Result<()> {
        check_matmul(x, m, self.k, self.n, bias)?;
        check_output(out, m, self.n)?;
        // SAFETY: `out` holds `m * n` floats.
        unsafe { self.matmul_to(x, m, bias, activation, out.as_mut_ptr()) };
        Ok(())
    }

    /// The matmul of checked operands into `out`.
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
    ) {
        if m == 0 {
            return;
        }
        let mut padded_bias = vec![0f32; self.panel_count() * self.nr];
        if let Some(b) = bias {
            padded_bias[..self.n].copy_from_slice(b);
        }
        let job = FloatJob { w: self, x, bias: &padded_bias, activation, out: SharedMut(out) };
        for_each_task(m, self.isa.float_tile_rows(), 4 * self.k_chunk(), self.panel_count(), |rows, panels| {
            // SAFETY: the level is supported (checked when the weights were packed); tasks write disjoint tiles of
            // `out`, which the caller vouches for.
            unsafe { self.isa.run_float(&job, rows, panels) }
        });
    }
}
