//! SmoothQuant (Xiao et al., 2023): per-input-channel factors that move activation outliers into the weights
//! before W8A8. With `s_j = max|x_j|^alpha / max|w_j|^(1 - alpha)`, the layer computes
//! `(x / s) (W diag(s))^T = x W^T` exactly in real arithmetic, while the activations it quantizes have flatter
//! channels (and the weights slightly rougher ones).

use std::sync::Mutex;

use candle_core::{DType, Tensor};

use crate::error::{QuantError, Result};

/// Factors are kept within `[1 / LIMIT, LIMIT]`, so that no channel is scaled into f32's edges.
const LIMIT: f32 = 1e4;

/// The smoothing factor of every input channel of a `[out, in]` `weight`, from the largest `|x|` each channel saw
/// on calibration data (`input_absmax`, `in` values) and the migration strength `alpha` in `[0, 1]` (0.5 in the
/// paper). A channel that never fired, or whose weights are all zero, keeps factor 1.
pub fn smoothing_factors(input_absmax: &[f32], weight: &Tensor, alpha: f32) -> Result<Vec<f32>> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(QuantError::InvalidScheme(format!("smoothing strength must be in [0, 1], got {alpha}")));
    }
    let &[_, k] = weight.dims() else {
        return Err(QuantError::InvalidScheme(format!("a linear weight must be 2-D, got {:?}", weight.dims())));
    };
    if input_absmax.len() != k {
        return Err(QuantError::ShapeMismatch {
            what: "input channel maxima vs weight columns",
            left: vec![input_absmax.len()],
            right: vec![k],
        });
    }
    let weight_absmax: Vec<f32> = weight.to_dtype(DType::F32)?.abs()?.max(0)?.to_vec1()?;
    Ok(input_absmax
        .iter()
        .zip(&weight_absmax)
        .map(|(&a, &w)| {
            let ok = |v: f32| v.is_finite() && v > 0.0;
            match ok(a) && ok(w) {
                true => (a.powf(alpha) / w.powf(1.0 - alpha)).clamp(1.0 / LIMIT, LIMIT),
                false => 1.0,
            }
        })
        .collect())
}

/// `weight * factors` in f32: each input channel `j` of a `[out, in]` weight scaled by `factors[j]` (positive
/// and finite, one per input channel), the weight a smoothed layer quantizes.
pub fn smoothed_weight(weight: &Tensor, factors: &[f32]) -> Result<Tensor> {
    let k = weight.dims().last().copied().unwrap_or(0);
    if factors.len() != k {
        return Err(QuantError::ShapeMismatch {
            what: "smoothing factors vs weight columns",
            left: vec![factors.len()],
            right: vec![k],
        });
    }
    if let Some((index, &value)) = factors.iter().enumerate().find(|(_, f)| !(f.is_finite() && **f > 0.0)) {
        return Err(QuantError::NonFinite { what: "smoothing factors (must be positive)", index, value });
    }
    let s = Tensor::from_slice(factors, (1, k), weight.device())?;
    Ok(weight.to_dtype(DType::F32)?.broadcast_mul(&s)?)
}

/// The running per-channel maximum of `|x|` over every row a layer has seen (calibration statistics).
#[derive(Debug, Default)]
pub struct InputRange {
    absmax: Mutex<Vec<f32>>,
}

impl InputRange {
    /// Folds rows `x` of `k` values into the maxima.
    pub fn observe(&self, x: &[f32], k: usize) {
        let mut absmax = self.absmax.lock().unwrap_or_else(|e| e.into_inner());
        if absmax.len() != k {
            *absmax = vec![0.0; k];
        }
        for row in x.chunks_exact(k) {
            absmax.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
        }
    }

    /// The maxima so far (empty before any input).
    pub fn absmax(&self) -> Vec<f32> {
        self.absmax.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn factors_balance_activation_and_weight_ranges() {
        let w = Tensor::from_slice(&[0.5f32, -2.0, 0.0, 1.0, 0.25, 0.0], (2, 3), &Device::Cpu).unwrap();
        let s = smoothing_factors(&[8.0, 1.0, 3.0], &w, 0.5).unwrap();
        // Channel 0: sqrt(8) / sqrt(1); channel 1: sqrt(1) / sqrt(2); channel 2 has zero weights: 1.
        assert!((s[0] - 8f32.sqrt()).abs() < 1e-6 && (s[1] - 0.5f32.sqrt()).abs() < 1e-6 && s[2] == 1.0, "{s:?}");
        assert_eq!(smoothing_factors(&[8.0, 1.0, 3.0], &w, 0.0).unwrap()[0], 1.0);
        assert!(smoothing_factors(&[1.0, 1.0], &w, 0.5).is_err());
        assert!(smoothing_factors(&[1.0; 3], &w, 1.5).is_err());
        let range = InputRange::default();
        range.observe(&[1.0, -5.0, 2.0, 3.0, 0.5, -4.0], 3);
        assert_eq!(range.absmax(), [3.0, 5.0, 4.0]);
    }
}
