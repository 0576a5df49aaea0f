//! Per-layer sensitivity: each layer quantized alone under each candidate scheme.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use qlayers::metrics::ErrorStats;
use qlayers::{LayerScheme, QLinear, QTensor};
use serde::Serialize;

use super::probe::{Evaluation, LayerShape, Probe};

/// One layer under one scheme.
#[derive(Debug, Clone, Serialize)]
pub struct SchemeResult {
    /// The scheme's name.
    #[serde(serialize_with = "as_name")]
    pub scheme: LayerScheme,
    /// Bytes of the layer in memory under the scheme (codes, scales, bias).
    pub bytes: usize,
    /// Mean squared error of the weight's round trip.
    pub weight_mse: f64,
    /// Signal-to-noise ratio of the weight's round trip, in dB.
    pub weight_snr_db: f64,
    /// The whole model with only this layer quantized, when measured.
    pub alone: Option<Evaluation>,
    /// [`super::Quality::loss`] of `alone` against the float model.
    pub loss: Option<f64>,
}

/// Every candidate scheme's result for one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSensitivity {
    /// The layer.
    #[serde(flatten)]
    pub layer: LayerShape,
    /// One result per candidate scheme, in the order asked.
    pub results: Vec<SchemeResult>,
}

fn as_name<S: serde::Serializer>(scheme: &LayerScheme, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(scheme)
}

/// The weight `[out, in]` as the layer scheme stores it, dequantized back to f32 (the weight itself for f32).
pub fn weight_round_trip(weight: &Tensor, scheme: LayerScheme) -> Result<Tensor> {
    let k = weight.dims().last().copied().unwrap_or(0);
    match scheme.weight_scheme(k)? {
        None => Ok(weight.clone()),
        Some((weight_scheme, _)) => Ok(QTensor::quantize(weight, weight_scheme)?.dequantize(&Device::Cpu)?),
    }
}

/// Quantizes each of `layers` (of `probe`) alone under each of `schemes`: the weight's round-trip error always,
/// and the whole model's quality when `end_to_end` (one rebuild and calibration run per layer and scheme).
/// `progress` is called before each layer with its index, the layer count and its name.
pub fn sensitivity(
    probe: &Probe,
    layers: &[LayerShape],
    schemes: &[LayerScheme],
    end_to_end: bool,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Vec<LayerSensitivity>> {
    let float = probe.float().quality;
    let mut table = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        progress(i, layers.len(), &layer.name);
        let weight = probe.weight(&layer.name)?;
        let bias = probe.bias(&layer.name);
        let mut results = Vec::with_capacity(schemes.len());
        for &scheme in schemes {
            let context = || format!("{} as {scheme}", layer.name);
            let stats = ErrorStats::between(weight, &weight_round_trip(weight, scheme).with_context(context)?)?;
            let bytes = QLinear::new(weight, bias, scheme).with_context(context)?.storage_bytes();
            let alone = match end_to_end {
                true => Some(probe.evaluate(&Probe::single_layer_plan(&layer.name, scheme)).with_context(context)?),
                false => None,
            };
            results.push(SchemeResult {
                scheme,
                bytes,
                weight_mse: stats.mse,
                weight_snr_db: stats.snr_db,
                loss: alone.map(|e| e.quality.loss(&float)),
                alone,
            });
        }
        table.push(LayerSensitivity { layer: layer.clone(), results });
    }
    Ok(table)
}
