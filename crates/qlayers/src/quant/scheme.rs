//! What a quantization scheme is: bit width, code range, mapping and granularity.

use super::codebook::Codebook;
use crate::error::{QuantError, Result};

/// Bit width of the integer codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bits {
    /// 2-bit codes, four to a byte when packed.
    B2,
    /// 4-bit codes, two to a byte when packed.
    B4,
    /// 8-bit codes, one byte each.
    B8,
}

impl Bits {
    /// Parses a bit count; only 2, 4 and 8 are supported.
    pub fn new(bits: u32) -> Result<Self> {
        match bits {
            2 => Ok(Self::B2),
            4 => Ok(Self::B4),
            8 => Ok(Self::B8),
            other => Err(QuantError::UnsupportedBits(other)),
        }
    }

    /// Number of bits per code.
    pub fn count(self) -> u32 {
        match self {
            Self::B2 => 2,
            Self::B4 => 4,
            Self::B8 => 8,
        }
    }

    /// Number of codes that fit in one byte.
    pub fn per_byte(self) -> usize {
        (8 / self.count()) as usize
    }
}

/// Whether codes are signed (`[-2^(b-1), 2^(b-1) - 1]`) or unsigned (`[0, 2^b - 1]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeRange {
    /// Two's-complement codes, like `torch.qint8`.
    Signed,
    /// Unsigned codes, like `torch.quint8`.
    Unsigned,
}

impl CodeRange {
    /// The smallest and largest code at `bits`.
    pub fn bounds(self, bits: Bits) -> (i32, i32) {
        let b = bits.count();
        match self {
            Self::Signed => (-(1 << (b - 1)), (1 << (b - 1)) - 1),
            Self::Unsigned => (0, (1 << b) - 1),
        }
    }
}

/// Which elements share one scale (and zero point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole tensor.
    PerTensor,
    /// One scale per index along dimension `dim` (dim 0 of a `[out, in]` weight: per output channel).
    PerChannel {
        /// The channel axis.
        dim: usize,
    },
    /// One scale per `size` consecutive elements of the row-major tensor; `size` must divide the last dimension,
    /// so groups run along the input dimension of a `[out, in]` weight.
    PerGroup {
        /// Elements per group.
        size: usize,
    },
}

/// An affine (linear) scheme: `x ≈ (q - zero_point) * scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinearScheme {
    /// Bit width of the codes.
    pub bits: Bits,
    /// Symmetric (zero point 0, `scale = max|x| / qmax`) or asymmetric (`scale = (max - min) / (qmax - qmin)`).
    pub symmetric: bool,
    /// Range of the codes.
    pub range: CodeRange,
    /// Which elements share parameters.
    pub granularity: Granularity,
}

impl LinearScheme {
    /// Symmetric scheme with signed codes and zero point 0.
    pub fn symmetric(bits: Bits, granularity: Granularity) -> Self {
        Self { bits, symmetric: true, range: CodeRange::Signed, granularity }
    }

    /// Asymmetric scheme with signed codes and an integer zero point (PyTorch's `qint8` observers).
    pub fn asymmetric(bits: Bits, granularity: Granularity) -> Self {
        Self { bits, symmetric: false, range: CodeRange::Signed, granularity }
    }

    /// Asymmetric scheme with unsigned codes `[0, 2^b - 1]` (the usual choice for 4- and 2-bit weights).
    pub fn asymmetric_unsigned(bits: Bits, granularity: Granularity) -> Self {
        Self { bits, symmetric: false, range: CodeRange::Unsigned, granularity }
    }

    /// Checks that the scheme is meaningful.
    pub fn validate(&self) -> Result<()> {
        if self.symmetric && self.range == CodeRange::Unsigned {
            return Err(QuantError::InvalidScheme("a symmetric scheme needs signed codes (zero point 0)".into()));
        }
        Ok(())
    }
}

/// Any quantization scheme a [`crate::QTensor`] can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Evenly spaced codes: scale and zero point.
    Linear(LinearScheme),
    /// The 16-value NormalFloat-4 codebook (QLoRA) with one absmax scale per block of `block_size` values
    /// along the last dimension.
    Nf4 {
        /// Elements per absmax block (64 in QLoRA).
        block_size: usize,
    },
    /// Unsigned codes `q` in `[0, 2^b - 1]` with a float minimum per group of `group_size` values along the last
    /// dimension: `x ≈ q * scale + min`, `scale = (max - min) / (2^b - 1)` (llama.cpp's Q4_1 form). Unlike an integer
    /// zero point, the grid need not contain 0, so it spans exactly each group's range, and weights already on such a
    /// grid (a Q4_1 GGUF file) re-quantize without loss.
    MinMax {
        /// Bit width of the codes.
        bits: Bits,
        /// Elements per group.
        group_size: usize,
    },
    /// 4-bit codes indexing a 16-entry codebook of 8-bit levels `L` (levels in `[-1, 1]` times 127), with one scale
    /// per group of `group_size` values along the last dimension: `x ≈ scale * L[code]`, `scale = absmax / 127`.
    /// The codebook is one per tensor (NF4's, or learned by k-means); see [`crate::quant::codebook`]. Unlike
    /// [`Scheme::Nf4`], whose levels are exact floats, the levels are 8-bit, so the kernels multiply them exactly.
    Codebook {
        /// Where the levels come from.
        codebook: Codebook,
        /// Elements per group.
        group_size: usize,
    },
}

impl Scheme {
    /// NF4 with QLoRA's block size of 64.
    pub fn nf4() -> Self {
        Self::Nf4 { block_size: 64 }
    }

    /// Bit width of the codes.
    pub fn bits(&self) -> Bits {
        match self {
            Self::Linear(s) => s.bits,
            Self::Nf4 { .. } => Bits::B4,
            Self::MinMax { bits, .. } => *bits,
            Self::Codebook { .. } => Bits::B4,
        }
    }

    /// Which elements share one scale.
    pub fn granularity(&self) -> Granularity {
        match self {
            Self::Linear(s) => s.granularity,
            Self::Nf4 { block_size } => Granularity::PerGroup { size: *block_size },
            Self::MinMax { group_size, .. } | Self::Codebook { group_size, .. } => {
                Granularity::PerGroup { size: *group_size }
            }
        }
    }
}

impl From<LinearScheme> for Scheme {
    fn from(s: LinearScheme) -> Self {
        Self::Linear(s)
    }
}
