//! The values a scheme can represent around one weight: its quantization grid, for pictures.

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use qlayers::nf4::NF4_LEVELS;
use qlayers::quant::ParamLayout;
use qlayers::{LayerScheme, QTensor, Scheme};

/// Every value the layer scheme `scheme` can give the weight element at flat index `index` of `weight` (`[out, in]`):
/// the grid of the scale group holding it, ascending. Empty for f32.
pub fn grid_levels(weight: &Tensor, scheme: LayerScheme, index: usize) -> Result<Vec<f32>> {
    let k = weight.dims().last().copied().unwrap_or(0);
    let Some((weight_scheme, _)) = scheme.weight_scheme(k)? else { return Ok(Vec::new()) };
    if index >= weight.elem_count() {
        bail!("element {index} is outside a weight of {} values", weight.elem_count());
    }
    let q = QTensor::quantize(weight, weight_scheme)?;
    let layout = ParamLayout::new(q.shape(), weight_scheme.granularity())?;
    let group = (index / layout.inner) % layout.channels;
    let scale = q.scales()[group];
    let mut levels: Vec<f32> = match weight_scheme {
        Scheme::Linear(linear) => {
            let (low, high) = linear.range.bounds(linear.bits);
            let zero = q.zero_points().get(group).copied().unwrap_or(0);
            (low..=high).map(|code| (code - zero) as f32 * scale).collect()
        }
        Scheme::MinMax { bits, .. } => {
            let min = q.mins()[group];
            (0..1u32 << bits.count()).map(|code| code as f32 * scale + min).collect()
        }
        Scheme::Nf4 { .. } => NF4_LEVELS.iter().map(|level| level * scale).collect(),
        Scheme::Codebook { .. } => {
            let levels = q.levels().context("a codebook tensor has levels")?;
            levels.iter().map(|&level| f32::from(level) * scale).collect()
        }
    };
    levels.sort_by(f32::total_cmp);
    Ok(levels)
}
