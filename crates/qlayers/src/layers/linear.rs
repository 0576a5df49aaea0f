//! [`QLinear`]: a drop-in quantized replacement for `candle_nn::Linear`.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};

use std::sync::Arc;

use super::device::{DeviceLinear, LayerPath};
use super::int_weights::pack_qtensor;
use super::scheme::LayerScheme;
use super::smoothing::{smoothed_weight, InputRange};
use crate::activation::Activation;
use crate::error::{QuantError, Result};
use crate::kernels::{selected_isa, FloatWeights, PackedWeights};
use crate::quant::QTensor;

/// Bytes of intermediate rows [`QLinear::forward_pair_into`] computes at a time.
const PAIR_CHUNK_BYTES: usize = 1 << 20;

/// Parameter bytes of both layers above which [`QLinear::forward_pair_into`] runs the pair whole. Measured on a
/// 2-core Zen 4 (2 MB L2): int8 pairs of 1.2 and 4.7 MB (MiniLM's and bert-base's FFN) and the f32 pair of 4.7 MB
/// gain from chunks, the f32 pair of 18.9 MB (bert-base) loses about 4%.
const PAIR_MAX_WEIGHT_BYTES: usize = 8 << 20;

/// A linear layer `y = x W^T + b` whose weights are quantized per a [`LayerScheme`].
///
/// It implements [`candle_core::Module`], so it stands wherever `candle_nn::Linear` stands: any input of shape
/// `[..., in_features]` and any float dtype (computed in f32 and returned in the input's dtype). The device of the
/// weights decides how it runs ([`QLinear::path`]): on the CPU, integer schemes run the fused kernels of
/// [`crate::kernels`] and f32 weights its f32 GEMM; on another device (CUDA, Metal) every layer runs candle's own
/// kernels, integer schemes as ggml blocks through candle's quantized matmul where a ggml format holds them exactly
/// and as weights dequantized once to f16 otherwise (see [`QLinear::on_candle`]).
#[derive(Debug, Clone)]
pub struct QLinear {
    scheme: LayerScheme,
    in_features: usize,
    out_features: usize,
    kind: Kind,
    /// Records the range of every input channel, when calibration asked for it.
    observer: Option<Arc<InputRange>>,
}

#[derive(Debug, Clone)]
enum Kind {
    /// f32 weights on a device other than the CPU: candle's matmul.
    Candle(candle_nn::Linear),
    /// f32 weights packed for the CPU f32 GEMM.
    Float(Box<FloatLinear>),
    /// Integer codes for the fused dequant-matmul kernels.
    Int(Box<IntLinear>),
    /// An integer scheme on candle's kernels (a device other than the CPU, or the CPU when asked for).
    Device(Box<DeviceLinear>),
}

/// The f32 form on the CPU: packed weights and the bias, as a candle custom op.
#[derive(Debug, Clone)]
pub(crate) struct FloatLinear {
    pub(crate) weights: FloatWeights,
    pub(crate) bias: Option<Vec<f32>>,
}

/// The integer form: packed weights and the bias, as a candle custom op.
#[derive(Debug, Clone)]
pub(crate) struct IntLinear {
    pub(crate) weights: PackedWeights,
    pub(crate) bias: Option<Vec<f32>>,
}

impl IntLinear {
    fn matmul(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.weights.matmul(x, m, self.bias.as_deref())
    }

    fn matmul_into(&self, x: &[f32], m: usize, activation: Option<Activation>, out: &mut [f32]) -> Result<()> {
        self.weights.matmul_into(x, m, self.bias.as_deref(), activation, out)
    }
}

impl QLinear {
    /// Quantizes `weight` (`[out, in]`) per `scheme`; `bias` is `[out]`. No float copy of the weight is kept. The
    /// layer runs where the weight is: on the CPU with this crate's kernels, elsewhere with candle's.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, scheme: LayerScheme) -> Result<Self> {
        let &[out_features, in_features] = weight.dims() else {
            return Err(QuantError::InvalidScheme(format!(
                "a linear weight must be 2-D [out, in], got {:?}",
                weight.dims()
            )));
        };
        check_bias(bias, out_features)?;
        let kind = match scheme.weight_scheme(in_features)? {
            None if weight.device().is_cpu() => {
                let values = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let weights = FloatWeights::new(selected_isa()?, &values, out_features, in_features)?;
                Kind::Float(Box::new(FloatLinear { weights, bias: bias_values(bias)? }))
            }
            None => Kind::Candle(candle_nn::Linear::new(weight.clone(), bias.cloned())),
            Some((weight_scheme, _)) if !weight.device().is_cpu() => {
                let q = QTensor::quantize(weight, weight_scheme)?;
                return Self::on_candle(&q, bias, scheme, weight.device());
            }
            Some((weight_scheme, block)) => {
                let q = QTensor::quantize(weight, weight_scheme)?;
                let weights = pack_qtensor(&q, block, scheme.half_params())?;
                Kind::Int(Box::new(IntLinear { weights, bias: bias_values(bias)? }))
            }
        };
        Ok(Self { scheme, in_features, out_features, kind, observer: None })
    }

    /// SmoothQuant: quantizes `weight * factors` (each input channel `j` scaled by `factors[j]`, see
    /// [`crate::layers::smoothing_factors`]) per the integer `scheme`, and divides each input row by the factors
    /// before quantizing it, so the layer still computes `x W^T + b`.
    pub fn smoothed(weight: &Tensor, bias: Option<&Tensor>, scheme: LayerScheme, factors: &[f32]) -> Result<Self> {
        let layer = Self::new(&smoothed_weight(weight, factors)?, bias, scheme)?;
        layer.with_input_scale(factors.iter().map(|f| 1.0 / f).collect())
    }

    /// This integer layer with every input row multiplied by `scale` (one positive factor per input feature) as it
    /// is quantized: a smoothed layer read back from a checkpoint, whose weights hold `W diag(s)` and whose `scale`
    /// is `1 / s`. Errors on a float layer.
    pub fn with_input_scale(self, scale: Vec<f32>) -> Result<Self> {
        let kind = match self.kind {
            Kind::Int(mut int) => {
                int.weights = int.weights.with_input_scale(scale)?;
                Kind::Int(int)
            }
            Kind::Device(device) => Kind::Device(Box::new(device.with_input_scale(scale, self.in_features)?)),
            Kind::Float(_) | Kind::Candle(_) => {
                return Err(QuantError::InvalidScheme("smoothing applies to integer schemes, not f32".into()))
            }
        };
        Ok(Self { kind, ..self })
    }

    /// This static W8A8 layer with its calibrated activation step (positive and finite; see
    /// [`LayerScheme::W8A8Static`]). On candle's kernels the step is kept (a checkpoint saves it) but candle
    /// quantizes activations its own way. Errors on a layer of another scheme.
    pub fn with_activation_step(self, step: f32) -> Result<Self> {
        if self.scheme != LayerScheme::W8A8Static {
            return Err(QuantError::InvalidScheme(format!(
                "an activation step applies to w8a8-static layers, not {}",
                self.scheme
            )));
        }
        let kind = match self.kind {
            Kind::Int(mut int) => {
                int.weights = int.weights.with_activation_step(step)?;
                Kind::Int(int)
            }
            Kind::Device(device) => Kind::Device(Box::new(device.with_activation_step(step)?)),
            Kind::Float(_) | Kind::Candle(_) => {
                return Err(QuantError::InvalidScheme("an activation step applies to integer layers".into()))
            }
        };
        Ok(Self { kind, ..self })
    }

    /// The calibrated activation step of a static W8A8 layer, once it has one.
    pub fn activation_step(&self) -> Option<f32> {
        match &self.kind {
            Kind::Int(int) => int.weights.activation_step(),
            Kind::Device(device) => device.activation_step(),
            Kind::Float(_) | Kind::Candle(_) => None,
        }
    }

    /// The factor each input feature is multiplied by before it is quantized (SmoothQuant's `1 / s`), when the
    /// layer is smoothed.
    pub fn input_scale(&self) -> Option<&[f32]> {
        match &self.kind {
            Kind::Int(int) => int.weights.input_scale(),
            Kind::Device(device) => device.input_scale(),
            Kind::Float(_) | Kind::Candle(_) => None,
        }
    }

    /// Starts recording the largest `|x|` of every input channel over all later inputs (calibration for
    /// [`QLinear::smoothed`]); returns the record.
    pub fn observe_inputs(&mut self) -> Arc<InputRange> {
        self.observer.get_or_insert_with(Default::default).clone()
    }

    /// Quantizes the weights of an existing `candle_nn::Linear`.
    pub fn from_linear(linear: &candle_nn::Linear, scheme: LayerScheme) -> Result<Self> {
        Self::new(linear.weight(), linear.bias(), scheme)
    }

    /// Builds the layer from an already quantized weight (for example read from a checkpoint), with activations
    /// quantized in K blocks of `act_block`. The weight's groups, if any, must be `act_block` long.
    pub fn from_qtensor(
        weight: &QTensor,
        bias: Option<&Tensor>,
        scheme: LayerScheme,
        act_block: usize,
    ) -> Result<Self> {
        let weights = pack_qtensor(weight, act_block, scheme.half_params())?;
        let (out_features, in_features) = (weights.n(), weights.k());
        check_bias(bias, out_features)?;
        Ok(Self {
            scheme,
            in_features,
            out_features,
            kind: Kind::Int(Box::new(IntLinear { weights, bias: bias_values(bias)? })),
            observer: None,
        })
    }

    /// [`QLinear::from_qtensor`] on `device`: on the CPU this crate's kernels, elsewhere candle's
    /// ([`QLinear::on_candle`]).
    pub fn from_qtensor_on(
        weight: &QTensor,
        bias: Option<&Tensor>,
        scheme: LayerScheme,
        act_block: usize,
        device: &Device,
    ) -> Result<Self> {
        match device.is_cpu() {
            true => Self::from_qtensor(weight, bias, scheme, act_block),
            false => Self::on_candle(weight, bias, scheme, device),
        }
    }

    /// The already quantized `weight` (`[out, in]`) of an integer `scheme` on candle's own kernels, on `device`:
    /// how layers run on a device other than the CPU. Where a ggml format holds the codes exactly (int8 per group
    /// of 32 or per output channel as Q8_0, symmetric int4 in groups of 32 as Q4_0, min-max int4 in groups of 32 as
    /// Q4_1; see [`crate::quant::ggml`]) they go to candle's quantized matmul as those blocks, with the scales and
    /// minimums in f16 as ggml holds them (the weights of the CPU layer for weight-only schemes, which keep f16
    /// parameters; a W8A8 layer's f32 scales are rounded to f16). Other schemes multiply by the CPU layer's
    /// weights rounded to f16, dequantized once here. On the CPU this path serves to check it against the
    /// kernels. Activations are not quantized by this crate here: candle's quantized matmul quantizes them in its
    /// own blocks of 32 (q8_1) or computes in f16.
    pub fn on_candle(weight: &QTensor, bias: Option<&Tensor>, scheme: LayerScheme, device: &Device) -> Result<Self> {
        let &[out_features, in_features] = weight.shape() else {
            return Err(QuantError::InvalidScheme(format!(
                "a linear weight must be 2-D [out, in], got {:?}",
                weight.shape()
            )));
        };
        if scheme.weight_scheme(in_features)?.is_none() {
            return Err(QuantError::InvalidScheme("f32 layers take their float weights (QLinear::new)".into()));
        }
        check_bias(bias, out_features)?;
        let layer = DeviceLinear::new(weight, bias, scheme.half_params(), device)?;
        Ok(Self { scheme, in_features, out_features, kind: Kind::Device(Box::new(layer)), observer: None })
    }

    /// The scheme the layer runs.
    pub fn scheme(&self) -> LayerScheme {
        self.scheme
    }

    /// Which kernels compute the layer's products.
    pub fn path(&self) -> LayerPath {
        match &self.kind {
            Kind::Int(int) => LayerPath::Kernels(int.weights.isa()),
            Kind::Float(_) => LayerPath::FloatGemm,
            Kind::Candle(_) => LayerPath::CandleF32,
            Kind::Device(device) => device.path(),
        }
    }

    /// The device the layer's weights are on.
    pub fn device(&self) -> Device {
        match &self.kind {
            Kind::Int(_) | Kind::Float(_) => Device::Cpu,
            Kind::Candle(linear) => linear.weight().device().clone(),
            Kind::Device(device) => device.device(),
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// `y = x W^T + b` on plain buffers: `x` holds `m` rows of `in_features` values, row-major; the result holds
    /// `m` rows of `out_features`. The same kernels as [`Module::forward`], without building tensors around them
    /// (for model code that keeps its activations in buffers).
    pub fn forward_f32(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        self.check_input(x, m)?;
        match &self.kind {
            Kind::Int(int) => int.matmul(x, m),
            Kind::Float(float) => float.weights.matmul(x, m, float.bias.as_deref()),
            Kind::Candle(_) | Kind::Device(_) => self.candle_rows(x, m),
        }
    }

    /// [`QLinear::forward_f32`] into `out`, resized to `m * out_features` and overwritten, with `activation`
    /// applied to each output: model code that keeps its buffers from layer to layer and call to call spares the
    /// fresh pages each new output costs, and the activation, applied as the kernels store their outputs, spares
    /// a pass over them.
    pub fn forward_into(&self, x: &[f32], m: usize, activation: Option<Activation>, out: &mut Vec<f32>) -> Result<()> {
        out.resize(m * self.out_features, 0.0);
        self.forward_rows(x, m, activation, out)
    }

    /// Two layers in a row, `second(activation(first(x)))`, into `out` (resized to `m * second.out_features`),
    /// a chunk of rows at a time: the intermediate rows of a chunk (in `inner`, kept from call to call) are still
    /// in cache when `second` reads them, instead of a whole `[m, first.out_features]` output going out to memory
    /// and coming back (25 MB a layer for MiniLM's FFN at 32 x 128 tokens); pairs whose weights are too large to
    /// be read again for every chunk from cache run whole. Each row's result depends on that row alone, so it is
    /// bit for bit that of two [`QLinear::forward_into`] calls.
    pub fn forward_pair_into(
        first: &QLinear,
        activation: Option<Activation>,
        second: &QLinear,
        x: &[f32],
        m: usize,
        inner: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        if first.out_features != second.in_features {
            return Err(QuantError::ShapeMismatch {
                what: "first layer's outputs vs second layer's inputs",
                left: vec![first.out_features],
                right: vec![second.in_features],
            });
        }
        first.check_len(x, m)?;
        let (k, width, n) = (first.in_features, first.out_features, second.out_features);
        // Every chunk reads both weights again: pairs whose weights are too large to come from cache run whole.
        let chunked = first.storage_bytes() + second.storage_bytes() <= PAIR_MAX_WEIGHT_BYTES;
        let rows_per_chunk = match chunked {
            true => (PAIR_CHUNK_BYTES / (4 * width).max(1)).clamp(1, m.max(1)),
            false => m.max(1),
        };
        inner.resize(rows_per_chunk * width, 0.0);
        out.resize(m * n, 0.0);
        for start in (0..m).step_by(rows_per_chunk) {
            let rows = rows_per_chunk.min(m - start);
            let hidden = &mut inner[..rows * width];
            first.forward_rows(&x[start * k..(start + rows) * k], rows, activation, hidden)?;
            second.forward_rows(hidden, rows, None, &mut out[start * n..(start + rows) * n])?;
        }
        Ok(())
    }

    /// [`QLinear::forward_into`] into `out`, which holds `m * out_features` values, for checked input `x`.
    fn forward_rows(&self, x: &[f32], m: usize, activation: Option<Activation>, out: &mut [f32]) -> Result<()> {
        self.check_input(x, m)?;
        match &self.kind {
            Kind::Int(int) => int.matmul_into(x, m, activation, out),
            Kind::Float(float) => float.weights.matmul_into(x, m, float.bias.as_deref(), activation, out),
            Kind::Candle(_) | Kind::Device(_) => {
                out.copy_from_slice(&self.candle_rows(x, m)?);
                if let Some(activation) = activation {
                    activation.apply_all(out);
                }
                Ok(())
            }
        }
    }

    /// Checks that `x` holds `m` rows of `in_features` values, and records them when calibration asked for it.
    fn check_input(&self, x: &[f32], m: usize) -> Result<()> {
        self.check_len(x, m)?;
        if let Some(observer) = &self.observer {
            observer.observe(x, self.in_features);
        }
        Ok(())
    }

    /// Checks that `x` holds `m` rows of `in_features` values.
    fn check_len(&self, x: &[f32], m: usize) -> Result<()> {
        if x.len() != m * self.in_features {
            return Err(QuantError::ShapeMismatch {
                what: "QLinear input length vs m x in_features",
                left: vec![x.len()],
                right: vec![m, self.in_features],
            });
        }
        Ok(())
    }

    /// Bytes the layer's parameters take in memory (weights in their kernel layout, scales, zero points, minimums,
    /// a codebook's 16-byte table, bias).
    pub fn storage_bytes(&self) -> usize {
        match &self.kind {
            Kind::Candle(l) => tensor_bytes(l.weight()) + l.bias().map_or(0, tensor_bytes),
            Kind::Float(float) => float.weights.storage_bytes() + 4 * float.bias.as_ref().map_or(0, Vec::len),
            Kind::Int(int) => int.weights.storage_bytes() + 4 * int.bias.as_ref().map_or(0, Vec::len),
            Kind::Device(device) => device.storage_bytes(),
        }
    }
}

impl Module for QLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(observer) = &self.observer {
            observer.observe(&x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?, self.in_features);
        }
        self.forward_unobserved(x)
    }
}

impl QLinear {
    /// Runs `op` (the layer's own kernels) on `x` in f32, returning the input's dtype.
    fn apply_op(&self, x: &Tensor, op: &impl CustomOp1) -> candle_core::Result<Tensor> {
        self.check_last_dim(x)?;
        let dtype = x.dtype();
        x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(op)?.to_dtype(dtype)
    }

    /// Checks that `x`'s last dimension is the layer's input features.
    fn check_last_dim(&self, x: &Tensor) -> Result<()> {
        match x.dims().last() == Some(&self.in_features) {
            true => Ok(()),
            false => Err(QuantError::ShapeMismatch {
                what: "QLinear input's last dimension vs in_features",
                left: x.dims().to_vec(),
                right: vec![self.in_features],
            }),
        }
    }

    /// [`Module::forward`] without recording the input (the callers that record it have done so).
    fn forward_unobserved(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kind {
            Kind::Float(float) => self.apply_op(x, float.as_ref()),
            Kind::Int(int) => self.apply_op(x, int.as_ref()),
            Kind::Candle(linear) => linear.forward(x),
            Kind::Device(device) => {
                self.check_last_dim(x)?;
                let dtype = x.dtype();
                device.forward(&x.to_dtype(DType::F32)?.contiguous()?)?.to_dtype(dtype)
            }
        }
    }

    /// The layer applied by candle (on its device) to `m` rows of `in_features` values in host memory.
    fn candle_rows(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let x = Tensor::from_slice(x, (m, self.in_features), &self.device())?;
        Ok(self.forward_unobserved(&x)?.flatten_all()?.to_vec1()?)
    }
}

impl CustomOp1 for IntLinear {
    fn name(&self) -> &'static str {
        "qlinear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_linear(storage, layout, self.weights.k(), self.weights.n(), |x, m| self.matmul(x, m))
    }
}

impl CustomOp1 for FloatLinear {
    fn name(&self) -> &'static str {
        "qlinear-f32"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (k, n) = (self.weights.k(), self.weights.n());
        cpu_linear(storage, layout, k, n, |x, m| self.weights.matmul(x, m, self.bias.as_deref()))
    }
}

/// A linear op's CPU forward: `matmul(x, m)` over the `m` rows of `k` values of a contiguous f32 input, shaped as
/// the input with its last dimension `n`.
fn cpu_linear(
    storage: &CpuStorage,
    layout: &Layout,
    k: usize,
    n: usize,
    matmul: impl Fn(&[f32], usize) -> Result<Vec<f32>>,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let x = contiguous_f32(storage, layout)?;
    let y = matmul(x, x.len() / k)?;
    let mut out_dims = layout.dims().to_vec();
    *out_dims.last_mut().expect("checked by forward") = n;
    Ok((CpuStorage::F32(y), Shape::from(out_dims)))
}

/// The f32 values of a contiguous tensor (the layers' `forward` makes inputs contiguous f32 first).
pub(crate) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("quantized layers take contiguous f32 input"),
    }
}

/// Checks that a bias, if any, has one value per output feature.
fn check_bias(bias: Option<&Tensor>, out_features: usize) -> Result<()> {
    match bias {
        Some(b) if b.dims() != [out_features] => Err(QuantError::ShapeMismatch {
            what: "linear bias vs weight rows",
            left: b.dims().to_vec(),
            right: vec![out_features],
        }),
        _ => Ok(()),
    }
}

fn bias_values(bias: Option<&Tensor>) -> Result<Option<Vec<f32>>> {
    bias.map(|b| Ok(b.to_dtype(DType::F32)?.to_vec1::<f32>()?)).transpose()
}

fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}
