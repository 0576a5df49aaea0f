//! The float work around the matmuls, on row-major `[rows, width]` buffers: residual add with layer norm, RMS
//! norm, and the feed-forward activations (GELU, ReLU, SwiGLU). Each row is computed alone, in a fixed order, so a token's result
//! never depends on the other rows (batch independence), and rows are spread over the kernels' threads.

use qlayers::threads::{num_threads, parallel_for_work, SharedMut};

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
            // SAFETY: `level` picks a vector level only where the CPU has it.
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => unsafe { rows_avx512(op, first, chunk) },
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => unsafe { rows_avx2(op, first, chunk) },
            Level::Portable => op.rows(first, chunk),
        }
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512<O: RowOp>(op: &O, first: usize, rows: &mut [f32]) {
    op.rows(first, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
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

/// SwiGLU of rows holding `[gate | up]` side by side (`2 * inner` wide): returns `silu(gate) * up`, `[rows, inner]`.
pub fn swiglu(gate_up: &mut [f32], inner: usize) -> Vec<f32> {
    for_each_row(gate_up, 2 * inner, &SwiGlu { inner });
    gate_up.chunks_exact(2 * inner).flat_map(|row| row[..inner].iter().copied()).collect()
}

/// SwiGLU as a row operation: the result goes to the gate half of each row.
struct SwiGlu {
    inner: usize,
}

impl RowOp for SwiGlu {
    #[inline(always)]
    fn rows(&self, _first: usize, rows: &mut [f32]) {
        for row in rows.chunks_exact_mut(2 * self.inner) {
            let (gate, up) = row.split_at_mut(self.inner);
            gate.iter_mut().zip(up.iter()).for_each(|(g, u)| *g = *g / (1.0 + exp(-*g)) * u);
        }
    }
}

/// The feed-forward activation of a BERT config's `hidden_act`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * Φ(x)` with the exact (erf) normal CDF: `gelu`.
    GeluErf,
    /// The tanh approximation: `gelu_new`, `gelu_pytorch_tanh`.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
}

impl Activation {
    /// The activation `hidden_act` names, if known.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// Applies the activation to every value of `x` (rows of `width`) in place.
    pub fn apply(self, x: &mut [f32], width: usize) {
        for_each_row(x, width, &self);
    }
}

impl RowOp for Activation {
    #[inline(always)]
    fn rows(&self, _first: usize, rows: &mut [f32]) {
        match self {
            Self::GeluErf => rows.iter_mut().for_each(|v| *v = gelu_erf(*v)),
            Self::GeluTanh => rows.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            Self::Relu => rows.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

/// `x * Φ(x) = 0.5 x (1 + erf(x / √2))`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, with `tanh(u) = 1 - 2 / (e^{2u} + 1)`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).clamp(-20.0, 20.0);
    let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// `erf(x)` to about 2e-7 absolute error: its Taylor series below 0.6, Abramowitz & Stegun 7.1.26 above (where
/// the series would need many terms). Both are computed and one selected, so it vectorizes.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_72, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    /// 2/sqrt(pi) * (-1)^n / (n! (2n + 1)), n = 0..6.
    const S: [f32; 7] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        -0.376_126_4,
        0.112_837_92,
        -0.026_866_17,
        0.005_223_977,
        -8.548_327e-4,
        1.205_533e-4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let large = 1.0 - poly * exp(-(a * a));
    let z = a * a;
    let small = a * (S[0] + z * (S[1] + z * (S[2] + z * (S[3] + z * (S[4] + z * (S[5] + z * S[6]))))));
    let y = if a < 0.6 { small } else { large };
    y.copysign(x)
}

/// `e^x` to about 2 ulp for `x` in `[-87, 88]` (clamped there): `x = n ln 2 + r`, a degree-6 polynomial for `e^r`,
/// and `2^n` built in the exponent bits. Branch-free and without float-to-int casts, so it vectorizes.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    /// Adding 1.5 * 2^23 rounds to an integer; adding 2^23 + 127 leaves `n + 127` in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    const EXPONENT_BIAS: f32 = 8_388_735.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUNDER) - ROUNDER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n + 127 is in [1, 254]: shifted into the exponent field it is 2^n.
    let scale = f32::from_bits((n + EXPONENT_BIAS).to_bits() << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        for i in -10_000..=10_000 {
            let x = i as f32 * 0.0087;
            let (ours, exact) = (exp(x), x.exp());
            assert!(
                (ours - exact).abs() <= 4.0 * f32::EPSILON * exact.max(f32::MIN_POSITIVE),
                "{x}: {ours} vs {exact}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-200.0) < 1e-37);
    }

    #[test]
    fn erf_and_gelu_match_f64() {
        for i in -6000..=6000 {
            let x = i as f32 * 0.001 * 6.0;
            let exact = libm_erf(f64::from(x));
            assert!((f64::from(erf(x)) - exact).abs() < 3e-7, "erf({x}): {} vs {exact}", erf(x));
            let gelu = 0.5 * f64::from(x) * (1.0 + libm_erf(f64::from(x) / std::f64::consts::SQRT_2));
            assert!((f64::from(gelu_erf(x)) - gelu).abs() < 3e-7 * (1.0 + f64::from(x.abs())), "gelu({x})");
            let u = (2.0 / std::f64::consts::PI).sqrt() * (f64::from(x) + 0.044715 * f64::from(x).powi(3));
            let tanh_gelu = 0.5 * f64::from(x) * (1.0 + u.tanh());
            assert!((f64::from(gelu_tanh(x)) - tanh_gelu).abs() < 1e-6 * (1.0 + f64::from(x.abs())), "tanh gelu({x})");
        }
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(gelu_erf(-30.0), -0.0);
    }

    /// erf in f64 by its Taylor series (|x| < 3) or continued-fraction tail, for the test only.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let y = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = e^{-a^2} / (a sqrt(pi)) * (1 - 1/(2a^2) + 3/(4a^4) - ...), tiny at a >= 3.
            let s = 1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)) - 15.0 / (8.0 * a.powi(6));
            1.0 - (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * s
        };
        y.copysign(x)
    }

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
}
