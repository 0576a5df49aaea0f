//! Reading checkpoints saved by optimum-quanto (`quantization_map` + `safetensors`) for int8 weights.
//!
//! quanto writes, for each quantized module `L`, `L.weight._data` (the int8 codes, `[out, in]`) and `L.weight._scale`
//! (one scale per output row, `[out, 1]`, in the model's float dtype), keeps `L.bias` as it was, and lists the
//! modules in `quanto_qmap.json` as `{"L": {"weights": "qint8", "activations": "none"}}`. Such weights are
//! symmetric per-channel int8, which is what our W8A8 kernels take, so they run as they are; activations are
//! quantized on the fly per row and block of [`QUANTO_ACT_BLOCK`] whatever the map says of them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use qlayers::{Bits, Granularity, LayerScheme, LinearScheme, QTensor, Scheme};
use serde::Deserialize;

use crate::loader::TrackedTensors;

/// The map file of a quanto checkpoint.
pub const QMAP_FILE: &str = "quanto_qmap.json";
/// Activation block the W8A8 kernels use for quanto's per-channel int8 weights.
pub const QUANTO_ACT_BLOCK: usize = 32;

#[derive(Debug, Clone, Deserialize)]
struct QmapEntry {
    weights: String,
}

/// Which modules of a quanto checkpoint hold quantized weights.
#[derive(Debug, Clone)]
pub(crate) struct QuantoMap {
    modules: BTreeMap<String, QmapEntry>,
}

impl QuantoMap {
    /// Reads `quanto_qmap.json` in `dir`; weight types other than `qint8` are an error.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(QMAP_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let modules: BTreeMap<String, QmapEntry> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a quanto quantization map", path.display()))?;
        if let Some((name, entry)) = modules.iter().find(|(_, e)| e.weights != "qint8" && e.weights != "none") {
            bail!("{name} has quanto weights {:?}; only qint8 quanto checkpoints are read", entry.weights);
        }
        Ok(Self { modules })
    }

    /// W8A8 for the modules with qint8 weights, f32 for the rest.
    pub(crate) fn scheme_for(&self, name: &str) -> LayerScheme {
        match self.modules.get(name) {
            Some(e) if e.weights == "qint8" => {
                LayerScheme::W8A8 { act_block: QUANTO_ACT_BLOCK, weight_per_block: false }
            }
            _ => LayerScheme::F32,
        }
    }
}

/// Reads module `name`'s int8 weight of `shape` (`_data` and `_scale`).
pub(crate) fn read_weight(tensors: &TrackedTensors, name: &str, shape: [usize; 2]) -> Result<QTensor> {
    let data =
        tensors.get(&format!("{name}.weight._data")).with_context(|| format!("{name}.weight._data is missing"))?;
    if data.dtype() != safetensors::Dtype::I8 || data.shape() != shape {
        bail!("{name}.weight._data is {:?} {:?}, expected I8 {shape:?}", data.dtype(), data.shape());
    }
    let scale =
        tensors.load(&format!("{name}.weight._scale")).with_context(|| format!("{name}.weight._scale is missing"))?;
    if scale.elem_count() != shape[0] {
        bail!("{name}.weight._scale has shape {:?}; expected one scale per output row ({})", scale.dims(), shape[0]);
    }
    let scales: Vec<f32> = scale.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let scheme = LinearScheme::symmetric(Bits::B8, Granularity::PerChannel { dim: 0 });
    QTensor::from_parts(shape.to_vec(), Scheme::Linear(scheme), scales, vec![0; shape[0]], data.data().to_vec())
        .with_context(|| format!("{name}'s quanto weight"))
}
