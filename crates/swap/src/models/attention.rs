//! Self-attention over a batch of sequences of different lengths, computed per sequence and head over that
//! sequence's own tokens only, in a fixed order: a sequence's result never depends on what it was batched with
//! (padding is skipped, not masked), which keeps quantized embeddings bit-identical alone or in a batch.

use qlayers::threads::{parallel_for_work, SharedMut};

use super::lanes::{fold_lanes, level, F32Lanes, Level, Portable};
#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2, Avx512};
use super::ops::exp;

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

/// Keys and head dims are padded to a multiple of this: two vectors of the widest level.
const PAD: usize = 32;
/// Queries computed together: their accumulators are independent chains, and they share each key and value load.
const QUERY_BLOCK: usize = 4;

/// `softmax(q k^T / sqrt(d)) v` for every sequence and head; sequence `b` holds rows `starts[b]..starts[b] +
/// lens[b]` of `qkv`. Returns `[rows, heads * head_dim]` (rows of `qkv`), zero in rows no sequence covers.
pub fn attention(
    qkv: &[f32],
    layout: QkvLayout,
    rows: usize,
    heads: usize,
    head_dim: usize,
    starts: &[usize],
    lens: &[usize],
) -> Vec<f32> {
    let width = heads * head_dim;
    let mut out = vec![0f32; rows * width];
    let shared = SharedMut(out.as_mut_ptr());
    let work: usize = lens.iter().map(|&len| 2 * len * len * width).sum();
    parallel_for_work(starts.len() * heads, work, |task| {
        let (b, h) = (task / heads, task % heads);
        let seq = Sequence { first: starts[b], len: lens[b], col: h * head_dim, d: head_dim };
        // SAFETY: task (b, h) writes only columns h * head_dim.. of sequence b's rows.
        unsafe { head(qkv, layout, seq, width, shared.get()) };
    });
    out
}

/// One sequence's rows and one head's columns.
#[derive(Clone, Copy)]
struct Sequence {
    first: usize,
    len: usize,
    col: usize,
    d: usize,
}

unsafe fn head(qkv: &[f32], l: QkvLayout, s: Sequence, width: usize, out: *mut f32) {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => head_avx512(qkv, l, s, width, out),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => head_avx2(qkv, l, s, width, out),
        Level::Portable => head_generic::<Portable>(qkv, l, s, width, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn head_avx512(qkv: &[f32], l: QkvLayout, s: Sequence, width: usize, out: *mut f32) {
    head_generic::<Avx512>(qkv, l, s, width, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_avx2(qkv: &[f32], l: QkvLayout, s: Sequence, width: usize, out: *mut f32) {
    head_generic::<Avx2>(qkv, l, s, width, out)
}

/// One sequence and head. Each query's sums run in the same order whether it is computed in a block or alone,
/// and lanes never mix, so the result is the same at every level and whatever the batch.
#[inline(always)]
unsafe fn head_generic<L: F32Lanes>(qkv: &[f32], l: QkvLayout, s: Sequence, width: usize, out: *mut f32) {
    let Sequence { first, len, col, d } = s;
    let row = |t: usize, offset: usize| &qkv[(first + t) * l.row_stride + offset + col..][..d];
    // Keys transposed to [d][padded len] so that a query's scores against a vector of keys are one vector sum;
    // values copied to [len][padded d]. Padding is zeros.
    let keys_len = len.next_multiple_of(PAD);
    let dims = d.next_multiple_of(PAD);
    let mut keys_t = vec![0f32; d * keys_len];
    let mut values = vec![0f32; len * dims];
    for j in 0..len {
        for (i, &v) in row(j, l.k).iter().enumerate() {
            keys_t[i * keys_len + j] = v;
        }
        values[j * dims..j * dims + d].copy_from_slice(row(j, l.v));
    }
    let scale = 1.0 / (d as f32).sqrt();
    let mut queries = vec![0f32; len * d];
    for (t, dst) in queries.chunks_exact_mut(d).enumerate() {
        dst.iter_mut().zip(row(t, l.q)).for_each(|(q, &v)| *q = v * scale);
    }
    let head = Head { keys_t, values, keys_len, dims, len, d };
    let mut scores = vec![0f32; QUERY_BLOCK * keys_len];
    let mut context = vec![0f32; QUERY_BLOCK * dims];
    let mut i = 0;
    while i < len {
        let block = if i + QUERY_BLOCK <= len { QUERY_BLOCK } else { 1 };
        let q = queries[i * d..].as_ptr();
        if block == QUERY_BLOCK {
            head.block::<L, QUERY_BLOCK>(q, &mut scores, &mut context);
        } else {
            head.block::<L, 1>(q, &mut scores, &mut context);
        }
        for b in 0..block {
            std::ptr::copy_nonoverlapping(context[b * dims..].as_ptr(), out.add((first + i + b) * width + col), d);
        }
        i += block;
    }
}

/// One head of one sequence, keys and values laid out for the blocks.
struct Head {
    keys_t: Vec<f32>,
    values: Vec<f32>,
    keys_len: usize,
    dims: usize,
    len: usize,
    d: usize,
}

impl Head {
    /// The context rows of the `B` scaled queries at `queries` (`B x d`) into `context` (`B x dims`), using
    /// `scores` (`B x keys_len`) as scratch. Two vectors of keys (or dims) per pass: `2B` independent sums.
    #[inline(always)]
    unsafe fn block<L: F32Lanes, const B: usize>(&self, queries: *const f32, scores: &mut [f32], context: &mut [f32]) {
        let (keys_len, dims, len, d) = (self.keys_len, self.dims, self.len, self.d);
        let (keys_t, values, sc) = (self.keys_t.as_ptr(), self.values.as_ptr(), scores.as_mut_ptr());
        for k0 in (0..keys_len).step_by(2 * L::N) {
            let mut acc = [[L::zero(); 2]; B];
            for c in 0..d {
                let k = [L::load(keys_t.add(c * keys_len + k0)), L::load(keys_t.add(c * keys_len + k0 + L::N))];
                for (b, acc) in acc.iter_mut().enumerate() {
                    let q = L::splat(*queries.add(b * d + c));
                    acc[0] = acc[0].add_mul(q, k[0]);
                    acc[1] = acc[1].add_mul(q, k[1]);
                }
            }
            for (b, acc) in acc.iter().enumerate() {
                acc[0].store(sc.add(b * keys_len + k0));
                acc[1].store(sc.add(b * keys_len + k0 + L::N));
            }
        }
        let mut inv = [0f32; B];
        for (b, inv) in inv.iter_mut().enumerate() {
            let scores = &mut scores[b * keys_len..][..len];
            let max = fold_lanes(scores, f32::NEG_INFINITY, f32::max, f32::max);
            scores.iter_mut().for_each(|s| *s = exp(*s - max));
            *inv = 1.0 / fold_lanes(scores, 0.0, |a, b| a + b, |a, b| a + b);
        }
        let sc = scores.as_ptr();
        for c0 in (0..dims).step_by(2 * L::N) {
            let mut acc = [[L::zero(); 2]; B];
            for j in 0..len {
                let v = [L::load(values.add(j * dims + c0)), L::load(values.add(j * dims + c0 + L::N))];
                for (b, acc) in acc.iter_mut().enumerate() {
                    let p = L::splat(*sc.add(b * keys_len + j));
                    acc[0] = acc[0].add_mul(p, v[0]);
                    acc[1] = acc[1].add_mul(p, v[1]);
                }
            }
            for (b, acc) in acc.iter().enumerate() {
                let dst = context.as_mut_ptr().add(b * dims + c0);
                acc[0].store(dst);
                acc[1].store(dst.add(L::N));
                for c in 0..2 * L::N {
                    *dst.add(c) *= inv[b];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_plain_attention_and_ignores_padding() {
        let (seq, heads, d) = (5, 2, 4);
        let width = heads * d;
        let qkv: Vec<f32> = (0..2 * seq * 3 * width).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let layout = QkvLayout { row_stride: 3 * width, q: 0, k: width, v: 2 * width };
        let out = attention(&qkv, layout, 2 * seq, heads, d, &[0, seq], &[3, 5]);
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
        let alone = attention(&qkv[seq * 3 * width..], layout, seq, heads, d, &[0], &[5]);
        assert_eq!(alone, out[seq * width..].to_vec());
    }

    /// Every vector level gives the portable level's bits, on lengths that fill no block or pad exactly.
    #[test]
    fn every_level_matches_the_portable_one() {
        for (len, heads, d) in [(1, 1, 8), (3, 2, 24), (7, 3, 32), (33, 2, 40), (70, 1, 64)] {
            let width = heads * d;
            let qkv: Vec<f32> = (0..len * 3 * width).map(|i| ((i * 7919 % 1009) as f32 / 500.0) - 1.0).collect();
            let layout = QkvLayout { row_stride: 3 * width, q: 0, k: width, v: 2 * width };
            let run = |f: unsafe fn(&[f32], QkvLayout, Sequence, usize, *mut f32)| {
                let mut out = vec![0f32; len * width];
                for h in 0..heads {
                    let seq = Sequence { first: 0, len, col: h * d, d };
                    unsafe { f(&qkv, layout, seq, width, out.as_mut_ptr()) };
                }
                out
            };
            let portable = run(head_generic::<Portable>);
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    assert_eq!(run(head_avx2), portable, "avx2, len {len}, d {d}");
                }
                if is_x86_feature_detected!("avx512f") {
                    assert_eq!(run(head_avx512), portable, "avx512, len {len}, d {d}");
                }
            }
        }
    }
}
