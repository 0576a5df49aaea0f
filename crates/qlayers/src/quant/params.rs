//! Computing and checking scales and zero points.

use super::layout::ParamLayout;
use super::scheme::{Bits, CodeRange, Granularity, LinearScheme};
use crate::error::{QuantError, Result};

/// Smallest scale ever produced, as PyTorch's observers do: keeps all-zero tensors free of NaN.
pub const MIN_SCALE: f32 = f32::EPSILON;

/// Explicit parameters of an affine quantization, as `torch.quantize_per_tensor` / `quantize_per_channel` take them.
#[derive(Debug, Clone, PartialEq)]
pub struct QParams {
    /// Bit width of the codes.
    pub bits: Bits,
    /// Range of the codes.
    pub range: CodeRange,
    /// Which elements share a parameter.
    pub granularity: Granularity,
    /// One scale per parameter slot.
    pub scales: Vec<f32>,
    /// One zero point per parameter slot.
    pub zero_points: Vec<i32>,
}

impl QParams {
    /// Per-tensor parameters with signed or unsigned 8-bit codes (`qint8` / `quint8`).
    pub fn per_tensor(bits: Bits, range: CodeRange, scale: f32, zero_point: i32) -> Self {
        Self { bits, range, granularity: Granularity::PerTensor, scales: vec![scale], zero_points: vec![zero_point] }
    }

    /// Checks parameters to quantize with against the layout: [`QParams::validate_stored`], and every scale
    /// strictly positive (values are divided by it).
    pub fn validate(&self, layout: &ParamLayout) -> Result<()> {
        if let Some((index, &value)) = self.scales.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s > 0.0)) {
            return Err(QuantError::BadScale { index, value, rule: QUANTIZING_SCALES });
        }
        self.validate_stored(layout)
    }

    /// Checks the parameters of codes already made (a checkpoint, a GGUF block) against the layout: count,
    /// finite scales, zero points inside the code range. A stored scale may be zero or negative: it only
    /// multiplies its codes, and llama.cpp's Q4_0 writes both (`d = max / -8`; an all-zero block).
    pub fn validate_stored(&self, layout: &ParamLayout) -> Result<()> {
        for (what, got) in [("scales", self.scales.len()), ("zero points", self.zero_points.len())] {
            if got != layout.channels {
                return Err(QuantError::ParamCount { what, expected: layout.channels, got });
            }
        }
        check_stored_scales(&self.scales)?;
        let (min, max) = self.range.bounds(self.bits);
        if let Some((index, &value)) = self.zero_points.iter().enumerate().find(|(_, z)| !(min..=max).contains(*z)) {
            return Err(QuantError::BadZeroPoint { index, value, min, max });
        }
        Ok(())
    }
}

/// What the scales to quantize with must be.
const QUANTIZING_SCALES: &str = "scales must be finite and strictly positive";

/// Checks that every stored scale is finite (see [`QParams::validate_stored`]).
pub(crate) fn check_stored_scales(scales: &[f32]) -> Result<()> {
    match scales.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        Some((index, &value)) => Err(QuantError::BadScale { index, value, rule: "stored scales must be finite" }),
        None => Ok(()),
    }
}

/// Computes the parameters of `scheme` for `values` viewed through `layout` (PyTorch's min/max observer rules):
/// symmetric `scale = max|x| / qmax`, zero point 0; asymmetric over the range extended to include 0,
/// `scale = (max - min) / (qmax - qmin)`, `zero_point = qmin - round_half_even(min / scale)`.
pub fn compute_params(values: &[f32], layout: &ParamLayout, scheme: &LinearScheme) -> Result<QParams> {
    scheme.validate()?;
    let mut lo = vec![0f32; layout.channels];
    let mut hi = vec![0f32; layout.channels];
    layout.for_each_run(values, |c, run| {
        for &x in run {
            lo[c] = lo[c].min(x);
            hi[c] = hi[c].max(x);
        }
    });
    let (qmin, qmax) = scheme.range.bounds(scheme.bits);
    let (scales, zero_points) = if scheme.symmetric {
        let scales = lo.iter().zip(&hi).map(|(l, h)| (h.max(-l) / qmax as f32).max(MIN_SCALE)).collect();
        (scales, vec![0; layout.channels])
    } else {
        let scales: Vec<f32> =
            lo.iter().zip(&hi).map(|(l, h)| ((h - l) / (qmax - qmin) as f32).max(MIN_SCALE)).collect();
        let zps =
            lo.iter().zip(&scales).map(|(l, s)| (qmin - (l / s).round_ties_even() as i32).clamp(qmin, qmax)).collect();
        (scales, zps)
    };
    Ok(QParams { bits: scheme.bits, range: scheme.range, granularity: scheme.granularity, scales, zero_points })
}

/// Whether f16 holds every scale and minimum well: none beyond its range, and no scale in its subnormal range
/// (where it keeps few bits) except the least scale an all-zero group gets. The kernels keep per-block parameters
/// in f16 only then.
pub(crate) fn fits_f16(scales: &[f32], mins: &[f32]) -> bool {
    let (max, min_normal) = (half::f16::MAX.to_f32(), half::f16::MIN_POSITIVE.to_f32());
    scales.iter().map(|s| s.abs()).all(|s| s <= max && (s >= min_normal || s <= MIN_SCALE))
        && mins.iter().all(|m| m.abs() <= max)
}
