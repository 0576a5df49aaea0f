//! Rotary position embeddings in Hugging Face's half-split layout, shared by the decoders and ModernBERT.

/// How rotary frequencies are stretched for contexts longer than the model was trained on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Frequencies as trained.
    None,
    /// Every frequency divided by `factor` (positions interpolated).
    Linear {
        /// The stretch.
        factor: f32,
    },
    /// Llama 3's: low frequencies divided by `factor`, high ones kept, a smooth blend between.
    Llama3 {
        /// The stretch of the low frequencies.
        factor: f32,
        /// Wavelengths above `original_context / low_freq_factor` are stretched fully.
        low_freq_factor: f32,
        /// Wavelengths below `original_context / high_freq_factor` are kept.
        high_freq_factor: f32,
        /// The context the model was trained on.
        original_context: f32,
    },
}

/// LongRoPE (Phi-3's `longrope`, formerly `su`): each rotary pair's frequency divided by a factor of its own, one
/// set while a call's positions stay within the context the model was trained on and another beyond it, and cos
/// and sin scaled by `attention_factor`, as transformers computes them.
#[derive(Debug, Clone, PartialEq)]
pub struct LongRope {
    /// Per-pair factors within `original_context` (`d / 2` of them).
    pub short_factor: Vec<f32>,
    /// Per-pair factors beyond it.
    pub long_factor: Vec<f32>,
    /// The context the model was trained on: a call whose last position is at or past it takes `long_factor`.
    pub original_context: usize,
    /// The scale on cos and sin (`sqrt(1 + ln(context / original) / ln(original))` unless the config names one).
    pub attention_factor: f32,
}

/// Rotary frequencies of one head width, in HF's half-split layout: pair `i` is `(x[i], x[i + d/2])`. With a
/// partial rotary ([`Rotary::within_heads`]), only the first `d` dimensions of each wider head turn.
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f32>,
    /// Width of a head (at least `2 * inv_freq.len()`; the dimensions past the rotary ones pass unchanged).
    head_width: usize,
    /// LongRoPE's frequencies beyond the original context, where it applies.
    long: Option<LongFrequencies>,
}

/// LongRoPE's second set of frequencies and when it applies.
#[derive(Debug, Clone)]
struct LongFrequencies {
    inv_freq: Vec<f32>,
    original_context: usize,
    scale: f32,
}

impl Rotary {
    /// The frequencies of heads `d` wide (even) with base `theta`, stretched per `scaling`.
    pub fn new(d: usize, theta: f32, scaling: RopeScaling) -> Self {
        let inv_freq: Vec<f32> = (0..d / 2)
            .map(|i| {
                let f = theta.powf(-2.0 * i as f32 / d as f32);
                match scaling {
                    RopeScaling::None => f,
                    RopeScaling::Linear { factor } => f / factor,
                    RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen > original_context / low_freq_factor {
                            f / factor
                        } else if wavelen < original_context / high_freq_factor {
                            f
                        } else {
                            let smooth =
                                (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    }
                }
            })
            .collect();
        Self { head_width: inv_freq.len() * 2, inv_freq, long: None }
    }

    /// The same rotary on the first of each head's `head_width` dimensions (a partial rotary, as
    /// `partial_rotary_factor` below 1 asks), the others unchanged.
    pub fn within_heads(mut self, head_width: usize) -> Self {
        self.head_width = head_width.max(2 * self.inv_freq.len());
        self
    }

    /// LongRoPE frequencies of heads `d` wide with base `theta` (`rope` holds `d / 2` factors of each kind).
    pub fn long_rope(d: usize, theta: f32, rope: &LongRope) -> Self {
        let stretched = |factors: &[f32]| -> Vec<f32> {
            (0..d / 2).map(|i| 1.0 / (factors[i] * theta.powf(2.0 * i as f32 / d as f32))).collect()
        };
        let long = LongFrequencies {
            inv_freq: stretched(&rope.long_factor),
            original_context: rope.original_context,
            scale: rope.attention_factor,
        };
        Self { inv_freq: stretched(&rope.short_factor), head_width: d, long: Some(long) }
    }

    /// `(cos, sin)` of every pair at positions `first..first + n`: `[n][d/2]` each.
    pub fn table(&self, first: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let (inv_freq, scale) = match &self.long {
            Some(long) if first + n > long.original_context => (&long.inv_freq, long.scale),
            Some(long) => (&self.inv_freq, long.scale),
            None => (&self.inv_freq, 1.0),
        };
        let (mut cos, mut sin) = (Vec::with_capacity(n * inv_freq.len()), Vec::new());
        sin.reserve(cos.capacity());
        for p in first..first + n {
            for &f in inv_freq {
                let (s, c) = (p as f32 * f).sin_cos();
                cos.push(c * scale);
                sin.push(s * scale);
            }
        }
        (cos, sin)
    }

    /// Rotates every head of every row of `x` (`[n, heads * d]`, row `r` at the table's position `r`).
    pub fn apply(&self, x: &mut [f32], heads: usize, table: &(Vec<f32>, Vec<f32>)) {
        let width = heads * self.head_width;
        self.apply_strided(x, width, 0, heads, table);
    }

    /// Rotates the `heads` heads that start `offset` floats into each `stride`-long row of `rows` (the queries or
    /// keys of a fused Q/K/V output), row `r` at the table's position `r`.
    pub fn apply_strided(
        &self,
        rows: &mut [f32],
        stride: usize,
        offset: usize,
        heads: usize,
        (cos, sin): &(Vec<f32>, Vec<f32>),
    ) {
        let half = self.inv_freq.len();
        for (r, row) in rows.chunks_exact_mut(stride).enumerate() {
            let (cos, sin) = (&cos[r * half..][..half], &sin[r * half..][..half]);
            for head in row[offset..][..heads * self.head_width].chunks_exact_mut(self.head_width) {
                let (a, b) = head[..2 * half].split_at_mut(half);
                for i in 0..half {
                    let (x0, x1) = (a[i], b[i]);
                    a[i] = x0 * cos[i] - x1 * sin[i];
                    b[i] = x1 * cos[i] + x0 * sin[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_rope_switches_factors_past_the_original_context_and_scales() {
        let (d, theta) = (8, 10_000f32);
        let rope = LongRope {
            short_factor: vec![1.0, 1.5, 2.0, 4.0],
            long_factor: vec![2.0, 3.0, 5.0, 9.0],
            original_context: 16,
            attention_factor: 1.5,
        };
        let rotary = Rotary::long_rope(d, theta, &rope);
        let want = |p: usize, factors: &[f32], i: usize| {
            let angle = p as f64 / (f64::from(factors[i]) * f64::from(theta).powf(2.0 * i as f64 / d as f64));
            (1.5 * angle.cos(), 1.5 * angle.sin())
        };
        // Positions 10..16 end within the original context: the short factors; 10..17 does not: the long ones.
        for (n, factors) in [(6, &rope.short_factor), (7, &rope.long_factor)] {
            let (cos, sin) = rotary.table(10, n);
            for (r, p) in (10..10 + n).enumerate() {
                for i in 0..d / 2 {
                    let (c, s) = want(p, factors, i);
                    assert!((f64::from(cos[r * 4 + i]) - c).abs() < 1e-5, "cos p{p} i{i}");
                    assert!((f64::from(sin[r * 4 + i]) - s).abs() < 1e-5, "sin p{p} i{i}");
                }
            }
        }
        // A partial rotary turns the first dimensions of each head and passes the others.
        let partial = Rotary::new(4, theta, RopeScaling::None).within_heads(6);
        let mut x: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let table = partial.table(3, 1);
        partial.apply(&mut x, 2, &table);
        let mut alone: Vec<f32> = [0.0, 1.0, 2.0, 3.0, 6.0, 7.0, 8.0, 9.0].to_vec();
        Rotary::new(4, theta, RopeScaling::None).apply(&mut alone, 2, &table);
        assert_eq!([&x[0..4], &x[6..10]].concat(), alone);
        assert_eq!((x[4], x[5], x[10], x[11]), (4.0, 5.0, 10.0, 11.0));
        // Without LongRoPE nothing is scaled.
        let (cos, _) = Rotary::new(d, theta, RopeScaling::None).table(0, 1);
        assert_eq!(cos, [1.0; 4]);
    }
}
