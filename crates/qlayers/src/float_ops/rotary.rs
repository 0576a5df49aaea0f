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

/// Rotary frequencies of one head width, in HF's half-split layout: pair `i` is `(x[i], x[i + d/2])`.
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    /// The frequencies of heads `d` wide (even) with base `theta`, stretched per `scaling`.
    pub fn new(d: usize, theta: f32, scaling: RopeScaling) -> Self {
        let inv_freq = (0..d / 2)
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
        Self { inv_freq }
    }

    /// `(cos, sin)` of every pair at positions `first..first + n`: `[n][d/2]` each.
    pub fn table(&self, first: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut cos, mut sin) = (Vec::with_capacity(n * self.inv_freq.len()), Vec::new());
        sin.reserve(cos.capacity());
        for p in first..first + n {
            for &f in &self.inv_freq {
                let (s, c) = (p as f32 * f).sin_cos();
                cos.push(c);
                sin.push(s);
            }
        }
        (cos, sin)
    }

    /// Rotates every head of every row of `x` (`[n, heads * d]`, row `r` at the table's position `r`).
    pub fn apply(&self, x: &mut [f32], heads: usize, table: &(Vec<f32>, Vec<f32>)) {
        let width = heads * 2 * self.inv_freq.len();
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
            for head in row[offset..][..heads * 2 * half].chunks_exact_mut(2 * half) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (x0, x1) = (a[i], b[i]);
                    a[i] = x0 * cos[i] - x1 * sin[i];
                    b[i] = x1 * cos[i] + x0 * sin[i];
                }
            }
        }
    }
}
