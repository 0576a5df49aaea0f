//! The post-norm encoder stack on candle tensors ([`StackOnDevice`]), for layers on candle's kernels (a GPU
//! device, see [`crate::Placement`]): the CPU path's operations as candle operations on the layers' device, the
//! hidden states uploaded once and read back once; each run of consecutive equal-length sequences attends as one
//! batch, over its own tokens only, as on the CPU.

use anyhow::Result;
use candle_core::{Device, Module, Tensor};
use qlayers::float_ops::attention::RelativeBias;
use qlayers::Activation;

use super::encoder::{EncoderShape, Layer};

/// The layer norms of every layer on the device (the Linear layers are already there).
pub(super) struct StackOnDevice {
    device: Device,
    /// Per layer: the attention norm's and the output norm's weight and bias.
    norms: Vec<[(Tensor, Tensor); 2]>,
}

/// Consecutive sequences of one length: rows `start..start + count * len`.
struct Run {
    start: usize,
    count: usize,
    len: usize,
}

impl StackOnDevice {
    /// Uploads the layer norms of `layers` to `device`.
    pub(super) fn new(device: &Device, layers: &[Layer]) -> Result<Self> {
        let upload = |values: &[f32]| Tensor::from_slice(values, values.len(), device);
        let norms = layers
            .iter()
            .map(|l| {
                let (a, o) = (&l.attention_norm, &l.output_norm);
                Ok([(upload(&a.weight)?, upload(&a.bias)?), (upload(&o.weight)?, upload(&o.bias)?)])
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { device: device.clone(), norms })
    }

    /// Runs `layers` over `hidden` (`[rows, h]` in host memory, sequence `b` at rows `starts[b]..starts[b] +
    /// lens[b]`), with `bias` added to the attention scores when given; returns the last layer's output.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        layers: &[Layer],
        shape: EncoderShape,
        activation: Activation,
        hidden: Vec<f32>,
        starts: &[usize],
        lens: &[usize],
        bias: Option<&RelativeBias>,
    ) -> Result<Vec<f32>> {
        let h = shape.hidden;
        let rows = hidden.len() / h;
        let runs = equal_length_runs(starts, lens);
        let biases = match bias {
            Some(bias) => Some(self.bias_matrices(bias, &runs, shape.heads)?),
            None => None,
        };
        let eps = shape.eps;
        let mut x = Tensor::from_vec(hidden, (rows, h), &self.device)?;
        for (layer, [attention_norm, output_norm]) in layers.iter().zip(&self.norms) {
            let qkv = layer.qkv.forward_tensor(&x)?;
            let context = attend(&qkv, &runs, shape.heads, h / shape.heads, biases.as_deref())?;
            let attended = layer.attention_out.forward(&context)?;
            let attended =
                candle_nn::ops::layer_norm(&(attended + &x)?, &attention_norm.0, &attention_norm.1, eps as f32)?;
            let inner = activation.apply_tensor(&layer.intermediate.forward(&attended)?)?;
            let out = layer.output.forward(&inner)?;
            x = candle_nn::ops::layer_norm(&(out + &attended)?, &output_norm.0, &output_norm.1, eps as f32)?;
        }
        Ok(x.flatten_all()?.to_vec1()?)
    }

    /// The relative-position bias of each run's length, `[1, heads, len, len]` on the device.
    fn bias_matrices(&self, bias: &RelativeBias, runs: &[Run], heads: usize) -> Result<Vec<Tensor>> {
        runs.iter()
            .map(|run| Ok(Tensor::from_vec(bias.matrix(run.len), (1, heads, run.len, run.len), &self.device)?))
            .collect()
    }
}

/// The runs of consecutive equal-length sequences.
fn equal_length_runs(starts: &[usize], lens: &[usize]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (&start, &len) in starts.iter().zip(lens) {
        match runs.last_mut() {
            Some(run) if run.len == len && run.start + run.count * run.len == start => run.count += 1,
            _ => runs.push(Run { start, count: 1, len }),
        }
    }
    runs
}

/// `softmax(q k^T / sqrt(d) + bias) v` of every run, from `qkv` (`[rows, 3 h]`: each row's queries, keys and
/// values side by side); `biases` holds one matrix per run. Returns `[rows, h]`.
fn attend(qkv: &Tensor, runs: &[Run], heads: usize, d: usize, biases: Option<&[Tensor]>) -> Result<Tensor> {
    let scale = 1.0 / (d as f64).sqrt();
    let contexts = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let x = qkv.narrow(0, run.start, run.count * run.len)?.reshape((run.count, run.len, 3, heads, d))?;
            // [count, heads, len, d]
            let part = |p: usize| x.narrow(2, p, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
            let (q, k, v) = (part(0)?, part(1)?, part(2)?);
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(biases) = biases {
                scores = scores.broadcast_add(&biases[i])?;
            }
            let weights = candle_nn::ops::softmax_last_dim(&scores)?;
            weights.matmul(&v)?.transpose(1, 2)?.reshape((run.count * run.len, heads * d))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&contexts, 0)?)
}
