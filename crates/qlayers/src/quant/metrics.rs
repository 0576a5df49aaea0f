//! Error between a tensor and its quantization round trip.

use candle_core::{DType, Tensor};

use crate::error::{QuantError, Result};

/// Mean squared error, largest absolute error and signal-to-noise ratio of an approximation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorStats {
    /// Mean of `(x - x_hat)^2`.
    pub mse: f64,
    /// Largest `|x - x_hat|`.
    pub max_abs: f64,
    /// `10 * log10(sum x^2 / sum (x - x_hat)^2)` in dB; `+inf` for an exact round trip.
    pub snr_db: f64,
}

impl ErrorStats {
    /// Compares `reference` with `approx`, element by element; the shapes must match.
    pub fn between(reference: &Tensor, approx: &Tensor) -> Result<Self> {
        if reference.dims() != approx.dims() {
            return Err(QuantError::ShapeMismatch {
                what: "error metrics need tensors of one shape",
                left: reference.dims().to_vec(),
                right: approx.dims().to_vec(),
            });
        }
        let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?) };
        Self::between_slices(&flat(reference)?, &flat(approx)?)
    }

    /// Compares two slices of equal length.
    pub fn between_slices(reference: &[f32], approx: &[f32]) -> Result<Self> {
        if reference.len() != approx.len() {
            return Err(QuantError::ShapeMismatch {
                what: "error metrics need slices of one length",
                left: vec![reference.len()],
                right: vec![approx.len()],
            });
        }
        if reference.is_empty() {
            return Err(QuantError::EmptyTensor { shape: vec![0] });
        }
        let (mut signal, mut noise, mut max_abs) = (0f64, 0f64, 0f64);
        for (&x, &y) in reference.iter().zip(approx) {
            let d = f64::from(x) - f64::from(y);
            signal += f64::from(x) * f64::from(x);
            noise += d * d;
            max_abs = max_abs.max(d.abs());
        }
        let snr_db = if noise == 0.0 { f64::INFINITY } else { 10.0 * (signal / noise).log10() };
        Ok(Self { mse: noise / reference.len() as f64, max_abs, snr_db })
    }
}

impl std::fmt::Display for ErrorStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MSE {:.3e}, max |err| {:.3e}, SNR {:.2} dB", self.mse, self.max_abs, self.snr_db)
    }
}
