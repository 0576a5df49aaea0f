//! Pre-quantized checkpoints: a model folder whose `model.safetensors` holds integer codes instead of float
//! weights, loadable without the fp32 model.
//!
//! For every quantized Linear layer `L` (a `[out, in]` weight quantized under scheme `S`):
//!
//! | tensor | dtype | shape | holds |
//! |---|---|---|---|
//! | `L.weight.codes` | I8 (8-bit symmetric), U8 otherwise | `[out, in * bits / 8]` | codes, row-major; 4- and 2-bit codes packed low bits first |
//! | `L.weight.scales` | F32 | `[out, groups]` | one scale per row (per-channel) or per row and group of K |
//! | `L.weight.zero_points` | U8 | `[out, groups]` | only for asymmetric integer-zero-point codes |
//! | `L.weight.mins` | F32 | `[out, groups]` | only for asymmetric weight schemes (`x = code * scale + min`) |
//! | `L.weight.levels` | I8 | `[16]` | only for codebook schemes (`nf4-gN`, `kmeans-gN`): `x = scale * levels[code]` |
//! | `L.bias` | F32 | `[out]` | as in the float model |
//!
//! Layers left in f32, embeddings and norms keep their float tensors and names. `config.json` gets a
//! `quantization_config` object: `quant_method` (`"qinfer"`), `format_version`, the `plan`, and `layers`, the
//! scheme name of every Linear layer, from which the codes' scheme follows. The tokenizer and sentence-transformers
//! files are copied beside it, so the folder can be uploaded to the Hub as is.
//!
//! Codebook layers came without a new format version: they only add `L.weight.levels`, and files without them are
//! unchanged; a reader that predates them stops at their scheme names in `config.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use qlayers::{Bits, CodeRange, Granularity, LayerScheme, LinearScheme, QTensor, Scheme};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::loader::TrackedTensors;
use crate::plan::Plan;

/// A tensor as a checkpoint stores it (what a recording loader hands out).
#[derive(Debug, Clone)]
pub enum Stored {
    /// A float tensor (embeddings, norms, f32 layers).
    Float(Tensor),
    /// A quantized weight.
    Quantized(QTensor),
}

/// `quant_method` of the checkpoints this module writes.
pub const QUANT_METHOD: &str = "qinfer";
/// Version of the tensor layout above.
pub const FORMAT_VERSION: u32 = 2;
/// Weights file of a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The `quantization_config` object of a pre-quantized checkpoint's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationConfig {
    /// Always [`QUANT_METHOD`].
    pub quant_method: String,
    /// Always [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The plan the checkpoint was quantized with.
    pub plan: Plan,
    /// The scheme of every Linear layer, by dotted name.
    pub layers: BTreeMap<String, String>,
}

impl QuantizationConfig {
    /// The `quantization_config` of a parsed `config.json`, if it has one written by this crate; another
    /// library's quantization config is an error.
    pub fn from_config(config: &serde_json::Value) -> Result<Option<Self>> {
        let Some(value) = config.get("quantization_config") else { return Ok(None) };
        let method = value.get("quant_method").and_then(|m| m.as_str()).unwrap_or("unknown");
        if method != QUANT_METHOD {
            bail!("config.json has a quantization_config of quant_method {method:?}; only {QUANT_METHOD:?} is read");
        }
        let qc: Self = serde_json::from_value(value.clone()).context("bad quantization_config in config.json")?;
        if qc.format_version != FORMAT_VERSION {
            bail!("checkpoint format version {} (this build reads {FORMAT_VERSION})", qc.format_version);
        }
        qc.plan.validate()?;
        Ok(Some(qc))
    }

    /// The stored scheme of each layer.
    pub(crate) fn layers(&self) -> Result<QuantizedLayers> {
        let layers = self
            .layers
            .iter()
            .map(|(name, scheme)| Ok((name.clone(), scheme.parse().with_context(|| format!("layer {name}"))?)))
            .collect::<Result<_>>()?;
        Ok(QuantizedLayers { layers })
    }
}

/// Each layer's scheme in a pre-quantized checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct QuantizedLayers {
    layers: BTreeMap<String, LayerScheme>,
}

impl QuantizedLayers {
    /// The stored scheme of `name`, if the checkpoint lists it.
    pub(crate) fn get(&self, name: &str) -> Option<LayerScheme> {
        self.layers.get(name).copied()
    }

    /// The stored scheme of `name`.
    pub(crate) fn scheme_for(&self, name: &str) -> Result<LayerScheme> {
        self.layers
            .get(name)
            .copied()
            .with_context(|| format!("the checkpoint's quantization_config has no layer {name}"))
    }
}

/// Reads layer `name`'s quantized weight of `shape` under `scheme` from a checkpoint.
pub(crate) fn read_weight(
    tensors: &TrackedTensors,
    name: &str,
    scheme: LayerScheme,
    shape: [usize; 2],
) -> Result<QTensor> {
    let [rows, cols] = shape;
    let (weight_scheme, _) = scheme.weight_scheme(cols)?.context("an integer scheme")?;
    let groups = match weight_scheme.granularity() {
        Granularity::PerGroup { size } => cols.div_ceil(size),
        _ => 1,
    };
    let raw = |suffix: &str| tensors.get(&format!("{name}.weight.{suffix}"));
    let codes = raw("codes").with_context(|| format!("{name}.weight.codes is missing"))?;
    if !matches!(codes.dtype(), Dtype::U8 | Dtype::I8) {
        bail!("{name}.weight.codes is {:?}, expected U8 or I8", codes.dtype());
    }
    let params = |suffix: &str| -> Result<Vec<f32>> {
        let t = tensors
            .load(&format!("{name}.weight.{suffix}"))
            .with_context(|| format!("{name}.weight.{suffix} is missing (scheme {scheme})"))?;
        if t.dims() != [rows, groups] {
            bail!("{name}.weight.{suffix} has shape {:?}, expected {:?}", t.dims(), [rows, groups]);
        }
        Ok(t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?)
    };
    let scales = params("scales")?;
    let q = match weight_scheme {
        Scheme::MinMax { bits, group_size } => QTensor::from_min_max_parts(
            shape.to_vec(),
            bits,
            group_size,
            scales,
            params("mins")?,
            codes.data().to_vec(),
        ),
        Scheme::Codebook { codebook, group_size } => {
            let levels = raw("levels").with_context(|| format!("{name}.weight.levels is missing (scheme {scheme})"))?;
            let levels: [i8; 16] = match (levels.dtype(), levels.data()) {
                (Dtype::I8, data) if levels.shape() == [16] => std::array::from_fn(|i| data[i] as i8),
                _ => bail!("{name}.weight.levels is {:?} {:?}, expected I8 [16]", levels.dtype(), levels.shape()),
            };
            QTensor::from_codebook_parts(shape.to_vec(), codebook, group_size, levels, scales, codes.data().to_vec())
        }
        _ => {
            let signed = matches!(weight_scheme, Scheme::Linear(LinearScheme { range: CodeRange::Signed, .. }));
            let zero_points = match raw("zero_points") {
                Ok(z) if z.dtype() == Dtype::U8 && z.shape() == [rows, groups] => {
                    z.data().iter().map(|&v| i32::from(v)).collect()
                }
                Ok(z) => bail!(
                    "{name}.weight.zero_points is {:?} {:?}, expected U8 {:?}",
                    z.dtype(),
                    z.shape(),
                    [rows, groups]
                ),
                Err(_) if signed => vec![0; scales.len()],
                Err(_) => bail!("{name}.weight.zero_points is missing (scheme {scheme} is asymmetric)"),
            };
            QTensor::from_parts(shape.to_vec(), weight_scheme, scales, zero_points, codes.data().to_vec())
        }
    };
    q.with_context(|| format!("{name}'s codes do not fit {shape:?} under {scheme}"))
}

/// One tensor to write: dtype, shape and little-endian bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

/// Writes the recorded tensors in the layout of the module docs.
pub(crate) fn write_tensors(recorded: &[(String, Stored)], path: &Path) -> Result<()> {
    let mut entries: Vec<Entry> = Vec::new();
    for (name, stored) in recorded {
        match stored {
            Stored::Float(t) => entries.push(float_entry(name, t)?),
            Stored::Quantized(q) => entries.extend(quantized_entries(name, q)?),
        }
    }
    let views = entries
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = [("quant_method".to_string(), QUANT_METHOD.to_string()), ("format".to_string(), "pt".to_string())];
    safetensors::serialize_to_file(views, Some(metadata.into_iter().collect()), path)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn float_entry(name: &str, t: &Tensor) -> Result<Entry> {
    let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
    Ok((name.to_string(), Dtype::F32, t.dims().to_vec(), values.iter().flat_map(|v| v.to_le_bytes()).collect()))
}

/// `name` is `L.weight`: writes `L.weight.codes`, `.scales` and (if asymmetric) `.zero_points` or `.mins`, or
/// `.levels` for a codebook.
fn quantized_entries(name: &str, q: &QTensor) -> Result<Vec<Entry>> {
    let &[rows, cols] = q.shape() else { bail!("{name} is not 2-D") };
    let (bits, range) = match *q.scheme() {
        Scheme::Linear(LinearScheme { bits, range, .. }) => (bits, range),
        Scheme::MinMax { bits, .. } => (bits, CodeRange::Unsigned),
        Scheme::Codebook { .. } => (Bits::B4, CodeRange::Unsigned),
        Scheme::Nf4 { .. } => bail!("{name}: NF4 with exact float levels is not saved: use the nf4-gN layer scheme"),
    };
    let groups = q.scales().len() / rows;
    let row_bytes = cols * bits.count() as usize / 8;
    let codes_shape = if (cols * bits.count() as usize).is_multiple_of(8) {
        vec![rows, row_bytes]
    } else {
        vec![q.packed_codes().len()]
    };
    let codes_dtype = if bits == Bits::B8 && range == CodeRange::Signed { Dtype::I8 } else { Dtype::U8 };
    let mut entries = vec![
        (format!("{name}.codes"), codes_dtype, codes_shape, q.packed_codes().to_vec()),
        (
            format!("{name}.scales"),
            Dtype::F32,
            vec![rows, groups],
            q.scales().iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ];
    if q.zero_points().iter().any(|&z| z != 0) {
        let zps =
            q.zero_points().iter().map(|&z| u8::try_from(z).context("zero point beyond U8")).collect::<Result<_>>()?;
        entries.push((format!("{name}.zero_points"), Dtype::U8, vec![rows, groups], zps));
    }
    if !q.mins().is_empty() {
        let mins = q.mins().iter().flat_map(|v| v.to_le_bytes()).collect();
        entries.push((format!("{name}.mins"), Dtype::F32, vec![rows, groups], mins));
    }
    if let Some(levels) = q.levels() {
        entries.push((format!("{name}.levels"), Dtype::I8, vec![16], levels.iter().map(|&l| l as u8).collect()));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::safetensors::MmapedSafetensors;

    /// Deterministic weights with a spread of magnitudes, a zero row and a zero group.
    fn weights(n: usize, k: usize) -> Tensor {
        let values: Vec<f32> = (0..n * k)
            .map(|i| {
                let (row, col) = (i / k, i % k);
                match row == 0 || (row == 1 && (64..128).contains(&col)) {
                    true => 0.0,
                    false => (i as f32 * 0.618).sin() * (1.0 + (i % 7) as f32) * 0.01,
                }
            })
            .collect();
        Tensor::from_vec(values, (n, k), &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn quantized_layers_round_trip_bit_for_bit() -> Result<()> {
        let (n, k, m) = (40, 192, 3);
        let w = weights(n, k);
        let bias = Tensor::from_vec((0..n).map(|i| i as f32 * 0.01).collect::<Vec<f32>>(), n, w.device())?;
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).cos()).collect();
        let dir = std::env::temp_dir().join(format!("swap-checkpoint-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(WEIGHTS_FILE);
        for name in ["nf4-g64", "kmeans-g64", "kmeans-g32", "int4-g32-asym", "int4-g64", "int8-g32", "w8a8-b64"] {
            let scheme: LayerScheme = name.parse()?;
            let (weight_scheme, block) = scheme.weight_scheme(k)?.context("an integer scheme")?;
            let q = QTensor::quantize(&w, weight_scheme)?;
            write_tensors(&[("layer.weight".into(), Stored::Quantized(q.clone()))], &path)?;
            // SAFETY: the file is not modified while mapped.
            let tensors = unsafe { MmapedSafetensors::new(&path) }?;
            let back = read_weight(&TrackedTensors::new(&tensors, &Default::default()), "layer", scheme, [n, k])?;
            assert_eq!(back, q, "{name}");
            assert_eq!(back.levels().is_some(), name.starts_with("nf4") || name.starts_with("kmeans"), "{name}");
            let saved = qlayers::QLinear::from_qtensor(&back, Some(&bias), scheme, block)?.forward_f32(&x, m)?;
            let fresh = qlayers::QLinear::new(&w, Some(&bias), scheme)?.forward_f32(&x, m)?;
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&saved), bits(&fresh), "{name}");
        }
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn bad_codebook_levels_are_errors() -> Result<()> {
        let (n, k) = (4, 64);
        let q =
            QTensor::quantize(&weights(n, k), Scheme::Codebook { codebook: qlayers::Codebook::Nf4, group_size: 64 })?;
        let dir = std::env::temp_dir().join(format!("swap-checkpoint-levels-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(WEIGHTS_FILE);
        let mut entries = quantized_entries("layer.weight", &q)?;
        let write = |entries: &[Entry]| -> Result<MmapedSafetensors> {
            let views = entries
                .iter()
                .map(|(name, dtype, shape, bytes)| {
                    Ok((name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)?))
                })
                .collect::<Result<Vec<_>>>()?;
            safetensors::serialize_to_file(views, None, &path)?;
            // SAFETY: the file is not modified while mapped.
            Ok(unsafe { MmapedSafetensors::new(&path) }?)
        };
        let scheme: LayerScheme = "nf4-g64".parse()?;
        entries.last_mut().expect("levels").1 = Dtype::U8;
        let read = |tensors: &MmapedSafetensors| {
            read_weight(&TrackedTensors::new(tensors, &Default::default()), "layer", scheme, [n, k]).unwrap_err()
        };
        let err = read(&write(&entries)?);
        assert!(err.to_string().contains("expected I8 [16]"), "{err}");
        entries.pop();
        let err = read(&write(&entries)?);
        assert!(err.to_string().contains("levels is missing"), "{err}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
