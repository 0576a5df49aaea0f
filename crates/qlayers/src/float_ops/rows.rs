//! The float work around the matmuls, on row-major `[rows, width]` buffers: residual add with layer norm, RMS
//! norm, and gated linear units (GELU and ReLU run in the matmul kernels' epilogue, see [`crate::activation`]). Each
//! row is computed alone, in a fixed order, so a token's result never depends on the other rows (batch
//! independence), and rows are spread over the kernels' threads.

use crate::threads::{num_threads, parallel_for_work, SharedMut};

use crate::Activation;

use super::lanes::{fold_lanes, level, Level};

/// Most rows per parallel task.
const MAX_ROWS_PER_TASK: usize = 64;

/// Work on whole rows, inlined into a function compiled for each vector level.
trait RowOp: Sync {
    /// Processes rows `first..` held in `rows` (a whole number of rows).
    fn rows(&self, first: usize, rows: &mut [f32]);
}

/// Runs `op` over every `width`-long row of `data`, in parallel, at the best vector level.
fn for_each_row<O: RowOp>(data: &mut [f32], width: usize, op: &O) {
    let rows = data.len() / width;
    // A few tasks per thread so that they balance, even for the few rows of one short text.
    let rows_per_task = rows.div_ceil(4 * num_threads()).clamp(1, MAX_ROWS_PER_TASK);
    let shared = SharedMut(data.as_mut_ptr());
    // About 20 steps a value (GELU's polynomials; layer norm's passes).
    parallel_for_work(rows.div_ceil(rows_per_task), 20 * data.len(), |task| {
        let first = task * rows_per_task;
        let count = rows_per_task.min(rows - first);
        // SAFETY: each task owns rows first..first + count, inside `data`.
        let chunk = unsafe { std::slice::from_raw_parts_mut(shared.get().add(first * width), count * width) };
        match level() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `level` picks a vector level only where the CPU has it.
            Level::Avx512 => unsafe { rows_avx512(op, first, chunk) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Level::Avx2 => unsafe { rows_avx2(op, first, chunk) },
            Level::Portable => op.rows(first, chunk),
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
/// `op` over `rows`, compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
unsafe fn rows_avx512<O: RowOp>(op: &O, first: usize, rows: &mut [f32]) {
    op.rows(first, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// `op` over `rows`, compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA.
unsafe fn rows_avx2<O: RowOp>(op: &O, first: usize, rows: &mut [f32]) {
    op.rows(first, rows)
}

/// Layer norm parameters of one width.
#[derive(Debug, Clone)]
pub struct LayerNormParams {
    /// Scale (gamma).
    pub weight: Vec<f32>,
    /// Shift (beta).
    pub bias: Vec<f32>,
    /// Added to the variance.
    pub eps: f32,
}

impl LayerNormParams {
    /// Normalizes every row of `x` in place, after adding `residual` (same shape) when given:
    /// `y = (x + r - mean) / sqrt(var + eps) * weight + bias`.
    pub fn apply(&self, x: &mut [f32], residual: Option<&[f32]>) {
        for_each_row(x, self.weight.len(), &ResidualNorm { norm: self, residual });
    }

    #[inline(always)]
    fn normalize(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = lane_sum(row, |v| v) / n;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

/// Residual add and layer norm as a row operation.
struct ResidualNorm<'a> {
    norm: &'a LayerNormParams,
    residual: Option<&'a [f32]>,
}

impl RowOp for ResidualNorm<'_> {
    #[inline(always)]
    fn rows(&self, first: usize, rows: &mut [f32]) {
        let width = self.norm.weight.len();
        for (i, row) in rows.chunks_exact_mut(width).enumerate() {
            if let Some(res) = self.residual {
                add_assign(row, &res[(first + i) * width..][..width]);
            }
            self.norm.normalize(row);
        }
    }
}

#[inline(always)]
fn add_assign(row: &mut [f32], other: &[f32]) {
    row.iter_mut().zip(other).for_each(|(a, b)| *a += b);
}

/// `sum f(v)` over `row`, in the fixed lane order of [`fold_lanes`].
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    fold_lanes(row, 0.0, |acc, v| acc + f(v), |a, b| a + b)
}

/// RMS norm parameters (Llama): `y = x / sqrt(mean(x^2) + eps) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNormParams {
    /// Scale.
    pub weight: Vec<f32>,
    /// Added to the mean square.
    pub eps: f32,
}

impl RmsNormParams {
    /// The norm whose scale is `offset + weight` (Gemma's `(1 + w)` norms, `offset` 1), the sum taken once here in
    /// f32 as transformers takes it on every call: `y = x / sqrt(mean(x^2) + eps) * (offset + weight)`.
    pub fn with_offset(weight: &[f32], offset: f32, eps: f32) -> Self {
        Self { weight: weight.iter().map(|w| offset + w).collect(), eps }
    }

    /// The normalized rows of `x`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut out = x.to_vec();
        for_each_row(&mut out, self.weight.len(), self);
        out
    }
}

impl RowOp for RmsNormParams {
    #[inline(always)]
    fn rows(&self, _first: usize, rows: &mut [f32]) {
        for row in rows.chunks_exact_mut(self.weight.len()) {
            let inv = 1.0 / (lane_sum(row, |v| v * v) / row.len() as f32 + self.eps).sqrt();
            row.iter_mut().zip(&self.weight).for_each(|(v, w)| *v = *v * inv * w);
        }
    }
}

/// A gated linear unit over rows holding `[input | gate]` side by side (`2 * inner` wide): returns
/// `act(input) * gate`, `[rows, inner]` (SwiGLU with SiLU; ModernBERT's GeGLU with GELU).
pub fn gated(x: &mut [f32], inner: usize, act: Activation) -> Vec<f32> {
    for_each_row(x, 2 * inner, &Gated { inner, act });
    x.chunks_exact(2 * inner).flat_map(|row| row[..inner].iter().copied()).collect()
}

/// SwiGLU of rows holding `[gate | up]` side by side (`2 * inner` wide): returns `silu(gate) * up`, `[rows, inner]`.
pub fn swiglu(gate_up: &mut [f32], inner: usize) -> Vec<f32> {
    gated(gate_up, inner, Activation::Silu)
}

/// A gated linear unit as a row operation: the result goes to the first half of each row.
struct Gated {
    inner: usize,
    act: Activation,
}

impl RowOp for Gated {
    #[inline(always)]
    fn rows(&self, _first: usize, rows: &mut [f32]) {
        for row in rows.chunks_exact_mut(2 * self.inner) {
            let (input, gate) = row.split_at_mut(self.inner);
            self.act.apply_all(input);
            input.iter_mut().zip(gate.iter()).for_each(|(x, g)| *x *= g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_rows_are_independent_and_correct() {
        let width = 37;
        let params = LayerNormParams {
            weight: (0..width).map(|i| 1.0 + i as f32 * 0.01).collect(),
            bias: (0..width).map(|i| i as f32 * -0.02).collect(),
            eps: 1e-12,
        };
        let x: Vec<f32> = (0..5 * width).map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.1).collect();
        let res: Vec<f32> = (0..5 * width).map(|i| ((i * 7 % 13) as f32) * 0.05).collect();
        let mut y = x.clone();
        params.apply(&mut y, Some(&res));
        for r in 0..5 {
            let row: Vec<f64> = (0..width).map(|c| f64::from(x[r * width + c] + res[r * width + c])).collect();
            let mean = row.iter().sum::<f64>() / width as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
            for c in 0..width {
                let want =
                    (row[c] - mean) / (var + 1e-12).sqrt() * f64::from(params.weight[c]) + f64::from(params.bias[c]);
                assert!((f64::from(y[r * width + c]) - want).abs() < 1e-5, "row {r} col {c}");
            }
            // The same row normalized alone gives the same bits.
            let mut alone = x[r * width..(r + 1) * width].to_vec();
            params.apply(&mut alone, Some(&res[r * width..(r + 1) * width]));
            assert_eq!(alone, y[r * width..(r + 1) * width]);
        }
    }

    /// Gemma's `(1 + w)` RMS norm against a direct computation in f64.
    #[test]
    fn offset_rms_norm_scales_by_one_plus_the_weight() {
        let width = 37;
        let weight: Vec<f32> = (0..width).map(|i| i as f32 * 0.05 - 0.9).collect();
        let norm = RmsNormParams::with_offset(&weight, 1.0, 1e-6);
        let x: Vec<f32> = (0..3 * width).map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.1).collect();
        let y = norm.apply(&x);
        for (r, row) in x.chunks_exact(width).enumerate() {
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / width as f64;
            for c in 0..width {
                let want = f64::from(row[c]) / (ms + 1e-6).sqrt() * (1.0 + f64::from(weight[c]));
                assert!((f64::from(y[r * width + c]) - want).abs() < 1e-5, "row {r} col {c}");
            }
        }
    }

    /// `op` over `data` (`width`-long rows) at the portable level and at every vector level the CPU has, in this
    /// process: every level must give the portable bits.
    fn every_level_gives_the_portable_bits<O: RowOp>(op: &O, data: &[f32], what: &str) {
        let portable = {
            let mut rows = data.to_vec();
            op.rows(0, &mut rows);
            rows
        };
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                let mut rows = data.to_vec();
                // SAFETY: the CPU has AVX2 and FMA.
                unsafe { rows_avx2(op, 0, &mut rows) };
                assert_eq!(rows, portable, "{what}: avx2");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut rows = data.to_vec();
                // SAFETY: the CPU has AVX-512F.
                unsafe { rows_avx512(op, 0, &mut rows) };
                assert_eq!(rows, portable, "{what}: avx512");
            }
        }
        assert!(portable.iter().all(|v| v.is_finite()), "{what}: finite");
    }

    /// Layer norm (with and without a residual), RMS norm and every gated unit, on widths with and without a
    /// vector tail, at every level.
    #[test]
    fn every_level_matches_the_portable_one() {
        for width in [1, 7, 16, 37, 384, 771] {
            let rows = 5;
            let x: Vec<f32> = (0..rows * width).map(|i| ((i * 7919 % 1009) as f32 / 300.0) - 1.7).collect();
            let residual: Vec<f32> = (0..rows * width).map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.01).collect();
            let norm = LayerNormParams {
                weight: (0..width).map(|i| 1.0 + i as f32 * 0.01).collect(),
                bias: (0..width).map(|i| i as f32 * -0.02).collect(),
                eps: 1e-5,
            };
            every_level_gives_the_portable_bits(&ResidualNorm { norm: &norm, residual: None }, &x, "layer norm");
            let with_residual = ResidualNorm { norm: &norm, residual: Some(&residual) };
            every_level_gives_the_portable_bits(&with_residual, &x, "layer norm + residual");
            let rms = RmsNormParams { weight: norm.weight.clone(), eps: 1e-6 };
            every_level_gives_the_portable_bits(&rms, &x, "rms norm");
            let gemma = RmsNormParams::with_offset(&norm.weight.iter().map(|w| w - 1.3).collect::<Vec<_>>(), 1.0, 1e-6);
            every_level_gives_the_portable_bits(&gemma, &x, "(1 + w) rms norm");
            if width % 2 == 0 {
                for act in [Activation::GeluErf, Activation::GeluTanh, Activation::Relu, Activation::Silu] {
                    every_level_gives_the_portable_bits(&Gated { inner: width / 2, act }, &x, "gated");
                }
            }
        }
    }
}
