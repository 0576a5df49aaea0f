//! Softmax attention, one blocked kernel for two callers:
//! - [`attention`]: bidirectional self-attention over a batch of sequences of different lengths (BERT), computed per
//!   sequence and head over that sequence's own tokens only, in a fixed order: a sequence's result never depends on
//!   what it was batched with (padding is skipped, not masked), which keeps embeddings bit-identical alone or in a
//!   batch.
//! - [`KvHeads`]: a decoder's key/value cache kept in the kernel's layout, with causal attention of new queries over
//!   it (grouped-query heads read their shared key/value head).

use std::ops::Range;

use crate::kernels::prefetch;
use crate::threads::{parallel_for_work, SharedMut};

use super::lanes::{fold_lanes, level, F32Lanes, Level, Portable};
#[cfg(target_arch = "x86_64")]
use super::lanes::{Avx2, Avx512};
use crate::activation::exp_fused;

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

/// An additive attention bias that depends only on the distance from query to key, one table per head (MPNet's
/// relative position buckets, looked up once for every distance).
#[derive(Debug, Clone)]
pub struct RelativeBias {
    /// `[heads][2 * span - 1]`: the bias of key `j` for query `i` is at `span - 1 + j - i`.
    values: Vec<f32>,
    span: usize,
}

impl RelativeBias {
    /// The bias table of `heads` heads for sequences of up to `span` tokens, `bias(head, key - query)` for every
    /// distance.
    pub fn new(heads: usize, span: usize, bias: impl Fn(usize, isize) -> f32) -> Self {
        let distances = 2 * span - 1;
        let values = (0..heads * distances)
            .map(|i| bias(i / distances, (i % distances) as isize - (span as isize - 1)))
            .collect();
        Self { values, span }
    }

    /// The longest sequence the table covers.
    pub fn span(&self) -> usize {
        self.span
    }

    /// The bias of every query and key of a `len`-token sequence, `[heads][len][len]` (query-major): what a
    /// dense attention adds to its scores. `len` is at most [`RelativeBias::span`].
    pub fn matrix(&self, len: usize) -> Vec<f32> {
        assert!(len <= self.span, "the bias covers {} tokens, not {len}", self.span);
        let heads = self.values.len() / (2 * self.span - 1);
        let mut out = Vec::with_capacity(heads * len * len);
        for h in 0..heads {
            let row = self.head(h);
            for i in 0..len {
                out.extend((0..len).map(|j| row[self.span - 1 + j - i]));
            }
        }
        out
    }

    /// Head `h`'s row.
    fn head(&self, h: usize) -> &[f32] {
        let distances = 2 * self.span - 1;
        &self.values[h * distances..][..distances]
    }
}

/// What shapes a head's scores beyond `q k^T / sqrt(d)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionOptions<'a> {
    /// Added to every score (MPNet's relative positions).
    pub bias: Option<&'a RelativeBias>,
    /// A token sees only the keys at most this far from it on either side (ModernBERT's local layers).
    pub window: Option<usize>,
}

/// `softmax(q k^T / sqrt(d) + bias) v` over the keys each query sees, for every sequence and head; sequence `b` holds rows `starts[b]..starts[b] +
/// lens[b]` of `qkv`. Returns `[rows, heads * head_dim]` (rows of `qkv`), zero in rows no sequence covers.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    qkv: &[f32],
    layout: QkvLayout,
    rows: usize,
    heads: usize,
    head_dim: usize,
    starts: &[usize],
    lens: &[usize],
    options: AttentionOptions,
) -> Vec<f32> {
    let mut out = vec![0f32; rows * heads * head_dim];
    attention_into(qkv, layout, heads, head_dim, starts, lens, options, &mut out);
    out
}

/// [`attention`] into `out` (`[rows, heads * head_dim]`), reusing its memory: the rows of every sequence are
/// overwritten, the others left as they are.
#[allow(clippy::too_many_arguments)]
pub fn attention_into(
    qkv: &[f32],
    layout: QkvLayout,
    heads: usize,
    head_dim: usize,
    starts: &[usize],
    lens: &[usize],
    options: AttentionOptions,
    out: &mut [f32],
) {
    let width = heads * head_dim;
    assert!(
        starts.iter().zip(lens).all(|(&s, &l)| (s + l) * width <= out.len()),
        "every sequence's rows lie inside the output"
    );
    let AttentionOptions { bias, window } = options;
    assert!(bias.is_none_or(|b| lens.iter().all(|&l| l <= b.span())), "the bias covers every sequence");
    let shared = SharedMut(out.as_mut_ptr());
    let work: usize = lens.iter().map(|&len| 2 * len * len * width).sum();
    parallel_for_work(starts.len() * heads, work, |task| {
        let (b, h) = (task / heads, task % heads);
        let bias = bias.map(|b| (b.head(h), b.span));
        let seq = Sequence { first: starts[b], len: lens[b], col: h * head_dim, d: head_dim, bias, window };
        // SAFETY: task (b, h) writes only columns h * head_dim.. of sequence b's rows.
        unsafe { head(qkv, layout, seq, width, shared.get()) };
    });
}

/// Rows of a sequence fetched ahead of the one being laid out.
const ROWS_AHEAD: usize = 4;

/// Copies `len` floats from `src` to `dst` a vector at a time: rows here are a few dozen floats, too short for a
/// call to `memcpy` (hundreds of thousands of them a batch) to pay.
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `len` floats, and they do not overlap.
#[inline(always)]
unsafe fn copy_row<L: F32Lanes>(src: *const f32, dst: *mut f32, len: usize) {
    let mut i = 0;
    while i + L::N <= len {
        L::load(src.add(i)).store(dst.add(i));
        i += L::N;
    }
    while i < len {
        *dst.add(i) = *src.add(i);
        i += 1;
    }
}

/// One sequence's rows and one head's columns.
#[derive(Clone, Copy)]
struct Sequence<'a> {
    first: usize,
    len: usize,
    col: usize,
    d: usize,
    /// The head's row of a [`RelativeBias`] and its span.
    bias: Option<(&'a [f32], usize)>,
    /// See [`AttentionOptions::window`].
    window: Option<usize>,
}

/// One sequence and head at the best vector level.
///
/// # Safety
/// `out` is valid for writes of the sequence's rows (`width` floats apart) and no other thread writes columns
/// `s.col..s.col + s.d` of them meanwhile; `qkv` holds the sequence's rows.
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
/// [`head_generic`] compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512F, and as [`head`].
unsafe fn head_avx512(qkv: &[f32], l: QkvLayout, s: Sequence, width: usize, out: *mut f32) {
    head_generic::<Avx512>(qkv, l, s, width, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// [`head_generic`] compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA, and as [`head`].
unsafe fn head_avx2(qkv: &[f32], l: QkvLayout, s: Sequence, width: usize, out: *mut f32) {
    head_generic::<Avx2>(qkv, l, s, width, out)
}

/// One sequence and head. Each query's sums run in the same order whether it is computed in a block or alone,
/// and lanes never mix, so the result is the same at every level and whatever the batch.
///
/// # Safety
/// The CPU supports `L`'s instructions (the caller is compiled with them), and as [`head`].
#[inline(always)]
unsafe fn head_generic<L: F32Lanes>(qkv: &[f32], l: QkvLayout, s: Sequence, width: usize, out: *mut f32) {
    let Sequence { first, len, col, d, bias, window } = s;
    let row = |t: usize, offset: usize| &qkv[(first + t) * l.row_stride + offset + col..][..d];
    // Keys transposed to [d][padded len] so that a query's scores against a vector of keys are one vector sum;
    // values copied to [len][padded d]. Padding is zeros.
    let keys_len = len.next_multiple_of(PAD);
    let dims = d.next_multiple_of(PAD);
    let mut keys_t = vec![0f32; d * keys_len];
    let mut values = vec![0f32; len * dims];
    let mut queries = vec![0f32; len * d];
    let scale = 1.0 / (d as f32).sqrt();
    // One pass over the sequence's rows. Each holds this head's queries, keys and values as three short pieces a
    // few KB apart, a pattern the hardware prefetchers miss: the rows a few steps ahead are asked for explicitly.
    for j in 0..len {
        if j + ROWS_AHEAD < len {
            for offset in [l.q, l.k, l.v] {
                prefetch(row(j + ROWS_AHEAD, offset).as_ptr().cast(), 4 * d);
            }
        }
        let (q, k, v) = (row(j, l.q).as_ptr(), row(j, l.k).as_ptr(), row(j, l.v).as_ptr());
        for i in 0..d {
            // SAFETY: `i * keys_len + j < d * keys_len`, and the rows hold `d` values each.
            *keys_t.as_mut_ptr().add(i * keys_len + j) = *k.add(i);
        }
        copy_row::<L>(v, values.as_mut_ptr().add(j * dims), d);
        let dst = queries.as_mut_ptr().add(j * d);
        let mut c = 0;
        while c + L::N <= d {
            L::exact_product(L::load(q.add(c)), L::splat(scale)).store(dst.add(c));
            c += L::N;
        }
        for c in c..d {
            *dst.add(c) = *q.add(c) * scale;
        }
    }
    let head = Head { keys_t: &keys_t, values: &values, keys_len, dims, d, bias, softcap: None };
    let visible = |i: usize| match window {
        Some(w) => i.saturating_sub(w)..len.min(i + w + 1),
        None => 0..len,
    };
    head.attend::<L>(&queries, visible, |i, context| {
        copy_row::<L>(context.as_ptr(), out.add((first + i) * width + col), d)
    });
}

/// One head's keys and values laid out for the blocks: keys transposed to `[d][keys_len]`, values `[keys][dims]`.
struct Head<'a> {
    keys_t: &'a [f32],
    values: &'a [f32],
    /// Stride of the transposed keys (a multiple of [`PAD`]).
    keys_len: usize,
    /// Stride of the values: `d` padded to [`PAD`].
    dims: usize,
    d: usize,
    /// Added to the scores: the bias of key `j` for query `i` is `row[span - 1 + j - i]`.
    bias: Option<(&'a [f32], usize)>,
    /// See [`CausalOptions::softcap`].
    softcap: Option<f32>,
}

impl Head<'_> {
    /// Attends every scaled query of `queries` (`[n][d]`): query `i` sees the keys `visible(i)` (ranges whose
    /// starts and ends never decrease with `i`), and its context row (`dims` long, `d` of them meaningful) goes to
    /// `emit(i, row)`. Queries run in blocks of [`QUERY_BLOCK`]; each one's sums run in the same order whatever its
    /// block, so the result is the same computed in a block or alone.
    ///
    /// # Safety
    /// The CPU supports `L`'s instructions, and `emit` may be handed rows of `dims` floats.
    #[inline(always)]
    unsafe fn attend<L: F32Lanes>(
        &self,
        queries: &[f32],
        visible: impl Fn(usize) -> Range<usize>,
        mut emit: impl FnMut(usize, &[f32]),
    ) {
        let n = queries.len() / self.d;
        let mut scores = vec![0f32; QUERY_BLOCK * self.keys_len];
        let mut context = vec![0f32; QUERY_BLOCK * self.dims];
        let mut i = 0;
        while i < n {
            let q = queries[i * self.d..].as_ptr();
            let block = if i + QUERY_BLOCK <= n { QUERY_BLOCK } else { 1 };
            if block == QUERY_BLOCK {
                let visible = std::array::from_fn(|b| visible(i + b));
                self.block::<L, QUERY_BLOCK>(q, i, visible, &mut scores, &mut context);
            } else {
                self.block::<L, 1>(q, i, [visible(i)], &mut scores, &mut context);
            }
            for b in 0..block {
                emit(i + b, &context[b * self.dims..][..self.dims]);
            }
            i += block;
        }
    }

    /// The context rows of the `B` scaled queries at `queries` (`B x d`, the sequence's queries `first..`) into
    /// `context` (`B x dims`), using `scores` (`B x keys_len`) as scratch; query `b` sees the keys `visible[b]`
    /// (the last block's reach the furthest).
    /// Two vectors of keys (or dims) per pass: `2B` independent sums.
    ///
    /// # Safety
    /// The CPU supports `L`'s instructions; `queries` holds `B x d` floats, `scores` and `context` the sizes
    /// above, and `visible[b]` is at most the head's keys.
    #[inline(always)]
    unsafe fn block<L: F32Lanes, const B: usize>(
        &self,
        queries: *const f32,
        first: usize,
        visible: [Range<usize>; B],
        scores: &mut [f32],
        context: &mut [f32],
    ) {
        let (keys_len, dims, d) = (self.keys_len, self.dims, self.d);
        let len = visible[B - 1].end;
        let (keys_t, values, sc) = (self.keys_t.as_ptr(), self.values.as_ptr(), scores.as_mut_ptr());
        for k0 in (0..len.next_multiple_of(2 * L::N)).step_by(2 * L::N) {
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
            let Range { start, end } = visible[b];
            let (before, rest) = scores[b * keys_len..][..len].split_at_mut(start);
            let (seen, unseen) = rest.split_at_mut(end - start);
            if let Some((row, span)) = self.bias {
                // Key j's bias for query first + b is at span - 1 + j - (first + b).
                let row = &row[span - 1 + start - (first + b)..][..seen.len()];
                seen.iter_mut().zip(row).for_each(|(s, &bias)| *s += bias);
            }
            if let Some(cap) = self.softcap {
                // Gemma 2's soft-capping, in scalar code (the same bits at every level).
                seen.iter_mut().for_each(|s| *s = cap * (*s / cap).tanh());
            }
            let max = fold_lanes(seen, f32::NEG_INFINITY, f32::max, f32::max);
            seen.iter_mut().for_each(|s| *s = exp_fused(*s - max));
            *inv = 1.0 / fold_lanes(seen, 0.0, |a, b| a + b, |a, b| a + b);
            // Keys a query does not see weigh exactly 0, adding nothing to its sums.
            before.fill(0.0);
            unseen.fill(0.0);
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
                let inv = L::splat(inv[b]);
                L::exact_product(acc[0], inv).store(dst);
                L::exact_product(acc[1], inv).store(dst.add(L::N));
            }
        }
    }
}

/// One layer's keys and values of a decoder, kept in the attention kernel's layout so that a new token costs no
/// re-layout: per key/value head, keys transposed to `[d][capacity]` and values as `[capacity][dims]`. The capacity
/// grows by doubling.
///
/// With a sliding window of `w` tokens (each query sees itself and the `w - 1` tokens before it), keys no later
/// query can see are dropped: when the buffer is full, the last `w - 1` tokens move to its front, and once the
/// window is passed the buffer holds room for `2 w` tokens (plus the prompt being run), so memory stays flat however
/// long the sequence and a move happens once every `w` or so tokens.
#[derive(Debug, Clone)]
pub struct KvHeads {
    heads: usize,
    d: usize,
    dims: usize,
    capacity: usize,
    /// Tokens seen: positions `0..len`.
    len: usize,
    /// Position of the first token held (at buffer index 0); 0 without a window.
    start: usize,
    /// The sliding window, if any.
    window: Option<usize>,
    keys_t: Vec<f32>,
    values: Vec<f32>,
}

impl KvHeads {
    /// An empty cache for `heads` key/value heads of width `d`, every query seeing every key before it.
    pub fn new(heads: usize, d: usize) -> Self {
        let dims = d.next_multiple_of(PAD);
        Self { heads, d, dims, capacity: 0, len: 0, start: 0, window: None, keys_t: Vec::new(), values: Vec::new() }
    }

    /// An empty cache for sliding-window attention over `window` tokens (at least 1; see the type's docs).
    pub fn with_window(heads: usize, d: usize, window: usize) -> Self {
        Self { window: Some(window.max(1)), ..Self::new(heads, d) }
    }

    /// Tokens seen.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token has been seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens whose keys and values are held (all seen, without a window).
    pub fn held(&self) -> usize {
        self.len - self.start
    }

    /// Bytes of the key and value buffers.
    pub fn bytes(&self) -> usize {
        4 * (self.keys_t.len() + self.values.len())
    }

    /// Appends the keys and values of new tokens, `[tokens, heads * d]` each.
    pub fn append(&mut self, k: &[f32], v: &[f32]) {
        let width = self.heads * self.d;
        assert_eq!(k.len(), v.len(), "keys and values of the same tokens");
        let rows = k.len() / width;
        self.make_room(rows);
        let (d, dims, cap) = (self.d, self.dims, self.capacity);
        for r in 0..rows {
            let t = self.held() + r;
            for h in 0..self.heads {
                let (key, value) = (&k[r * width + h * d..][..d], &v[r * width + h * d..][..d]);
                for (c, &x) in key.iter().enumerate() {
                    self.keys_t[(h * d + c) * cap + t] = x;
                }
                self.values[(h * cap + t) * dims..][..d].copy_from_slice(value);
            }
        }
        self.len += rows;
    }

    /// Room for `rows` more tokens: first by dropping the keys that the first of them cannot see (with a window),
    /// then by growing the buffers.
    fn make_room(&mut self, rows: usize) {
        if self.held() + rows <= self.capacity {
            return;
        }
        let mut floor = 0;
        if let Some(w) = self.window {
            // The first new token, at position `len`, sees positions `len + 1 - w` on.
            self.drop_before((self.len + 1).saturating_sub(w));
            if self.len + rows > w {
                floor = 2 * w;
            }
        }
        let needed = self.held() + rows;
        if needed > self.capacity {
            self.grow(needed.max(floor));
        }
    }

    /// Drops the tokens before position `first`, moving the rest to the front of the buffers.
    fn drop_before(&mut self, first: usize) {
        if first <= self.start {
            return;
        }
        let (drop, keep) = (first - self.start, self.len - first);
        let (cap, dims) = (self.capacity, self.dims);
        for row in 0..self.heads * self.d {
            self.keys_t.copy_within(row * cap + drop..row * cap + drop + keep, row * cap);
        }
        for h in 0..self.heads {
            let base = h * cap * dims;
            self.values.copy_within(base + drop * dims..base + (drop + keep) * dims, base);
        }
        self.start = first;
    }

    /// Buffers for at least `needed` tokens, with what is held moved into them.
    fn grow(&mut self, needed: usize) {
        let capacity = needed.max(2 * self.capacity).max(64).next_multiple_of(PAD);
        let (d, dims, old, held) = (self.d, self.dims, self.capacity, self.held());
        let mut keys_t = vec![0f32; self.heads * d * capacity];
        let mut values = vec![0f32; self.heads * capacity * dims];
        for h in 0..self.heads {
            for c in 0..d {
                let row = h * d + c;
                keys_t[row * capacity..][..held].copy_from_slice(&self.keys_t[row * old..][..held]);
            }
            values[h * capacity * dims..][..held * dims].copy_from_slice(&self.values[h * old * dims..][..held * dims]);
        }
        (self.keys_t, self.values, self.capacity) = (keys_t, values, capacity);
    }

    /// Causal attention of the newest `n` tokens (the last `n` appended), `q` being their queries
    /// (`[n, query_heads * d]`, unscaled): query head `h` reads key/value head `h / (query_heads / heads)`, over the
    /// keys up to its own position (and within the window, if any). Returns `[n, query_heads * d]`. A token's
    /// result is the same whether it came with the prompt or alone.
    pub fn causal_attention(&self, q: &[f32], query_heads: usize) -> Vec<f32> {
        self.causal_attention_with(q, query_heads, CausalOptions::default())
    }

    /// [`KvHeads::causal_attention`] with the scores shaped per `options` (a query scale of its own, soft-capping).
    pub fn causal_attention_with(&self, q: &[f32], query_heads: usize, options: CausalOptions) -> Vec<f32> {
        let (d, width) = (self.d, query_heads * self.d);
        let scale = options.scale.unwrap_or(1.0 / (d as f32).sqrt());
        let softcap = options.softcap;
        let n = q.len() / width;
        assert!(n <= self.held() && query_heads.is_multiple_of(self.heads), "queries of cached tokens");
        let group = query_heads / self.heads;
        let mut out = vec![0f32; n * width];
        let shared = SharedMut(out.as_mut_ptr());
        let work = 4 * n * self.held() * width;
        // Query `i` is at position `len - n + i`, buffer index `held - n + i`.
        let past = self.held() - n;
        let window = self.window;
        let visible = move |i: usize| {
            let end = past + i + 1;
            window.map_or(0, |w| end.saturating_sub(w))..end
        };
        parallel_for_work(query_heads, work, |h| {
            let kv = h / group;
            let head = Head {
                keys_t: &self.keys_t[kv * d * self.capacity..][..d * self.capacity],
                values: &self.values[kv * self.capacity * self.dims..][..self.capacity * self.dims],
                keys_len: self.capacity,
                dims: self.dims,
                d,
                bias: None,
                softcap,
            };
            // SAFETY: task h writes only columns h * d.. of every row.
            unsafe { causal_head(&head, q, scale, h * d, width, &visible, shared.get()) };
        });
        out
    }
}

/// What shapes the scores of [`KvHeads::causal_attention_with`] beyond `q k^T / sqrt(d)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CausalOptions {
    /// The factor of the queries, in place of `1 / sqrt(d)` (Gemma's `query_pre_attn_scalar ** -0.5`).
    pub scale: Option<f32>,
    /// Soft-capping: each score becomes `cap * tanh(score / cap)` before the softmax (Gemma 2's
    /// `attn_logit_softcapping`).
    pub softcap: Option<f32>,
}

/// One query head of [`KvHeads::causal_attention`] at the best vector level.
///
/// # Safety
/// `out` is valid for writes of `q`'s rows (`width` floats apart) and no other thread writes columns
/// `col..col + d` of them meanwhile; `visible(i)` is within the head's keys.
unsafe fn causal_head(head: &Head, q: &[f32], scale: f32, col: usize, width: usize, visible: &Visible, out: *mut f32) {
    match level() {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => causal_head_avx512(head, q, scale, col, width, visible, out),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => causal_head_avx2(head, q, scale, col, width, visible, out),
        Level::Portable => causal_head_generic::<Portable>(head, q, scale, col, width, visible, out),
    }
}

/// The keys query `i` sees, as buffer indices.
type Visible = dyn Fn(usize) -> Range<usize> + Sync;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
/// [`causal_head_generic`] compiled for AVX-512.
///
/// # Safety
/// The CPU has AVX-512F, and as [`causal_head`].
unsafe fn causal_head_avx512(
    head: &Head,
    q: &[f32],
    scale: f32,
    col: usize,
    width: usize,
    visible: &Visible,
    out: *mut f32,
) {
    causal_head_generic::<Avx512>(head, q, scale, col, width, visible, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
/// [`causal_head_generic`] compiled for AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA, and as [`causal_head`].
unsafe fn causal_head_avx2(
    head: &Head,
    q: &[f32],
    scale: f32,
    col: usize,
    width: usize,
    visible: &Visible,
    out: *mut f32,
) {
    causal_head_generic::<Avx2>(head, q, scale, col, width, visible, out)
}

/// One query head: its columns `col..col + d` of every row of `q`, the query of row `i` seeing the keys
/// `visible(i)`.
///
/// # Safety
/// The CPU supports `L`'s instructions (the caller is compiled with them), and as [`causal_head`].
#[inline(always)]
unsafe fn causal_head_generic<L: F32Lanes>(
    head: &Head,
    q: &[f32],
    scale: f32,
    col: usize,
    width: usize,
    visible: &Visible,
    out: *mut f32,
) {
    let d = head.d;
    let queries: Vec<f32> =
        q.chunks_exact(width).flat_map(|row| row[col..col + d].iter().map(|&v| v * scale)).collect();
    head.attend::<L>(&queries, visible, |i, context| {
        std::ptr::copy_nonoverlapping(context.as_ptr(), out.add(i * width + col), d)
    });
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
        let out = attention(&qkv, layout, 2 * seq, heads, d, &[0, seq], &[3, 5], AttentionOptions::default());
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
        let alone = attention(&qkv[seq * 3 * width..], layout, seq, heads, d, &[0], &[5], AttentionOptions::default());
        assert_eq!(alone, out[seq * width..].to_vec());
    }

    /// A decoder's queries (`[n, heads * d]`), keys and values (`[n, kv_heads * d]`) for the causal tests, and
    /// their attention computed directly in f64.
    struct DecoderInputs {
        heads: usize,
        kv_heads: usize,
        d: usize,
        q: Vec<f32>,
        k: Vec<f32>,
        v: Vec<f32>,
    }

    impl DecoderInputs {
        fn new(heads: usize, kv_heads: usize, d: usize, n: usize, value: impl Fn(usize) -> f32) -> Self {
            let q = (0..n * heads * d).map(&value).collect();
            let k = (0..n * kv_heads * d).map(|i| value(i + 13)).collect();
            let v = (0..n * kv_heads * d).map(|i| value(i + 101)).collect();
            Self { heads, kv_heads, d, q, k, v }
        }

        /// Checks `out` (`[n, heads * d]`) at `tokens` against `softmax(logit(q . k))` over the keys each sees:
        /// all before it, or the last `window` with one.
        fn assert_direct(&self, out: &[f32], tokens: &[usize], window: Option<usize>, logit: impl Fn(f64) -> f64) {
            let (d, qw, kw) = (self.d, self.heads * self.d, self.kv_heads * self.d);
            for &i in tokens {
                let seen: Vec<usize> = (window.map_or(0, |w| (i + 1).saturating_sub(w))..=i).collect();
                for h in 0..self.heads {
                    let kv = h / (self.heads / self.kv_heads);
                    let query = &self.q[i * qw + h * d..][..d];
                    let scores: Vec<f64> = seen
                        .iter()
                        .map(|&j| {
                            let key = &self.k[j * kw + kv * d..][..d];
                            logit(query.iter().zip(key).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum())
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for c in 0..d {
                        let value = |j: usize| f64::from(self.v[j * kw + kv * d + c]);
                        let want: f64 = seen.iter().zip(&e).map(|(&j, e)| e / total * value(j)).sum();
                        let got = f64::from(out[i * qw + h * d + c]);
                        assert!((got - want).abs() < 1e-5, "token {i} head {h} dim {c}: {got} vs {want}");
                    }
                }
            }
        }
    }

    /// Causal attention over the cache against a direct computation, with grouped-query heads, and the same bits
    /// for a token whether it comes with the prompt or alone.
    #[test]
    fn causal_attention_over_the_cache() {
        let (heads, kv_heads, d, n) = (6, 2, 24, 70);
        let t = DecoderInputs::new(heads, kv_heads, d, n, |i| ((i * 7919 % 1009) as f32 / 500.0) - 1.0);
        let (q, k, v) = (&t.q, &t.k, &t.v);
        let mut all = KvHeads::new(kv_heads, d);
        all.append(k, v);
        let at_once = all.causal_attention(q, heads);
        let (qw, kw) = (heads * d, kv_heads * d);
        let plain = 1.0 / (d as f64).sqrt();
        t.assert_direct(&at_once, &[0, 1, 5, 69], None, |s| s * plain);
        // Token by token (the cache growing past its first capacity) gives the same bits.
        let mut cache = KvHeads::new(kv_heads, d);
        for i in 0..n {
            cache.append(&k[i * kw..(i + 1) * kw], &v[i * kw..(i + 1) * kw]);
            let one = cache.causal_attention(&q[i * qw..(i + 1) * qw], heads);
            assert_eq!(one, at_once[i * qw..(i + 1) * qw].to_vec(), "token {i}");
        }
        assert_eq!(cache.len(), n);
    }

    /// A query scale of its own and soft-capped scores (Gemma 2) against a direct computation, with a window.
    #[test]
    fn scaled_soft_capped_attention_matches_a_direct_computation() {
        let (heads, kv_heads, d, n, w, scale, cap) = (4, 2, 16, 40, 8, 0.4f64, 2.0f64);
        let t = DecoderInputs::new(heads, kv_heads, d, n, |i| ((i * 7919 % 1009) as f32 / 300.0) - 1.7);
        let mut cache = KvHeads::with_window(kv_heads, d, w);
        cache.append(&t.k, &t.v);
        let options = CausalOptions { scale: Some(scale as f32), softcap: Some(cap as f32) };
        let out = cache.causal_attention_with(&t.q, heads, options);
        t.assert_direct(&out, &[0, 3, w, n - 1], Some(w), |s| cap * (s * scale / cap).tanh());
    }

    /// Sliding-window causal attention against a direct computation over the last `w` positions, the same bits
    /// token by token as all at once (the buffer dropping old keys meanwhile), and memory flat past the window.
    #[test]
    fn sliding_window_attention_over_the_cache() {
        let (heads, kv_heads, d, n, w) = (4, 2, 20, 300, 24);
        let t = DecoderInputs::new(heads, kv_heads, d, n, |i| ((i * 7919 % 1009) as f32 / 500.0) - 1.0);
        let (q, k, v) = (&t.q, &t.k, &t.v);
        let (qw, kw) = (heads * d, kv_heads * d);
        let mut all = KvHeads::with_window(kv_heads, d, w);
        all.append(k, v);
        let at_once = all.causal_attention(q, heads);
        let plain = 1.0 / (d as f64).sqrt();
        t.assert_direct(&at_once, &[0, 1, w - 1, w, w + 1, n - 1], Some(w), |s| s * plain);
        let mut cache = KvHeads::with_window(kv_heads, d, w);
        let mut peak = 0;
        for i in 0..n {
            cache.append(&k[i * kw..(i + 1) * kw], &v[i * kw..(i + 1) * kw]);
            let one = cache.causal_attention(&q[i * qw..(i + 1) * qw], heads);
            assert_eq!(one, at_once[i * qw..(i + 1) * qw].to_vec(), "token {i}");
            assert!(cache.held() <= 2 * w.max(64), "token {i}: {} held", cache.held());
            if i == 2 * w.max(64) {
                peak = cache.bytes();
            }
        }
        assert_eq!((cache.len(), cache.bytes()), (n, peak), "memory stops growing past the window");
        // A prompt longer than the window, then tokens one by one, as a model runs them.
        let mut mixed = KvHeads::with_window(kv_heads, d, w);
        let prompt = 100;
        mixed.append(&k[..prompt * kw], &v[..prompt * kw]);
        assert_eq!(mixed.causal_attention(&q[..prompt * qw], heads), at_once[..prompt * qw].to_vec());
        for i in prompt..n {
            mixed.append(&k[i * kw..(i + 1) * kw], &v[i * kw..(i + 1) * kw]);
            assert_eq!(mixed.causal_attention(&q[i * qw..(i + 1) * qw], heads), at_once[i * qw..(i + 1) * qw].to_vec());
        }
    }

    /// `softmax(q k / sqrt(d) + bias(h, i, j))` over the keys within `window` of each query, in f64: `[len, heads * d]`.
    fn direct(
        qkv: &[f32],
        len: usize,
        heads: usize,
        d: usize,
        bias: &dyn Fn(usize, usize, usize) -> f64,
        window: Option<usize>,
    ) -> Vec<f64> {
        let width = heads * d;
        let at = |t: usize, part: usize, h: usize, c: usize| f64::from(qkv[t * 3 * width + part * width + h * d + c]);
        let mut out = vec![0f64; len * width];
        for h in 0..heads {
            for i in 0..len {
                let seen: Vec<usize> = (0..len).filter(|&j| window.is_none_or(|w| i.abs_diff(j) <= w)).collect();
                let scores: Vec<f64> = seen
                    .iter()
                    .map(|&j| {
                        (0..d).map(|c| at(i, 0, h, c) * at(j, 1, h, c)).sum::<f64>() / (d as f64).sqrt() + bias(h, i, j)
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..d {
                    out[i * width + h * d + c] = seen.iter().zip(&e).map(|(&j, e)| e / total * at(j, 2, h, c)).sum();
                }
            }
        }
        out
    }

    /// A relative-position bias and a local window (alone and together) against a direct computation, on lengths
    /// shorter and longer than the window; each sequence gives the same bits alone as in a batch.
    #[test]
    fn biases_and_windows_match_a_direct_computation() {
        let (heads, d) = (3, 16);
        let width = heads * d;
        let lens = [1, 5, 37];
        let rows: usize = lens.iter().sum();
        let qkv: Vec<f32> = (0..rows * 3 * width).map(|i| ((i * 7919 % 1009) as f32 / 500.0) - 1.0).collect();
        let layout = QkvLayout { row_stride: 3 * width, q: 0, k: width, v: 2 * width };
        let bias_of = |h: usize, distance: isize| ((h as isize * 7 + distance * 3) % 11) as f32 * 0.1;
        let table = RelativeBias::new(heads, 40, bias_of);
        let starts = [0, 1, 6];
        for (bias, window) in [(false, Some(4)), (true, None), (true, Some(2)), (false, Some(0))] {
            let options = AttentionOptions { bias: bias.then_some(&table), window };
            let out = attention(&qkv, layout, rows, heads, d, &starts, &lens, options);
            for (&start, &len) in starts.iter().zip(&lens) {
                let part = &qkv[start * 3 * width..][..len * 3 * width];
                let want = direct(
                    part,
                    len,
                    heads,
                    d,
                    &|h, i, j| match bias {
                        true => f64::from(bias_of(h, j as isize - i as isize)),
                        false => 0.0,
                    },
                    window,
                );
                let got = &out[start * width..][..len * width];
                for (k, (&g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(g) - w).abs() < 1e-5,
                        "bias {bias} window {window:?} len {len} at {k}: {g} vs {w}"
                    );
                }
                let alone = attention(part, layout, len, heads, d, &[0], &[len], options);
                assert_eq!(alone, got.to_vec(), "bias {bias} window {window:?} len {len}");
            }
        }
    }

    /// Every vector level gives the portable level's bits, on lengths that fill no block or pad exactly.
    #[test]
    fn every_level_matches_the_portable_one() {
        for (len, heads, d) in [(1, 1, 8), (3, 2, 24), (7, 3, 32), (33, 2, 40), (70, 1, 64)] {
            let width = heads * d;
            let qkv: Vec<f32> = (0..len * 3 * width).map(|i| ((i * 7919 % 1009) as f32 / 500.0) - 1.0).collect();
            let layout = QkvLayout { row_stride: 3 * width, q: 0, k: width, v: 2 * width };
            let bias: Vec<f32> = (0..2 * len - 1).map(|i| (i % 7) as f32 * 0.2 - 0.5).collect();
            let run_with = |f: unsafe fn(&[f32], QkvLayout, Sequence, usize, *mut f32),
                            options: (bool, Option<usize>)| {
                let mut out = vec![0f32; len * width];
                for h in 0..heads {
                    let bias = options.0.then_some((bias.as_slice(), len));
                    let seq = Sequence { first: 0, len, col: h * d, d, bias, window: options.1 };
                    // SAFETY: `f` runs at a level this CPU has (checked before each call), and `out` holds the rows.
                    unsafe { f(&qkv, layout, seq, width, out.as_mut_ptr()) };
                }
                out
            };
            let run = |f| run_with(f, (false, None));
            let portable = run(head_generic::<Portable>);
            for options in [(true, None), (false, Some(3)), (true, Some(1))] {
                let portable = run_with(head_generic::<Portable>, options);
                #[cfg(target_arch = "x86_64")]
                {
                    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                        assert_eq!(run_with(head_avx2, options), portable, "avx2 {options:?}, len {len}");
                    }
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        assert_eq!(run_with(head_avx512, options), portable, "avx512 {options:?}, len {len}");
                    }
                }
            }
            // The causal kernel over a cache of the same keys and values, the last 3 tokens as new queries.
            let mut cache = KvHeads::new(heads, d);
            let rows = |offset: usize| -> Vec<f32> {
                qkv.chunks_exact(3 * width).flat_map(|r| r[offset..offset + width].to_vec()).collect()
            };
            cache.append(&rows(width), &rows(2 * width));
            let queries = rows(0)[(len - len.min(3)) * width..].to_vec();
            let past = len - len.min(3);
            // Every key before each query, and (as a sliding window does) only the last 4 of them.
            let all = move |i: usize| 0..past + i + 1;
            let windowed = move |i: usize| (past + i + 1).saturating_sub(4)..past + i + 1;
            let causal_with = |f: unsafe fn(&Head, &[f32], f32, usize, usize, &Visible, *mut f32),
                               options: CausalOptions| {
                let scale = options.scale.unwrap_or(1.0 / (d as f32).sqrt());
                let mut out = vec![0f32; 2 * queries.len()];
                let (whole, window) = out.split_at_mut(queries.len());
                for h in 0..heads {
                    let head = Head {
                        keys_t: &cache.keys_t[h * d * cache.capacity..],
                        values: &cache.values[h * cache.capacity * cache.dims..],
                        keys_len: cache.capacity,
                        dims: cache.dims,
                        d,
                        bias: None,
                        softcap: options.softcap,
                    };
                    // SAFETY: `f` runs at a level this CPU has (checked before each call); each output holds a
                    // row per query, and the visible keys are within the cache.
                    unsafe {
                        f(&head, &queries, scale, h * d, width, &all, whole.as_mut_ptr());
                        f(&head, &queries, scale, h * d, width, &windowed, window.as_mut_ptr());
                    }
                }
                out
            };
            let causal = |f| causal_with(f, CausalOptions::default());
            let causal_portable = causal(causal_head_generic::<Portable>);
            // Gemma's query scale and soft-capping (a cap low enough to bend the scores).
            let gemma = CausalOptions { scale: Some(0.3), softcap: Some(1.5) };
            let gemma_portable = causal_with(causal_head_generic::<Portable>, gemma);
            assert!(len == 1 || gemma_portable != causal_portable, "the options change the scores");
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    assert_eq!(run(head_avx2), portable, "avx2, len {len}, d {d}");
                    assert_eq!(causal(causal_head_avx2), causal_portable, "causal avx2, len {len}, d {d}");
                    assert_eq!(causal_with(causal_head_avx2, gemma), gemma_portable, "softcap avx2, len {len}");
                }
                if is_x86_feature_detected!("avx512f") {
                    assert_eq!(run(head_avx512), portable, "avx512, len {len}, d {d}");
                    assert_eq!(causal(causal_head_avx512), causal_portable, "causal avx512, len {len}, d {d}");
                    assert_eq!(causal_with(causal_head_avx512, gemma), gemma_portable, "softcap avx512, len {len}");
                }
            }
        }
    }
}
