//! From a quantized weight tensor to the kernels' input: unsigned codes with zero points (and minimums, or a lookup
//! table).

use crate::error::{QuantError, Result};
use crate::kernels::{selected_isa, PackedWeights, WeightCodes};
use crate::quant::{CodeRange, Granularity, LinearScheme, QTensor, Scheme};

/// Repacks a quantized `[n, k]` weight for the kernels, with activations quantized in blocks of `block`;
/// `half_params` keeps per-block scales and minimums in f16 (see [`WeightCodes::half_params`]).
///
/// Signed codes are shifted to unsigned (`q + 2^(b-1)`, zero point shifted alike). Codebook levels `L` become a
/// table of unsigned 8-bit codes `L + 128` with zero point 128. Per-tensor scales are repeated per row; per-group
/// scales must use groups of `block`.
pub(crate) fn pack_qtensor(q: &QTensor, block: usize, half_params: bool) -> Result<PackedWeights> {
    let &[n, k] = q.shape() else {
        return Err(QuantError::InvalidScheme(format!("a linear weight must be 2-D [out, in], got {:?}", q.shape())));
    };
    let (bits, range, granularity) = match *q.scheme() {
        Scheme::Linear(LinearScheme { bits, range, granularity, .. }) => (bits, range, granularity),
        Scheme::MinMax { group_size, .. } | Scheme::Codebook { group_size, .. } => {
            (q.bits(), CodeRange::Unsigned, Granularity::PerGroup { size: group_size })
        }
        Scheme::Nf4 { .. } => {
            return Err(QuantError::InvalidScheme(
                "NF4 weights with exact float levels have no integer kernel: use Scheme::Codebook (nf4-gN)".into(),
            ))
        }
    };
    let offset = match range {
        CodeRange::Signed => 1i32 << (bits.count() - 1),
        CodeRange::Unsigned => 0,
    };
    let repeat = |values: &[f32], zps: &[i32]| -> (Vec<f32>, Vec<i32>) {
        (values.iter().copied().cycle().take(n).collect(), zps.iter().copied().cycle().take(n).collect())
    };
    let (scales, zero_points, per_block) = match granularity {
        Granularity::PerTensor => {
            let (s, z) = repeat(q.scales(), q.zero_points());
            (s, z, false)
        }
        Granularity::PerChannel { dim: 0 } => (q.scales().to_vec(), q.zero_points().to_vec(), false),
        Granularity::PerGroup { size } if size == block.min(k) => (q.scales().to_vec(), q.zero_points().to_vec(), true),
        other => {
            return Err(QuantError::InvalidScheme(format!(
                "weights quantized {other:?} cannot run with K blocks of {block}: use per-channel (dim 0) or groups of {block}"
            )))
        }
    };
    let codes: Vec<u8> = q.codes().into_iter().map(|c| (c + offset) as u8).collect();
    let lookup = q.levels().map(|levels| levels.map(|l| (i16::from(l) + LOOKUP_ZERO_POINT as i16) as u8));
    // Min-max tensors have no zero points: their codes are the unsigned `q` of `q * scale + min`. Looked-up codes
    // are `L + 128`.
    let zero_points: Vec<i32> = match (zero_points.is_empty(), lookup.is_some()) {
        (true, true) => vec![LOOKUP_ZERO_POINT; scales.len()],
        (true, false) => vec![0; scales.len()],
        (false, _) => zero_points.into_iter().map(|z| z + offset).collect(),
    };
    let codes = WeightCodes {
        n,
        k,
        bits,
        block,
        per_block,
        codes: &codes,
        scales: &scales,
        zero_points: &zero_points,
        mins: q.mins(),
        half_params,
        lookup: lookup.as_ref(),
    };
    PackedWeights::new(selected_isa()?, &codes)
}

/// Zero point of the 8-bit codes `L + 128` that codebook levels `L` are looked up as.
const LOOKUP_ZERO_POINT: i32 = 128;
