//! Our quantized tensors re-expressed as ggml's blocks, where one of its formats holds them exactly: int8 (per
//! group of 32, per channel or per tensor) as Q8_0, symmetric int4 in groups of 32 as Q4_0, min-max int4 in
//! groups of 32 as Q4_1. candle's quantized matmul (`QMatMul`) runs these formats on the CPU, CUDA and Metal.
//!
//! "Exactly" means that candle's dequantization of the blocks gives the same bits as
//! [`QTensor::dequantize_f32`]: the codes carry over unchanged (Q4_0's nibbles are our codes plus 8), and every
//! scale and minimum must be an f16 (ggml's fields), as the weight-only layers keep them
//! ([`QTensor::with_f16_params`]).

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use half::f16;

use super::scheme::{Bits, CodeRange, Granularity, LinearScheme, Scheme};
use super::tensor::QTensor;
use crate::error::Result;

/// Values per ggml block of the formats here.
const BLOCK: usize = 32;

/// The ggml format that holds `q` exactly, if one does: its last dimension a multiple of 32 (of 64 for Q4_1, whose
/// candle dot product pairs its blocks), its codes in one of the forms above, and its scales and minimums f16
/// values.
pub fn ggml_form(q: &QTensor) -> Option<GgmlDType> {
    let k = *q.shape().last()?;
    if k == 0 || !k.is_multiple_of(BLOCK) {
        return None;
    }
    let halves = |values: &[f32]| values.iter().all(|&v| f16::from_f32(v).to_f32().to_bits() == v.to_bits());
    if !halves(q.scales()) || !halves(q.mins()) {
        return None;
    }
    let per_block = |granularity: Granularity| match granularity {
        Granularity::PerGroup { size } => size == BLOCK,
        // A scale per row (or one for all) repeats in each of its blocks.
        Granularity::PerChannel { dim } => dim == 0 && q.shape().len() == 2,
        Granularity::PerTensor => true,
    };
    match *q.scheme() {
        Scheme::Linear(LinearScheme { bits: Bits::B8, range: CodeRange::Signed, granularity, .. })
            if per_block(granularity) && q.zero_points().iter().all(|&z| z == 0) =>
        {
            Some(GgmlDType::Q8_0)
        }
        Scheme::Linear(LinearScheme { bits: Bits::B4, range: CodeRange::Signed, granularity, .. })
            if granularity == (Granularity::PerGroup { size: BLOCK }) && q.zero_points().iter().all(|&z| z == 0) =>
        {
            Some(GgmlDType::Q4_0)
        }
        // candle's Q4_1 dot product takes its blocks in pairs.
        Scheme::MinMax { bits: Bits::B4, group_size: BLOCK } if k.is_multiple_of(2 * BLOCK) => Some(GgmlDType::Q4_1),
        _ => None,
    }
}

/// `q` as ggml blocks on `device` (see [`ggml_form`]), or `None` where no format holds it exactly.
pub fn to_ggml(q: &QTensor, device: &Device) -> Result<Option<candle_core::quantized::QTensor>> {
    let Some(dtype) = ggml_form(q) else { return Ok(None) };
    let codes = q.codes();
    let blocks = codes.len() / BLOCK;
    // The parameter of block `b`: one per block, per row or for the whole tensor.
    let param = |values: &[f32], b: usize| values[b * values.len() / blocks];
    let mut raw = Vec::with_capacity(blocks * dtype.type_size());
    for (b, block) in codes.chunks_exact(BLOCK).enumerate() {
        raw.extend_from_slice(&f16::from_f32(param(q.scales(), b)).to_le_bytes());
        match dtype {
            GgmlDType::Q8_0 => raw.extend(block.iter().map(|&c| c as i8 as u8)),
            GgmlDType::Q4_0 => {
                let nibble = |c: i32| (c + 8) as u8;
                raw.extend((0..BLOCK / 2).map(|j| nibble(block[j]) | nibble(block[j + BLOCK / 2]) << 4));
            }
            GgmlDType::Q4_1 => {
                raw.extend_from_slice(&f16::from_f32(param(q.mins(), b)).to_le_bytes());
                raw.extend((0..BLOCK / 2).map(|j| block[j] as u8 | (block[j + BLOCK / 2] as u8) << 4));
            }
            _ => unreachable!("ggml_form names Q8_0, Q4_0 or Q4_1"),
        }
    }
    Ok(Some(qtensor_from_ggml(dtype, &raw, q.shape().to_vec(), device)?))
}
