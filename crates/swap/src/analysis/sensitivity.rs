//! Per-layer sensitivity: each layer quantized alone under each candidate scheme.

use anyhow::{Context, Result};
use candle_core::Tensor;
use qlayers::metrics::ErrorStats;
use qlayers::{LayerScheme, QLinear};
use serde::Serialize;

use super::probe::{Evaluation, LayerShape, Probe};

/// A scheme to try on each layer, with or without SmoothQuant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The layer scheme.
    pub scheme: LayerScheme,
    /// SmoothQuant's strength, for W8A8 schemes (see [`qlayers::layers::smoothing_factors`]).
    pub smoothing: Option<f32>,
}

impl From<LayerScheme> for Candidate {
    fn from(scheme: LayerScheme) -> Self {
        Self { scheme, smoothing: None }
    }
}

/// The scheme's name, followed by `+sq` and the strength when smoothed (`w8a8-b64+sq0.5`).
impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.smoothing {
            None => write!(f, "{}", self.scheme),
            Some(alpha) => write!(f, "{}+sq{alpha}", self.scheme),
        }
    }
}

/// One layer under one candidate.
#[derive(Debug, Clone, Serialize)]
pub struct SchemeResult {
    /// The candidate's name (the scheme's, `+sqA` when smoothed).
    #[serde(serialize_with = "as_name")]
    pub candidate: Candidate,
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

fn as_name<S: serde::Serializer>(candidate: &Candidate, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(candidate)
}

/// The weight `[out, in]` as a layer of `scheme` multiplies by it (see [`LayerScheme::round_trip`]: f16 group
/// parameters included), back in f32; the weight itself for f32.
pub fn weight_round_trip(weight: &Tensor, scheme: LayerScheme) -> Result<Tensor> {
    let &[n, k] = weight.dims() else { anyhow::bail!("a linear weight is 2-D, got {:?}", weight.dims()) };
    let values: Vec<f32> = weight.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(Tensor::from_vec(scheme.round_trip(&values, n, k)?, (n, k), weight.device())?)
}

/// Quantizes each of `layers` (of `probe`) alone under each candidate: the weight's round-trip error always, and
/// the whole model's quality when `end_to_end` (one rebuild and calibration run per layer and candidate).
/// `progress` is called before each layer with its index, the layer count and its name.
pub fn sensitivity(
    probe: &Probe,
    layers: &[LayerShape],
    candidates: &[Candidate],
    end_to_end: bool,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Vec<LayerSensitivity>> {
    let mut table = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        progress(i, layers.len(), &layer.name);
        let weight = probe.weight(&layer.name)?;
        let bias = probe.bias(&layer.name);
        let mut results = Vec::with_capacity(candidates.len());
        for &candidate in candidates {
            let Candidate { scheme, smoothing } = candidate;
            let context = || format!("{} as {candidate}", layer.name);
            let (round_trip, built) = match smoothing {
                None => (weight_round_trip(weight, scheme), QLinear::new(weight, bias, scheme)),
                Some(alpha) => {
                    // The effective weight of a smoothed layer: its scaled weight's round trip, scaled back.
                    let factors = probe.smoothing_factors(&layer.name, alpha).with_context(context)?;
                    let s = Tensor::from_slice(&factors, (1, factors.len()), weight.device())?;
                    let round_trip =
                        weight_round_trip(&weight.broadcast_mul(&s)?, scheme).and_then(|w| Ok(w.broadcast_div(&s)?));
                    (round_trip, QLinear::smoothed(weight, bias, scheme, &factors))
                }
            };
            let stats = ErrorStats::between(weight, &round_trip.with_context(context)?)?;
            let bytes = built.with_context(context)?.storage_bytes();
            let alone = match end_to_end {
                true => Some(
                    probe
                        .evaluate_with(&Probe::single_layer_plan(&layer.name, scheme), smoothing)
                        .with_context(context)?,
                ),
                false => None,
            };
            results.push(SchemeResult {
                candidate,
                bytes,
                weight_mse: stats.mse,
                weight_snr_db: stats.snr_db,
                loss: alone.map(|e| e.quality.loss()),
                alone,
            });
        }
        table.push(LayerSensitivity { layer: layer.clone(), results });
    }
    Ok(table)
}
