//! Linear layers that read one input and whose outputs sit side by side (BERT's and Llama's Q, K and V; Llama's
//! gate and up projections): one fused matmul when the plan gives them one scheme (and their weights one codebook),
//! else one each.

use anyhow::Result;
use qlayers::QLinear;

use crate::loader::{Bias, LinearParams, QuantLoader};

/// Projections of one input whose outputs are concatenated along each row.
pub(crate) enum Projection {
    /// One matmul over the stacked weights.
    Fused(Box<QLinear>),
    /// One matmul each (the plan gave them different schemes, or their weights different codebooks).
    Separate(Vec<QLinear>),
}

impl Projection {
    /// Reads the layers `names` (each `[outs[i], input]`, with a bias as `bias` says) and fuses them when they can
    /// be stacked (see [`LinearParams::stackable`]); the fused layer is reported as `fused_name`.
    pub(crate) fn load(
        loader: &QuantLoader,
        names: &[String],
        input: usize,
        outs: &[usize],
        bias: Bias,
        fused_name: &str,
    ) -> Result<Self> {
        let parts = names
            .iter()
            .zip(outs)
            .map(|(n, &out)| loader.linear_params(n, input, out, bias))
            .collect::<Result<Vec<_>>>()?;
        if LinearParams::stackable(&parts) {
            let fused = LinearParams::concat_rows(parts)?;
            Ok(Self::Fused(Box::new(loader.build_linear(fused_name, fused)?)))
        } else {
            let layers = names.iter().zip(parts).map(|(n, p)| loader.build_linear(n, p)).collect::<Result<_>>()?;
            Ok(Self::Separate(layers))
        }
    }

    /// `[rows, sum(outs)]`: each row's outputs of every layer, side by side.
    pub(crate) fn forward(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        match self {
            Self::Fused(layer) => Ok(layer.forward_f32(x, rows)?),
            Self::Separate(layers) => {
                let outs = layers.iter().map(|l| l.forward_f32(x, rows)).collect::<qlayers::Result<Vec<_>>>()?;
                let widths: Vec<usize> = layers.iter().map(QLinear::out_features).collect();
                let mut joined = Vec::with_capacity(rows * widths.iter().sum::<usize>());
                for r in 0..rows {
                    for (out, &w) in outs.iter().zip(&widths) {
                        joined.extend_from_slice(&out[r * w..(r + 1) * w]);
                    }
                }
                Ok(joined)
            }
        }
    }

    /// [`Projection::forward`] into `out` (resized and overwritten), reusing its memory.
    pub(crate) fn forward_into(&self, x: &[f32], rows: usize, out: &mut Vec<f32>) -> Result<()> {
        match self {
            Self::Fused(layer) => Ok(layer.forward_into(x, rows, None, out)?),
            Self::Separate(_) => {
                let joined = self.forward(x, rows)?;
                out.clear();
                out.extend_from_slice(&joined);
                Ok(())
            }
        }
    }

    /// [`Projection::forward`] on a tensor `[rows, input]` on the layers' device (models on candle's kernels).
    pub(crate) fn forward_tensor(&self, x: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        use candle_core::Module;
        match self {
            Self::Fused(layer) => Ok(layer.forward(x)?),
            Self::Separate(layers) => {
                let outs = layers.iter().map(|l| l.forward(x)).collect::<candle_core::Result<Vec<_>>>()?;
                Ok(candle_core::Tensor::cat(&outs, candle_core::D::Minus1)?)
            }
        }
    }

    /// Parameter bytes in memory.
    pub(crate) fn storage_bytes(&self) -> usize {
        match self {
            Self::Fused(layer) => layer.storage_bytes(),
            Self::Separate(layers) => layers.iter().map(QLinear::storage_bytes).sum(),
        }
    }
}
