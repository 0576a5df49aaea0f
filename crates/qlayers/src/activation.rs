//! Feed-forward activations (GELU in both forms, ReLU, SiLU) and the float functions behind them, written as plain
//! scalar code without branches on the value, so that loops over them vectorize. One definition serves the model
//! code's own passes and the kernels' epilogues, which therefore give the same bits.

/// A feed-forward activation (a BERT config's `hidden_act`), applied on its own or inside a matmul's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * Φ(x)` with the exact (erf) normal CDF: `gelu`.
    GeluErf,
    /// The tanh approximation: `gelu_new`, `gelu_pytorch_tanh`.
    GeluTanh,
    /// `max(x, 0)`.
    Relu,
    /// `x * sigmoid(x)`: `silu`, `swish` (the gate of SwiGLU).
    Silu,
}

impl Activation {
    /// The activation `hidden_act` names, if known.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            "relu" => Some(Self::Relu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }

    /// Applies the activation to every value of `values` in place (a loop the compiler vectorizes for the
    /// instruction set of the function it is inlined into).
    #[inline(always)]
    pub fn apply_all(self, values: &mut [f32]) {
        match self {
            Self::GeluErf => values.iter_mut().for_each(|v| *v = gelu_erf(*v)),
            Self::GeluTanh => values.iter_mut().for_each(|v| *v = gelu_tanh(*v)),
            Self::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
            Self::Silu => values.iter_mut().for_each(|v| *v = silu(*v)),
        }
    }

    /// The activation of every value of `x` with candle's own operations, on `x`'s device (models on candle's
    /// kernels, see [`crate::LayerPath`]).
    pub fn apply_tensor(self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Self::GeluErf => x.gelu_erf(),
            Self::GeluTanh => x.gelu(),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }
}

/// `x * Φ(x) = 0.5 x (1 + erf(x / √2))`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `x / (1 + e^-x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
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
    exp_with(x, |a, b, c| a * b + c)
}

/// [`exp`] with its nine multiply-adds fused (`f32::mul_add`, rounded once): a third fewer instructions where the
/// caller is compiled with FMA (the float kernels' vector levels), and the same bits at every level, since a fused
/// multiply-add rounds alike everywhere. Where the target has no FMA, each one is a library call: use [`exp`].
#[inline(always)]
pub fn exp_fused(x: f32) -> f32 {
    exp_with(x, f32::mul_add)
}

/// The formula of [`exp`], with `mul_add(a, b, c) = a * b + c` as the caller rounds it.
#[inline(always)]
fn exp_with(x: f32, mul_add: impl Fn(f32, f32, f32) -> f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    /// Adding 1.5 * 2^23 rounds to an integer; adding 2^23 + 127 leaves `n + 127` in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    const EXPONENT_BIAS: f32 = 8_388_735.0;
    /// The Taylor coefficients of `e^r` from `r^5` down to `r^0`, after `1 / 720` for `r^6`.
    const COEFFICIENTS: [f32; 6] = [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
    let x = x.clamp(-87.0, 88.0);
    let n = mul_add(x, std::f32::consts::LOG2_E, ROUNDER) - ROUNDER;
    let r = mul_add(-n, LN2_LO, mul_add(-n, LN2_HI, x));
    let p = COEFFICIENTS.iter().fold(1.0 / 720.0, |p, &c| mul_add(r, p, c));
    // n + 127 is in [1, 254]: shifted into the exponent field it is 2^n.
    let scale = f32::from_bits((n + EXPONENT_BIAS).to_bits() << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        for exp in [exp, exp_fused] {
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
}
