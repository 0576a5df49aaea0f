//! What `benches/kernels.rs` and `examples/kernel_report.rs` share: the schemes and shapes of the issue, and
//! random weights in each scheme.

use qlayers::kernels::{Isa, PackedWeights, WeightCodes, MAX_BLOCK};
use qlayers::Bits;
use rand::rngs::StdRng;
use rand::Rng;

/// A kernel configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Weights and activations int8 (BERT, `w8a8-b64`): one scale per output row, activations per 64-value K
    /// block.
    W8A8,
    /// Weights and activations int8 (`w8a8-row`): one scale per output row, one per activation row.
    W8A8Row,
    /// Weight-only int8 (Llama): scales per row and 32-value block.
    Int8,
    /// Weight-only int4 (Llama): scales per row and 32-value block.
    Int4,
}

impl Scheme {
    /// The name in tables and benchmark groups.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::W8A8 => "w8a8",
            Scheme::W8A8Row => "w8a8-row",
            Scheme::Int8 => "int8",
            Scheme::Int4 => "int4",
        }
    }
}

/// The shapes of the issue, `(scheme, m, k, n)`: BERT-like layers in both W8A8 forms, Llama-like ones in both
/// weight-only forms.
pub fn cases() -> Vec<(Scheme, usize, usize, usize)> {
    let mut cases = Vec::new();
    for (k, n) in [(384, 384), (384, 1536), (1536, 384), (768, 768), (768, 3072), (3072, 768)] {
        cases.push((Scheme::W8A8, 4096, k, n));
        cases.push((Scheme::W8A8Row, 4096, k, n));
    }
    for m in [1, 256] {
        for (k, n) in [(576, 576), (576, 1536), (1536, 576), (576, 49152)] {
            cases.push((Scheme::Int8, m, k, n));
            cases.push((Scheme::Int4, m, k, n));
        }
    }
    cases
}

/// The shapes of the f32 GEMM, `(m, k, n)`: the BERT-like layers of a 32 x 128 batch, and the Llama-like ones at
/// M = 1 and M = 256.
pub fn f32_cases() -> Vec<(usize, usize, usize)> {
    let mut cases: Vec<_> = [(384, 384), (384, 1536), (1536, 384), (768, 768), (768, 3072), (3072, 768)]
        .into_iter()
        .map(|(k, n)| (4096, k, n))
        .collect();
    for m in [1, 256] {
        cases.extend([(576, 576), (576, 1536), (1536, 576)].map(|(k, n)| (m, k, n)));
    }
    cases
}

/// Random symmetric codes and scales of an `[n, k]` weight in one scheme.
pub struct RandomWeights {
    n: usize,
    k: usize,
    bits: Bits,
    block: usize,
    per_block: bool,
    codes: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

impl RandomWeights {
    /// Codes `q + zero_point` with `q` in `[-(zero_point - 1), zero_point - 1]`, scales in `[0.001, 0.01)`.
    pub fn new(scheme: Scheme, n: usize, k: usize, rng: &mut StdRng) -> Self {
        let (bits, block, per_block, zero_point, max_code) = match scheme {
            Scheme::W8A8 => (Bits::B8, 64, false, 128, 255u8),
            Scheme::W8A8Row => (Bits::B8, MAX_BLOCK, false, 128, 255),
            Scheme::Int8 => (Bits::B8, 32, true, 128, 255),
            Scheme::Int4 => (Bits::B4, 32, true, 8, 15),
        };
        let params = if per_block { n * k.div_ceil(block) } else { n };
        let codes = (0..n * k).map(|_| rng.random_range(1..=max_code)).collect();
        let scales = (0..params).map(|_| rng.random_range(0.001f32..0.01)).collect();
        Self { n, k, bits, block, per_block, codes, scales, zero_points: vec![zero_point; params] }
    }

    /// The weights packed for `isa`; weight-only layers (per-block scales) keep their scales in f16.
    pub fn pack(&self, isa: Isa) -> PackedWeights {
        let w = WeightCodes {
            n: self.n,
            k: self.k,
            bits: self.bits,
            block: self.block,
            per_block: self.per_block,
            codes: &self.codes,
            scales: &self.scales,
            zero_points: &self.zero_points,
            mins: &[],
            half_params: self.per_block,
            lookup: None,
        };
        PackedWeights::new(isa, &w).expect("valid weights")
    }
}
