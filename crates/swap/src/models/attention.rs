//! Self-attention over a batch of sequences of different lengths, computed per sequence and head over that
//! sequence's own tokens only, in a fixed order: a sequence's result never depends on what it was batched with
//! (padding is skipped, not masked), which keeps quantized embeddings bit-identical alone or in a batch.

use qlayers::threads::{parallel_for, SharedMut};

/// Where the queries, keys and values of token `t` of sequence `b` start: `(b * seq + t) * row_stride + offset`.
#[derive(Debug, Clone, Copy)]
pub struct QkvLayout {
    /// Floats between consecutive tokens.
    pub row_stride: usize,
    /// Offset of the queries in a token's row.
    pub q: usize,
    /// Offset of the keys.
    pub k: usize,
    /// Offset of the values.
    pub v: usize,
}

/// `softmax(q k^T / sqrt(d)) v` for every sequence and head; returns `[batch, seq, heads * head_dim]`, with zeros
/// in the rows of padding tokens. `lens[b]` is the number of real tokens of sequence `b`.
pub fn attention(
    qkv: &[f32],
    layout: QkvLayout,
    seq: usize,
    heads: usize,
    head_dim: usize,
    lens: &[usize],
) -> Vec<f32> {
    let batch = lens.len();
    let width = heads * head_dim;
    let mut out = vec![0f32; batch * seq * width];
    let shared = SharedMut(out.as_mut_ptr());
    parallel_for(batch * heads, |task| {
        let (b, h) = (task / heads, task % heads);
        // SAFETY: task (b, h) writes only columns h * head_dim.. of sequence b's rows.
        unsafe { head(qkv, layout, b * seq, lens[b], h * head_dim, head_dim, width, shared.get()) };
    });
    out
}

#[allow(clippy::too_many_arguments)]
unsafe fn head(qkv: &[f32], l: QkvLayout, first: usize, len: usize, col: usize, d: usize, width: usize, out: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        return head_avx2(qkv, l, first, len, col, d, width, out);
    }
    head_generic(qkv, l, first, len, col, d, width, out)
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DETECTED.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_avx2(
    qkv: &[f32],
    l: QkvLayout,
    first: usize,
    len: usize,
    col: usize,
    d: usize,
    width: usize,
    out: *mut f32,
) {
    head_generic(qkv, l, first, len, col, d, width, out)
}

/// One sequence and head. Loops are ordered so the compiler vectorizes the inner one and every sum runs in the
/// same order whatever the batch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn head_generic(
    qkv: &[f32],
    l: QkvLayout,
    first: usize,
    len: usize,
    col: usize,
    d: usize,
    width: usize,
    out: *mut f32,
) {
    let row = |t: usize, offset: usize| &qkv[(first + t) * l.row_stride + offset + col..][..d];
    // Keys transposed, [d][len], so that a query's scores come out as one vector over keys.
    let mut keys_t = vec![0f32; d * len];
    for j in 0..len {
        for (i, &v) in row(j, l.k).iter().enumerate() {
            keys_t[i * len + j] = v;
        }
    }
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0f32; len];
    let mut context = vec![0f32; d];
    for i in 0..len {
        scores.fill(0.0);
        for (c, &q) in row(i, l.q).iter().enumerate() {
            let q = q * scale;
            for (s, &k) in scores.iter_mut().zip(&keys_t[c * len..(c + 1) * len]) {
                *s += q * k;
            }
        }
        let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m });
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = exp(*s - max);
            sum += *s;
        }
        let inv = 1.0 / sum;
        context.fill(0.0);
        for (j, &p) in scores.iter().enumerate() {
            let p = p * inv;
            for (c, &v) in context.iter_mut().zip(row(j, l.v)) {
                *c += p * v;
            }
        }
        std::ptr::copy_nonoverlapping(context.as_ptr(), out.add((first + i) * width + col), d);
    }
}

/// `e^x` for `x <= 0` (softmax arguments), to about 2 ulp: `x = n ln 2 + r`, a degree-6 polynomial for `e^r`,
/// and `2^n` put in the exponent bits. Branch-free, so it vectorizes.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let n = (x * std::f32::consts::LOG2_E + ROUNDER) - ROUNDER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_on_softmax_arguments() {
        for i in 0..10_000 {
            let x = -(i as f32) * 0.0087;
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
    fn matches_plain_attention_and_ignores_padding() {
        let (seq, heads, d) = (5, 2, 4);
        let width = heads * d;
        let qkv: Vec<f32> = (0..2 * seq * 3 * width).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let layout = QkvLayout { row_stride: 3 * width, q: 0, k: width, v: 2 * width };
        let out = attention(&qkv, layout, seq, heads, d, &[3, 5]);
        // Sequence 0 has 3 tokens: compare with a direct computation over those.
        for h in 0..heads {
            for i in 0..3 {
                let q = &qkv[i * 3 * width + h * d..][..d];
                let scores: Vec<f64> = (0..3)
                    .map(|j| {
                        let k = &qkv[j * 3 * width + width + h * d..][..d];
                        q.iter().zip(k).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..d {
                    let want: f64 =
                        (0..3).map(|j| e[j] / total * f64::from(qkv[j * 3 * width + 2 * width + h * d + c])).sum();
                    let got = out[i * width + h * d + c];
                    assert!((f64::from(got) - want).abs() < 1e-5, "h{h} i{i} c{c}: {got} vs {want}");
                }
            }
        }
        // Padding rows are zero, and a sequence alone gives the same bits as in the batch.
        assert!(out[3 * width..5 * width].iter().all(|&v| v == 0.0));
        let alone = attention(&qkv[seq * 3 * width..], layout, seq, heads, d, &[5]);
        assert_eq!(alone, out[seq * width..].to_vec());
    }
}
