//! The schemes a quantized layer can run.

use crate::error::{QuantError, Result};
use crate::kernels::MAX_BLOCK;
use crate::quant::{Bits, Codebook, Granularity, LinearScheme, QTensor, Scheme};

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
    /// Static W8A8 (`w8a8-static`): the weights of `w8a8-row` (int8, one symmetric scale per output channel),
    /// activations quantized with one step per layer calibrated beforehand (the largest calibration input, after
    /// SmoothQuant's factors when the plan smooths, over 127), values beyond it clamped. No maximum is taken at
    /// run time, and a value's code does not depend on the rest of its row. A layer of this scheme needs its step
    /// ([`crate::QLinear::with_activation_step`]): the loader calibrates it, and a checkpoint saves it.
    W8A8Static,
    /// Weight quantization at 8, 4 or 2 bits with one scale (and zero point) per `group` values along K, for
    /// memory-bound work. Codes below 8 bits stay packed; activations are quantized to int8 per group on the fly
    /// (as llama.cpp does), so the matmul runs on integer dot products.
    Weight {
        /// Bit width of the weight codes.
        bits: Bits,
        /// Group size along K (a multiple of 16, or K itself).
        group: usize,
        /// Symmetric (codes centred on 0, `x ≈ q * scale`) or asymmetric (each group's own range,
        /// `x ≈ q * scale + min`, as [`Scheme::MinMax`]).
        symmetric: bool,
    },
    /// Non-linear 4-bit weight quantization ([`Scheme::Codebook`]): 4-bit codes index a 16-entry codebook of levels
    /// in `[-1, 1]`, with one absmax scale per `group` values along K: `x ≈ absmax / 127 * L[code]`, the levels
    /// kept as 8-bit integers `L = round(127 * level)`. The kernels look the codes up in the table with one byte
    /// shuffle and multiply the 8-bit codes `L + 128` (zero point 128) by the activations' int8 codes.
    ///
    /// The codebook is one per layer (per weight tensor), the scales one per group. A codebook per group would
    /// cost 16 levels per group, 2 to 8 bits more per weight for groups of 128 to 32, more than the 4-bit codes
    /// themselves; and one per output column could not be one byte shuffle shared by a whole vector of columns.
    Codebook {
        /// NF4's fixed levels or levels learned by k-means on the layer's weights.
        codebook: Codebook,
        /// Group size along K (a multiple of 16, or K itself).
        group: usize,
    },
}

impl LayerScheme {
    /// W8A8 with per-channel weights and activation blocks of 64: the scheme for BERT.
    pub const fn w8a8() -> Self {
        Self::W8A8 { act_block: 64, weight_per_block: false }
    }

    /// W8A8 with per-channel weights and one activation scale per row (`w8a8-row`), the classic dynamic W8A8:
    /// one float step per output instead of one per block, the fastest W8A8 for long inputs, a little less
    /// accurate where a row's values differ in range along K.
    pub const fn w8a8_per_row() -> Self {
        Self::W8A8 { act_block: MAX_BLOCK, weight_per_block: false }
    }

    /// Symmetric weight-only quantization with groups of 32.
    pub const fn weight(bits: Bits) -> Self {
        Self::Weight { bits, group: 32, symmetric: true }
    }

    /// Bits per weight code: 32 for f32, 8 for W8A8, 4 for a codebook.
    pub fn code_bits(&self) -> u32 {
        match self {
            Self::F32 => 32,
            Self::W8A8 { .. } | Self::W8A8Static => 8,
            Self::Weight { bits, .. } => bits.count(),
            Self::Codebook { .. } => 4,
        }
    }

    /// Whether the scheme multiplies int8 activations by int8 weights (W8A8, dynamic or static): the schemes
    /// SmoothQuant applies to.
    pub fn is_w8a8(&self) -> bool {
        matches!(self, Self::W8A8 { .. } | Self::W8A8Static)
    }

    /// Whether the layer keeps its per-group scales and minimums in f16, as ggml's formats do: weight-only schemes,
    /// which serve memory-bound decoding, where those parameters are otherwise up to a third of the bytes read.
    pub fn half_params(&self) -> bool {
        matches!(self, Self::Weight { .. } | Self::Codebook { .. })
    }

    /// The weight quantization scheme and K block length this layer scheme uses for a weight with `k` inputs,
    /// or `None` for [`LayerScheme::F32`]. A checkpoint's codes are read back under this scheme.
    pub fn weight_scheme(&self, k: usize) -> Result<Option<(Scheme, usize)>> {
        let check_block = |what: &str, block: usize| {
            let block = block.min(k);
            if block == 0 || block > MAX_BLOCK || (block < k && !block.is_multiple_of(16)) {
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
                    if !k.is_multiple_of(block) {
                        return Err(QuantError::InvalidScheme(format!(
                            "per-block weight scales need K = {k} to be a multiple of the block ({block})"
                        )));
                    }
                    Granularity::PerGroup { size: block }
                } else {
                    Granularity::PerChannel { dim: 0 }
                };
                Ok(Some((LinearScheme::symmetric(Bits::B8, granularity).into(), block)))
            }
            Self::W8A8Static => {
                let granularity = Granularity::PerChannel { dim: 0 };
                Ok(Some((LinearScheme::symmetric(Bits::B8, granularity).into(), k.clamp(1, MAX_BLOCK))))
            }
            Self::Weight { bits, group, symmetric } => {
                let group = check_block("group size", group)?;
                let scheme = match symmetric {
                    true => LinearScheme::symmetric(bits, Granularity::PerGroup { size: group }).into(),
                    false => Scheme::MinMax { bits, group_size: group },
                };
                Ok(Some((scheme, group)))
            }
            Self::Codebook { codebook, group } => {
                let group = check_block("group size", group)?;
                Ok(Some((Scheme::Codebook { codebook, group_size: group }, group)))
            }
        }
    }

    /// The weight a layer of this scheme multiplies by: the row-major `[n, k]` `weight` quantized as the layer
    /// quantizes it and decoded back to f32, with the scales (and minimums) as the kernels keep them (f16 for
    /// weight-only schemes, where they fit). Compare it with `weight` for each layer's weight error (MSE, SNR) under
    /// any scheme: [`LayerScheme::F32`] returns `weight` unchanged. Activation quantization is not included.
    pub fn round_trip(&self, weight: &[f32], n: usize, k: usize) -> Result<Vec<f32>> {
        let Some((scheme, _)) = self.weight_scheme(k)? else {
            if weight.len() != n * k {
                return Err(QuantError::ShapeMismatch {
                    what: "number of values vs shape",
                    left: vec![weight.len()],
                    right: vec![n, k],
                });
            }
            return Ok(weight.to_vec());
        };
        let q = QTensor::quantize_f32(weight, &[n, k], scheme)?;
        Ok(if self.half_params() { q.with_f16_params() } else { q }.dequantize_f32())
    }
}

/// The canonical name, which [`LayerScheme::from_str`](std::str::FromStr) reads back: `f32`, `w8a8-b64`
/// (`-pb` for per-block weight scales), `w8a8-row` (one activation scale per row), `w8a8-static`, `int4-g32`, `int4-g32-asym`, `nf4-g64`, `kmeans-g64`.
impl std::fmt::Display for LayerScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::F32 => write!(f, "f32"),
            Self::W8A8 { act_block, weight_per_block } => {
                match *act_block >= MAX_BLOCK {
                    true => write!(f, "w8a8-row")?,
                    false => write!(f, "w8a8-b{act_block}")?,
                }
                write!(f, "{}", if *weight_per_block { "-pb" } else { "" })
            }
            Self::W8A8Static => write!(f, "w8a8-static"),
            Self::Weight { bits, group, symmetric } => {
                write!(f, "int{}-g{group}{}", bits.count(), if *symmetric { "" } else { "-asym" })
            }
            Self::Codebook { codebook: Codebook::Nf4, group } => write!(f, "nf4-g{group}"),
            Self::Codebook { codebook: Codebook::KMeans, group } => write!(f, "kmeans-g{group}"),
        }
    }
}

/// Parses a scheme name: `f32` (or `fp32`); `int8` or `w8a8` (W8A8, activation blocks of 64), `w8a8-b32`,
/// `w8a8-b64-pb`, `w8a8-row` (one activation scale per row), `w8a8-static` (one calibrated step per layer);
/// `int8-g32`, `int4`, `int4-g64`, `int4-g32-asym`, `int2` (weight schemes; groups of 32 unless
/// `-gN` says otherwise; symmetric unless `-asym`); `nf4`, `nf4-g32`, `kmeans`, `kmeans-g128` (codebook schemes;
/// groups of 64 unless `-gN` says otherwise).
impl std::str::FromStr for LayerScheme {
    type Err = QuantError;

    fn from_str(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        let bad = || {
            QuantError::InvalidScheme(format!(
                "unknown scheme {name:?}: expected f32, int8, w8a8[-bN|-row][-pb], w8a8-static, int8-gN, int4[-gN][-asym], \
                 int2[-gN][-asym], nf4[-gN] or kmeans[-gN]"
            ))
        };
        let number = |part: &str, prefix: char| -> Result<usize> {
            part.strip_prefix(prefix).and_then(|n| n.parse().ok()).filter(|&n| n > 0).ok_or_else(bad)
        };
        let mut parts = lower.split('-');
        let head = parts.next().ok_or_else(bad)?;
        let rest: Vec<&str> = parts.collect();
        match head {
            "f32" | "fp32" if rest.is_empty() => Ok(Self::F32),
            "int8" if rest.is_empty() => Ok(Self::w8a8()),
            "w8a8" if rest == ["static"] => Ok(Self::W8A8Static),
            "w8a8" => {
                let (mut act_block, mut weight_per_block) = (64, false);
                for part in rest {
                    match part {
                        "pb" => weight_per_block = true,
                        "row" => act_block = MAX_BLOCK,
                        _ => act_block = number(part, 'b')?,
                    }
                }
                Ok(Self::W8A8 { act_block, weight_per_block })
            }
            "int8" | "int4" | "int2" => {
                let bits = Bits::new(head[3..].parse().map_err(|_| bad())?)?;
                let (mut group, mut symmetric) = (32, true);
                for part in rest {
                    match part {
                        "asym" => symmetric = false,
                        "sym" => symmetric = true,
                        _ => group = number(part, 'g')?,
                    }
                }
                Ok(Self::Weight { bits, group, symmetric })
            }
            "nf4" | "kmeans" => {
                let codebook = if head == "nf4" { Codebook::Nf4 } else { Codebook::KMeans };
                let group = match rest.as_slice() {
                    [] => 64,
                    [part] => number(part, 'g')?,
                    _ => return Err(bad()),
                };
                Ok(Self::Codebook { codebook, group })
            }
            _ => Err(bad()),
        }
    }
}
