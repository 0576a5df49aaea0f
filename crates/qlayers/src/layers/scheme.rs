//! The schemes a quantized layer can run.

use crate::error::{QuantError, Result};
use crate::kernels::MAX_BLOCK;
use crate::quant::{Bits, Granularity, LinearScheme};

/// How a [`crate::QLinear`] or [`crate::QConv2d`] stores and multiplies its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerScheme {
    /// Unquantized: the layer is a plain candle layer.
    F32,
    /// Dynamic W8A8 for compute-bound work: int8 weights with one symmetric scale per output channel (or per
    /// output channel and K block), activations quantized on the fly per row in blocks of `act_block` along K,
    /// int32 accumulation.
    W8A8 {
        /// Activation block along K (32 to K; a value of K or more means one scale per row).
        act_block: usize,
        /// Whether weights also get one scale per `act_block` block of K.
        weight_per_block: bool,
    },
    /// Weight quantization at 8, 4 or 2 bits with one scale (and zero point) per `group` values along K, for
    /// memory-bound work. Codes below 8 bits stay packed; activations are quantized to int8 per group on the fly
    /// (as llama.cpp does), so the matmul runs on integer dot products.
    Weight {
        /// Bit width of the weight codes.
        bits: Bits,
        /// Group size along K (a multiple of 16, or K itself).
        group: usize,
        /// Symmetric (zero point at mid-range) or asymmetric (a zero point per group).
        symmetric: bool,
    },
}

impl LayerScheme {
    /// W8A8 with per-channel weights and activation blocks of 64: the scheme for BERT.
    pub const fn w8a8() -> Self {
        Self::W8A8 { act_block: 64, weight_per_block: false }
    }

    /// Symmetric weight-only quantization with groups of 32.
    pub const fn weight(bits: Bits) -> Self {
        Self::Weight { bits, group: 32, symmetric: true }
    }

    /// The weight quantization scheme and K block length this layer scheme uses for a weight with `k` inputs,
    /// or `None` for [`LayerScheme::F32`].
    pub(crate) fn weight_scheme(&self, k: usize) -> Result<Option<(LinearScheme, usize)>> {
        let check_block = |what: &str, block: usize| {
            let block = block.min(k);
            if block == 0 || block > MAX_BLOCK || (block < k && block % 16 != 0) {
                return Err(QuantError::InvalidScheme(format!(
                    "{what} of {block} for K = {k}: must be a multiple of 16 (or at least K) and at most {MAX_BLOCK}"
                )));
            }
            Ok(block)
        };
        match *self {
            Self::F32 => Ok(None),
            Self::W8A8 { act_block, weight_per_block } => {
                let block = check_block("activation block", act_block)?;
                let granularity = if weight_per_block && block < k {
                    if k % block != 0 {
                        return Err(QuantError::InvalidScheme(format!(
                            "per-block weight scales need K = {k} to be a multiple of the block ({block})"
                        )));
                    }
                    Granularity::PerGroup { size: block }
                } else {
                    Granularity::PerChannel { dim: 0 }
                };
                Ok(Some((LinearScheme::symmetric(Bits::B8, granularity), block)))
            }
            Self::Weight { bits, group, symmetric } => {
                let group = check_block("group size", group)?;
                let granularity = Granularity::PerGroup { size: group };
                let scheme = if symmetric {
                    LinearScheme::symmetric(bits, granularity)
                } else {
                    LinearScheme::asymmetric_unsigned(bits, granularity)
                };
                Ok(Some((scheme, group)))
            }
        }
    }
}

impl std::fmt::Display for LayerScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F32 => write!(f, "f32"),
            Self::W8A8 { act_block, weight_per_block } => {
                write!(
                    f,
                    "w8a8 (activation block {act_block}{})",
                    if *weight_per_block { ", per-block weights" } else { "" }
                )
            }
            Self::Weight { bits, group, symmetric } => write!(
                f,
                "int{} weights, group {group}, {}",
                bits.count(),
                if *symmetric { "symmetric" } else { "asymmetric" }
            ),
        }
    }
}
