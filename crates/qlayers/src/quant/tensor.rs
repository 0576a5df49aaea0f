//! [`QTensor`]: integer codes with their scales and zero points.

use candle_core::{DType, Device, Tensor};

use super::codebook::{kmeans_levels, nearest_code, nf4_levels, round_levels, Codebook};
use super::layout::ParamLayout;
use super::nf4::{nearest_level, NF4_LEVELS};
use super::params::{check_stored_scales, compute_params, fits_f16, QParams, MIN_SCALE};
use super::scheme::{Bits, CodeRange, Granularity, LinearScheme, Scheme};
use crate::error::{QuantError, Result};
use crate::pack::{pack_unchecked, packed_len, unpack};

/// A quantized tensor: codes (packed when narrower than 8 bits) plus one scale (and zero point) per parameter slot
/// of its granularity.
///
/// Linear schemes decode as `x_hat = (q - zero_point) * scale`; NF4 decodes as `NF4_LEVELS[q] * scale`, with
/// the block's absmax as scale and no zero points; min-max decodes as `q * scale + min`, with no zero points;
/// codebook schemes decode as `levels[q] * scale`, with the group's `absmax / 127` as scale and the tensor's 16
/// 8-bit levels.
#[derive(Debug, Clone, PartialEq)]
pub struct QTensor {
    shape: Vec<usize>,
    scheme: Scheme,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    /// Per-group minimums of [`Scheme::MinMax`]; empty for the other schemes.
    mins: Vec<f32>,
    /// The 8-bit levels of [`Scheme::Codebook`]; `None` for the other schemes.
    levels: Option<[i8; 16]>,
    packed: Vec<u8>,
}

impl QTensor {
    /// Quantizes `x` (any float dtype) with parameters computed for `scheme`.
    pub fn quantize(x: &Tensor, scheme: impl Into<Scheme>) -> Result<Self> {
        Self::quantize_f32(&tensor_values(x)?, x.dims(), scheme)
    }

    /// Quantizes `x` with explicit parameters, like `torch.quantize_per_tensor` / `quantize_per_channel`.
    pub fn quantize_with(x: &Tensor, params: &QParams) -> Result<Self> {
        Self::quantize_f32_with(&tensor_values(x)?, x.dims(), params)
    }

    /// Quantizes row-major `values` of `shape` with parameters computed for `scheme`.
    pub fn quantize_f32(values: &[f32], shape: &[usize], scheme: impl Into<Scheme>) -> Result<Self> {
        let scheme = scheme.into();
        let layout = checked_layout(values, shape, scheme.granularity())?;
        match scheme {
            Scheme::Linear(linear) => {
                let params = compute_params(values, &layout, &linear)?;
                Ok(encode_linear(values, shape, &layout, linear, params))
            }
            Scheme::Nf4 { .. } => Ok(encode_nf4(values, shape, &layout, scheme)),
            Scheme::MinMax { bits, .. } => Ok(encode_min_max(values, shape, &layout, scheme, bits)),
            Scheme::Codebook { codebook, .. } => Ok(encode_codebook(values, shape, &layout, scheme, codebook)),
        }
    }

    /// Quantizes row-major `values` of `shape` with explicit parameters.
    pub fn quantize_f32_with(values: &[f32], shape: &[usize], params: &QParams) -> Result<Self> {
        let layout = checked_layout(values, shape, params.granularity)?;
        params.validate(&layout)?;
        let symmetric = params.range == CodeRange::Signed && params.zero_points.iter().all(|&z| z == 0);
        let scheme =
            LinearScheme { bits: params.bits, symmetric, range: params.range, granularity: params.granularity };
        Ok(encode_linear(values, shape, &layout, scheme, params.clone()))
    }

    /// Rebuilds a quantized tensor from stored parts (for example a checkpoint), checking that they fit together.
    /// [`Scheme::MinMax`] tensors have minimums instead of zero points: see [`QTensor::from_min_max_parts`];
    /// [`Scheme::Codebook`] tensors have levels: see [`QTensor::from_codebook_parts`].
    pub fn from_parts(
        shape: Vec<usize>,
        scheme: Scheme,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        packed: Vec<u8>,
    ) -> Result<Self> {
        let layout = ParamLayout::new(&shape, scheme.granularity())?;
        let numel: usize = shape.iter().product();
        let expected = packed_len(numel, scheme.bits());
        if packed.len() != expected {
            return Err(QuantError::ParamCount { what: "packed code bytes", expected, got: packed.len() });
        }
        match scheme {
            Scheme::Linear(linear) => {
                linear.validate()?;
                let params = QParams {
                    bits: linear.bits,
                    range: linear.range,
                    granularity: linear.granularity,
                    scales,
                    zero_points,
                };
                params.validate_stored(&layout)?;
                Ok(Self {
                    shape,
                    scheme,
                    scales: params.scales,
                    zero_points: params.zero_points,
                    mins: Vec::new(),
                    levels: None,
                    packed,
                })
            }
            Scheme::Nf4 { .. } => {
                check_scales(&scales, &layout)?;
                Ok(Self { shape, scheme, scales, zero_points: Vec::new(), mins: Vec::new(), levels: None, packed })
            }
            Scheme::MinMax { .. } => Err(QuantError::InvalidScheme(
                "min-max tensors have minimums, not zero points: rebuild them with from_min_max_parts".into(),
            )),
            Scheme::Codebook { .. } => Err(QuantError::InvalidScheme(
                "codebook tensors have levels, not zero points: rebuild them with from_codebook_parts".into(),
            )),
        }
    }

    /// Rebuilds a [`Scheme::MinMax`] tensor from stored parts: codes packed at `bits`, one scale and one minimum per
    /// group of `group_size` along the last dimension.
    pub fn from_min_max_parts(
        shape: Vec<usize>,
        bits: Bits,
        group_size: usize,
        scales: Vec<f32>,
        mins: Vec<f32>,
        packed: Vec<u8>,
    ) -> Result<Self> {
        let scheme = Scheme::MinMax { bits, group_size };
        let layout = ParamLayout::new(&shape, scheme.granularity())?;
        let expected = packed_len(shape.iter().product(), bits);
        if packed.len() != expected {
            return Err(QuantError::ParamCount { what: "packed code bytes", expected, got: packed.len() });
        }
        check_scales(&scales, &layout)?;
        if mins.len() != layout.channels {
            return Err(QuantError::ParamCount { what: "minimums", expected: layout.channels, got: mins.len() });
        }
        if let Some((index, &value)) = mins.iter().enumerate().find(|(_, m)| !m.is_finite()) {
            return Err(QuantError::NonFinite { what: "minimums", index, value });
        }
        Ok(Self { shape, scheme, scales, zero_points: Vec::new(), mins, levels: None, packed })
    }

    /// Rebuilds a [`Scheme::Codebook`] tensor from stored parts: 4-bit codes, the 16 levels (each in
    /// `[-127, 127]`) and one scale per group of `group_size` along the last dimension.
    pub fn from_codebook_parts(
        shape: Vec<usize>,
        codebook: Codebook,
        group_size: usize,
        levels: [i8; 16],
        scales: Vec<f32>,
        packed: Vec<u8>,
    ) -> Result<Self> {
        let scheme = Scheme::Codebook { codebook, group_size };
        let layout = ParamLayout::new(&shape, scheme.granularity())?;
        let expected = packed_len(shape.iter().product(), Bits::B4);
        if packed.len() != expected {
            return Err(QuantError::ParamCount { what: "packed code bytes", expected, got: packed.len() });
        }
        check_scales(&scales, &layout)?;
        if let Some(index) = levels.iter().position(|&l| l == i8::MIN) {
            return Err(QuantError::InvalidScheme(format!("codebook level #{index} is -128, outside [-127, 127]")));
        }
        Ok(Self { shape, scheme, scales, zero_points: Vec::new(), mins: Vec::new(), levels: Some(levels), packed })
    }

    /// Shape of the original tensor.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The scheme the codes follow.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// Bit width of the codes.
    pub fn bits(&self) -> Bits {
        self.scheme.bits()
    }

    /// One scale per parameter slot (one for per tensor, one per channel, one per group).
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// One zero point per parameter slot for linear schemes (all 0 when symmetric); empty for NF4, min-max and
    /// codebook schemes.
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_points
    }

    /// One minimum per group for [`Scheme::MinMax`]; empty for the other schemes.
    pub fn mins(&self) -> &[f32] {
        &self.mins
    }

    /// The 16 8-bit levels of a [`Scheme::Codebook`] tensor (code `q` stands for `levels[q] * scale`); `None` for
    /// the other schemes.
    pub fn levels(&self) -> Option<&[i8; 16]> {
        self.levels.as_ref()
    }

    /// The codes as stored: one byte each at 8 bits, packed lowest bits first at 4 and 2 bits; signed codes are
    /// two's complement in their bit width.
    pub fn packed_codes(&self) -> &[u8] {
        &self.packed
    }

    /// The integer codes, unpacked and sign-extended, in row-major order.
    pub fn codes(&self) -> Vec<i32> {
        let raw = unpack(&self.packed, self.bits(), self.numel()).expect("packed length checked at construction");
        let signed = matches!(self.scheme, Scheme::Linear(LinearScheme { range: CodeRange::Signed, .. }));
        let shift = 32 - self.bits().count();
        raw.into_iter().map(|r| if signed { (i32::from(r) << shift) >> shift } else { i32::from(r) }).collect()
    }

    /// The integer codes as an `I32` tensor of the original shape.
    pub fn codes_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.codes(), self.shape.as_slice(), device)?)
    }

    /// Decodes to row-major f32 values.
    pub fn dequantize_f32(&self) -> Vec<f32> {
        let layout = ParamLayout::new(&self.shape, self.scheme.granularity()).expect("layout checked at construction");
        let mut out: Vec<f32> = self.codes().into_iter().map(|q| q as f32).collect();
        match self.scheme {
            Scheme::Linear(_) => layout.for_each_run_mut(&mut out, |c, run| {
                let (scale, zp) = (self.scales[c], self.zero_points[c] as f32);
                run.iter_mut().for_each(|v| *v = (*v - zp) * scale);
            }),
            Scheme::Nf4 { .. } => layout.for_each_run_mut(&mut out, |c, run| {
                run.iter_mut().for_each(|v| *v = NF4_LEVELS[*v as usize] * self.scales[c]);
            }),
            // `q * scale + min`, rounded twice, as ggml decodes its Q4_1 blocks.
            Scheme::MinMax { .. } => layout.for_each_run_mut(&mut out, |c, run| {
                run.iter_mut().for_each(|v| *v = *v * self.scales[c] + self.mins[c]);
            }),
            Scheme::Codebook { .. } => {
                let levels = self.levels.expect("codebook tensors have levels");
                layout.for_each_run_mut(&mut out, |c, run| {
                    run.iter_mut().for_each(|v| *v = self.scales[c] * f32::from(levels[*v as usize]));
                })
            }
        }
        out
    }

    /// This tensor with its scales and minimums rounded to f16, as the kernels keep a weight-only layer's parameters
    /// (see [`crate::WeightCodes::half_params`]): the weights such a layer multiplies by. Unchanged when they do
    /// not all fit f16 (the kernels then keep f32).
    pub fn with_f16_params(&self) -> Self {
        let round = |values: &[f32]| values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        match fits_f16(&self.scales, &self.mins) {
            true => Self { scales: round(&self.scales), mins: round(&self.mins), ..self.clone() },
            false => self.clone(),
        }
    }

    /// Decodes to an f32 tensor of the original shape.
    pub fn dequantize(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.dequantize_f32(), self.shape.as_slice(), device)?)
    }

    /// Stacks 2-D tensors quantized with one scheme along their rows (dim 0), as if the stacked matrix had been
    /// quantized at once: per-channel (dim 0) and per-group parameters are per row, so they stack too. Used to fuse
    /// the Q, K and V projections of a checkpoint into one matmul.
    pub fn concat_rows(parts: &[QTensor]) -> Result<Self> {
        let first = parts.first().ok_or_else(|| QuantError::InvalidScheme("nothing to concatenate".into()))?;
        let &[_, cols] = first.shape() else {
            return Err(QuantError::InvalidScheme(format!("concat_rows takes 2-D tensors, got {:?}", first.shape())));
        };
        let row_local = match first.scheme.granularity() {
            Granularity::PerChannel { dim } => dim == 0,
            Granularity::PerGroup { .. } => true,
            Granularity::PerTensor => false,
        };
        if !row_local {
            return Err(QuantError::InvalidScheme(format!(
                "parameters {:?} are not per row, so rows cannot be stacked",
                first.scheme.granularity()
            )));
        }
        let mut rows = 0;
        let (mut scales, mut zero_points, mut mins, mut raw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for part in parts {
            if part.levels != first.levels {
                return Err(QuantError::InvalidScheme("tensors with different codebooks cannot be stacked".into()));
            }
            if part.scheme != first.scheme || part.shape.len() != 2 || part.shape[1] != cols {
                return Err(QuantError::ShapeMismatch {
                    what: "tensors stacked by rows (same scheme and columns)",
                    left: part.shape.clone(),
                    right: first.shape.clone(),
                });
            }
            rows += part.shape[0];
            scales.extend_from_slice(&part.scales);
            zero_points.extend_from_slice(&part.zero_points);
            mins.extend_from_slice(&part.mins);
            raw.extend(unpack(&part.packed, part.bits(), part.numel())?);
        }
        let packed = pack_unchecked(&raw, first.bits());
        Ok(Self {
            shape: vec![rows, cols],
            scheme: first.scheme,
            scales,
            zero_points,
            mins,
            levels: first.levels,
            packed,
        })
    }

    /// Bytes the quantized form takes: codes, f32 scales and minimums, one byte per zero point where they are
    /// not all 0, and the 16 bytes of a codebook.
    pub fn storage_bytes(&self) -> usize {
        let zero_point_bytes = if self.zero_points.iter().any(|&z| z != 0) { self.zero_points.len() } else { 0 };
        let level_bytes = self.levels.map_or(0, |l| l.len());
        self.packed.len() + 4 * (self.scales.len() + self.mins.len()) + zero_point_bytes + level_bytes
    }
}

/// Checks that there is one finite scale per parameter slot (see [`QParams::validate_stored`]).
fn check_scales(scales: &[f32], layout: &ParamLayout) -> Result<()> {
    if scales.len() != layout.channels {
        return Err(QuantError::ParamCount { what: "scales", expected: layout.channels, got: scales.len() });
    }
    check_stored_scales(scales)
}

/// The values of a tensor as f32, row-major.
fn tensor_values(x: &Tensor) -> Result<Vec<f32>> {
    Ok(x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
}

/// The layout of `shape` under `granularity`, after checking that `values` are finite and fill `shape`.
fn checked_layout(values: &[f32], shape: &[usize], granularity: Granularity) -> Result<ParamLayout> {
    let layout = ParamLayout::new(shape, granularity)?;
    let numel: usize = shape.iter().product();
    if values.len() != numel {
        return Err(QuantError::ShapeMismatch {
            what: "number of values vs shape",
            left: vec![values.len()],
            right: shape.to_vec(),
        });
    }
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(QuantError::NonFinite { what: "input tensor", index, value });
    }
    Ok(layout)
}

/// `q = clamp(round_half_even(x * (1 / scale)) + zero_point, qmin, qmax)`, computed in f32 as PyTorch does.
fn encode_linear(
    values: &[f32],
    shape: &[usize],
    layout: &ParamLayout,
    scheme: LinearScheme,
    params: QParams,
) -> QTensor {
    let (qmin, qmax) = scheme.range.bounds(scheme.bits);
    let mask = ((1u32 << scheme.bits.count()) - 1) as u8;
    let mut raw = vec![0u8; values.len()];
    let mut offset = 0;
    layout.for_each_run(values, |c, run| {
        let inv_scale = 1.0 / params.scales[c];
        let zp = params.zero_points[c] as f32;
        for (dst, &x) in raw[offset..offset + run.len()].iter_mut().zip(run) {
            let q = ((x * inv_scale).round_ties_even() + zp).clamp(qmin as f32, qmax as f32) as i32;
            *dst = (q as u8) & mask;
        }
        offset += run.len();
    });
    QTensor {
        shape: shape.to_vec(),
        scheme: Scheme::Linear(scheme),
        scales: params.scales,
        zero_points: params.zero_points,
        mins: Vec::new(),
        levels: None,
        packed: pack_unchecked(&raw, scheme.bits),
    }
}

/// The largest magnitude of each parameter slot.
fn absmax(values: &[f32], layout: &ParamLayout) -> Vec<f32> {
    let mut absmax = vec![0f32; layout.channels];
    layout.for_each_run(values, |c, run| {
        absmax[c] = run.iter().fold(absmax[c], |m, x| m.max(x.abs()));
    });
    absmax
}

/// NF4: per block, `scale = absmax`, code = nearest level of `x / absmax`.
fn encode_nf4(values: &[f32], shape: &[usize], layout: &ParamLayout, scheme: Scheme) -> QTensor {
    let scales: Vec<f32> = absmax(values, layout).into_iter().map(|a| a.max(MIN_SCALE)).collect();
    let packed = scaled_codes(values, layout, &scales, nearest_level);
    QTensor { shape: shape.to_vec(), scheme, scales, zero_points: Vec::new(), mins: Vec::new(), levels: None, packed }
}

/// The 4-bit codes of `values`, packed: each value divided by its group's scale, then coded by `code`.
fn scaled_codes(values: &[f32], layout: &ParamLayout, scales: &[f32], code: impl Fn(f32) -> u8) -> Vec<u8> {
    let mut raw = Vec::with_capacity(values.len());
    layout.for_each_run(values, |c, run| {
        let inv = 1.0 / scales[c];
        raw.extend(run.iter().map(|&x| code(x * inv)));
    });
    pack_unchecked(&raw, Bits::B4)
}

/// Codebook: the tensor's levels (NF4's, or k-means on every `x / absmax` of its group), then per group
/// `scale = absmax / 127` and code = nearest level of `x / scale`.
fn encode_codebook(
    values: &[f32],
    shape: &[usize],
    layout: &ParamLayout,
    scheme: Scheme,
    codebook: Codebook,
) -> QTensor {
    let absmax = absmax(values, layout);
    let levels = match codebook {
        Codebook::Nf4 => nf4_levels(),
        Codebook::KMeans => {
            let mut normalized = Vec::with_capacity(values.len());
            layout.for_each_run(values, |c, run| {
                let a = absmax[c];
                normalized.extend(run.iter().map(|&x| if a > 0.0 { x / a } else { 0.0 }));
            });
            round_levels(&kmeans_levels(&normalized))
        }
    };
    let scales: Vec<f32> = absmax.iter().map(|a| (a / 127.0).max(MIN_SCALE)).collect();
    let packed = scaled_codes(values, layout, &scales, |x| nearest_code(&levels, x));
    let levels = Some(levels);
    QTensor { shape: shape.to_vec(), scheme, scales, zero_points: Vec::new(), mins: Vec::new(), levels, packed }
}

/// Min-max: per group, `min` and `scale = (max - min) / qmax`, code `round_half_even((x - min) / scale)`.
fn encode_min_max(values: &[f32], shape: &[usize], layout: &ParamLayout, scheme: Scheme, bits: Bits) -> QTensor {
    let qmax = (1u32 << bits.count()) - 1;
    let mut lo = vec![f32::INFINITY; layout.channels];
    let mut hi = vec![f32::NEG_INFINITY; layout.channels];
    layout.for_each_run(values, |c, run| {
        for &x in run {
            lo[c] = lo[c].min(x);
            hi[c] = hi[c].max(x);
        }
    });
    let scales: Vec<f32> = lo.iter().zip(&hi).map(|(l, h)| ((h - l) / qmax as f32).max(MIN_SCALE)).collect();
    let mut raw = Vec::with_capacity(values.len());
    layout.for_each_run(values, |c, run| {
        let (inv, min) = (1.0 / scales[c], lo[c]);
        raw.extend(run.iter().map(|&x| ((x - min) * inv).round_ties_even().clamp(0.0, qmax as f32) as u8));
    });
    QTensor {
        shape: shape.to_vec(),
        scheme,
        scales,
        zero_points: Vec::new(),
        mins: lo,
        levels: None,
        packed: pack_unchecked(&raw, bits),
    }
}
