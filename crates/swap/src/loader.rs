//! Builds quantized layers while the model's weights are read: each Linear the model asks for is read in f32
//! from the memory-mapped safetensors, quantized per the plan, and the f32 copy dropped, so peak memory is the
//! quantized model plus one float layer.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use qlayers::{LayerScheme, QLinear};

use crate::plan::Plan;

/// What one layer became: its name, scheme and bytes in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Dotted layer name (`encoder.layer.0.intermediate.dense`).
    pub name: String,
    /// The scheme the plan gave it.
    pub scheme: LayerScheme,
    /// Parameter bytes in memory.
    pub bytes: usize,
}

/// A weight reader that turns Linear layers into [`QLinear`]s per a [`Plan`].
pub struct QuantLoader {
    vb: VarBuilder<'static>,
    plan: Plan,
    report: Mutex<Vec<LayerReport>>,
}

impl QuantLoader {
    /// Memory-maps the safetensors `files` of one model.
    pub fn from_safetensors(files: &[impl AsRef<Path>], plan: Plan) -> Result<Self> {
        for f in files {
            let path = f.as_ref();
            safetensors_header_ok(path)?;
        }
        // SAFETY: the files are not modified while mapped (they are model files in a cache or folder).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, DType::F32, &Device::Cpu) }
            .context("cannot map the model's safetensors")?;
        Ok(Self { vb, plan, report: Mutex::new(Vec::new()) })
    }

    /// The plan in use.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Reads the f32 tensor `name` of `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.vb.get(shape, name).with_context(|| format!("weight {name} (expected shape {shape:?})"))
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    /// The Linear layer `name` (`name.weight` of `[out, in]`, `name.bias` of `[out]` if present), quantized per the
    /// plan.
    pub fn linear(&self, name: &str, in_dim: usize, out_dim: usize) -> Result<QLinear> {
        let weight = self.tensor(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let bias_name = format!("{name}.bias");
        let bias = if self.contains(&bias_name) { Some(self.tensor(&bias_name, &[out_dim])?) } else { None };
        self.linear_from(name, &weight, bias.as_ref())
    }

    /// The Linear layer `name` from tensors already read, quantized per the plan.
    pub fn linear_from(&self, name: &str, weight: &Tensor, bias: Option<&Tensor>) -> Result<QLinear> {
        self.linear_with(name, weight, bias, self.plan.scheme_for(name)?)
    }

    /// A Linear layer from tensors already read (for example several fused into one) with an explicit scheme;
    /// `name` is what the report calls it.
    pub fn linear_with(
        &self,
        name: &str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        scheme: LayerScheme,
    ) -> Result<QLinear> {
        let layer = QLinear::new(weight, bias, scheme).with_context(|| format!("quantizing {name} as {scheme}"))?;
        self.report.lock().unwrap_or_else(|e| e.into_inner()).push(LayerReport {
            name: name.to_string(),
            scheme,
            bytes: layer.storage_bytes(),
        });
        Ok(layer)
    }

    /// The scheme the plan gives `name`.
    pub fn scheme_for(&self, name: &str) -> Result<LayerScheme> {
        self.plan.scheme_for(name)
    }

    /// What every layer built so far became, in build order.
    pub fn report(&self) -> Vec<LayerReport> {
        self.report.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Checks that a safetensors file is complete before it is mapped: a truncated or corrupt file gets a clear error
/// instead of a fault when a tensor past its end is read.
fn safetensors_header_ok(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: read-only map of a model file.
    let data = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
    safetensors::SafeTensors::deserialize(&data)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))
}
