//! What the ggml tests share.

/// The most activation quantization in blocks of 32 (ggml's q8 blocks, an f16 step) and in blocks of `act_block`
/// (ours) can move `x . w` together: each engine rounds an input to its block's step (`max |x| / 127`), so each
/// input is off by at most half a step (ggml's a little more, for the f16), times `|w|`; then the float sums' own
/// rounding.
pub fn activation_bound(w: &[f32], x: &[f32], act_block: usize) -> f32 {
    let k = x.len();
    let step = |block: usize, i: usize| {
        let start = i / block * block;
        x[start..(start + block).min(k)].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0
    };
    let moved: f32 = (0..k).map(|i| w[i].abs() * (0.5 * step(act_block, i) + 0.5625 * step(32, i))).sum();
    moved + 1e-5 * w.iter().zip(x).map(|(w, x)| (w * x).abs()).sum::<f32>()
}
