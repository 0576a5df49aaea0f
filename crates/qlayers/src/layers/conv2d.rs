//! [`QConv2d`]: a drop-in quantized replacement for `candle_nn::Conv2d`, through im2col and the linear kernels on
//! the CPU, and candle's convolution on the weights dequantized to f16 elsewhere.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use candle_nn::Conv2dConfig;

use super::int_weights::pack_qtensor;
use super::linear::contiguous_f32;
use super::scheme::LayerScheme;
use crate::error::{QuantError, Result};
use crate::kernels::PackedWeights;
use crate::quant::QTensor;

/// A 2-D convolution whose weights are quantized per a [`LayerScheme`] (one scale per output channel for
/// W8A8). Stride, padding, dilation and groups follow `candle_nn::Conv2dConfig`; input is `[batch, in, h, w]`. The
/// device of the weights decides how it runs: on the CPU with the integer kernels, elsewhere (CUDA, Metal) with
/// candle's convolution on the quantized weights dequantized once to f16.
#[derive(Debug, Clone)]
pub struct QConv2d {
    scheme: LayerScheme,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    F32(candle_nn::Conv2d),
    Int(IntConv2d),
    /// The quantized weights dequantized to f16 (`[out, in / groups, kh, kw]`), for candle's convolution.
    Candle {
        weight: Tensor,
        bias: Option<Tensor>,
        config: Conv2dConfig,
    },
}

/// The integer form: one packed `[out / groups, in / groups * kh * kw]` matrix per group.
#[derive(Debug, Clone)]
struct IntConv2d {
    groups: Vec<PackedWeights>,
    bias: Option<Vec<f32>>,
    config: Conv2dConfig,
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
}

impl QConv2d {
    /// Quantizes `weight` (`[out, in / groups, kh, kw]`) per `scheme`; `bias` is `[out]`. The layer runs where the
    /// weight is.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>, config: Conv2dConfig, scheme: LayerScheme) -> Result<Self> {
        Self::build(weight, bias, config, scheme, !weight.device().is_cpu())
    }

    /// [`QConv2d::new`] on candle's convolution (the weights quantized, then dequantized to f16 on the weight's
    /// device) wherever the weight is: how it runs on a device other than the CPU, here to check that path on
    /// the CPU.
    pub fn on_candle(
        weight: &Tensor,
        bias: Option<&Tensor>,
        config: Conv2dConfig,
        scheme: LayerScheme,
    ) -> Result<Self> {
        Self::build(weight, bias, config, scheme, true)
    }

    /// Checks and quantizes the weight, for the integer kernels or for candle's convolution (`on_candle`).
    fn build(
        weight: &Tensor,
        bias: Option<&Tensor>,
        config: Conv2dConfig,
        scheme: LayerScheme,
        on_candle: bool,
    ) -> Result<Self> {
        let &[out_channels, in_per_group, kh, kw] = weight.dims() else {
            return Err(QuantError::InvalidScheme(format!(
                "a conv2d weight must be 4-D [out, in, kh, kw], got {:?}",
                weight.dims()
            )));
        };
        let g = config.groups;
        if g == 0 || out_channels % g != 0 || config.stride == 0 || config.dilation == 0 {
            return Err(QuantError::InvalidScheme(format!(
                "conv2d config {config:?} does not fit {out_channels} output channels (groups must divide them; stride and dilation are at least 1)"
            )));
        }
        if let Some(b) = bias {
            if b.dims() != [out_channels] {
                return Err(QuantError::ShapeMismatch {
                    what: "conv2d bias vs output channels",
                    left: b.dims().to_vec(),
                    right: vec![out_channels],
                });
            }
        }
        let k = in_per_group * kh * kw;
        let kind = match scheme.weight_scheme(k)? {
            None => Kind::F32(candle_nn::Conv2d::new(weight.clone(), bias.cloned(), config)),
            Some((weight_scheme, block)) => {
                let per_group = out_channels / g;
                let flat = weight.reshape((out_channels, k))?;
                let quantized = (0..g)
                    .map(|gi| QTensor::quantize(&flat.narrow(0, gi * per_group, per_group)?, weight_scheme))
                    .collect::<Result<Vec<_>>>()?;
                if on_candle {
                    // The weights the CPU layer multiplies by (f16 parameters where it keeps them), then in f16.
                    let held = |q: &QTensor| if scheme.half_params() { q.with_f16_params() } else { q.clone() };
                    let values: Vec<f32> = quantized.iter().flat_map(|q| held(q).dequantize_f32()).collect();
                    let device = weight.device();
                    let weight = Tensor::from_vec(values, weight.dims(), device)?.to_dtype(DType::F16)?;
                    let bias = bias.map(|b| b.to_dtype(DType::F32)?.to_device(device)).transpose()?;
                    return Ok(Self { scheme, kind: Kind::Candle { weight, bias, config } });
                }
                let groups = quantized
                    .iter()
                    .map(|q| pack_qtensor(q, block, scheme.half_params()))
                    .collect::<Result<Vec<_>>>()?;
                let bias = bias.map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
                Kind::Int(IntConv2d {
                    groups,
                    bias,
                    config,
                    in_channels: in_per_group * g,
                    out_channels,
                    kernel: (kh, kw),
                })
            }
        };
        Ok(Self { scheme, kind })
    }

    /// Quantizes the weights of an existing `candle_nn::Conv2d`.
    pub fn from_conv2d(conv: &candle_nn::Conv2d, scheme: LayerScheme) -> Result<Self> {
        Self::new(conv.weight(), conv.bias(), *conv.config(), scheme)
    }

    /// The scheme the layer runs.
    pub fn scheme(&self) -> LayerScheme {
        self.scheme
    }

    /// Bytes the layer's parameters take in memory.
    pub fn storage_bytes(&self) -> usize {
        match &self.kind {
            Kind::F32(c) => 4 * (c.weight().elem_count() + c.bias().map_or(0, |b| b.elem_count())),
            Kind::Int(c) => {
                c.groups.iter().map(PackedWeights::storage_bytes).sum::<usize>()
                    + 4 * c.bias.as_ref().map_or(0, Vec::len)
            }
            Kind::Candle { weight, bias, .. } => {
                2 * weight.elem_count() + 4 * bias.as_ref().map_or(0, |b| b.elem_count())
            }
        }
    }
}

impl Module for QConv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.kind {
            Kind::F32(conv) => conv.forward(x),
            Kind::Int(conv) => {
                let dims = x.dims();
                if dims.len() != 4 || dims[1] != conv.in_channels {
                    return Err(QuantError::ShapeMismatch {
                        what: "QConv2d input [batch, in, h, w] vs in_channels",
                        left: dims.to_vec(),
                        right: vec![conv.in_channels],
                    }
                    .into());
                }
                conv.output_size(dims[2], dims[3])?;
                let dtype = x.dtype();
                x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(conv)?.to_dtype(dtype)
            }
            Kind::Candle { weight, bias, config } => {
                let dtype = x.dtype();
                let c = config;
                let y = x.to_dtype(DType::F16)?.conv2d(weight, c.padding, c.stride, c.dilation, c.groups)?;
                let y = y.to_dtype(DType::F32)?;
                let y = match bias {
                    Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
                    None => y,
                };
                y.to_dtype(dtype)
            }
        }
    }
}

impl IntConv2d {
    /// Output height and width for an `h x w` input.
    fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let c = &self.config;
        let span = |k: usize| c.dilation * (k - 1) + 1;
        let (sh, sw) = (span(self.kernel.0), span(self.kernel.1));
        if h + 2 * c.padding < sh || w + 2 * c.padding < sw {
            return Err(QuantError::ShapeMismatch {
                what: "conv2d input (plus padding) smaller than the dilated kernel",
                left: vec![h, w],
                right: vec![sh, sw],
            });
        }
        Ok(((h + 2 * c.padding - sh) / c.stride + 1, (w + 2 * c.padding - sw) / c.stride + 1))
    }
}

impl CustomOp1 for IntConv2d {
    fn name(&self) -> &'static str {
        "qconv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout)?;
        let &[batch, channels, h, w] = layout.dims() else { candle_core::bail!("qconv2d takes 4-D input") };
        let (oh, ow) = self.output_size(h, w)?;
        let (kh, kw) = self.kernel;
        let c = &self.config;
        let groups = self.groups.len();
        let (cin, cout) = (channels / groups, self.out_channels / groups);
        let k = cin * kh * kw;
        let positions = batch * oh * ow;
        let mut out = vec![0f32; batch * self.out_channels * oh * ow];
        let mut cols = vec![0f32; positions * k];
        for (gi, weights) in self.groups.iter().enumerate() {
            // im2col: one row per output position, K ordered as (channel, ki, kj) like the weight.
            for (p, row) in cols.chunks_exact_mut(k).enumerate() {
                let (b, oy, ox) = (p / (oh * ow), (p / ow) % oh, p % ow);
                for ci in 0..cin {
                    let plane = &x[((b * channels) + gi * cin + ci) * h * w..][..h * w];
                    for ki in 0..kh {
                        let iy = (oy * c.stride + ki * c.dilation) as isize - c.padding as isize;
                        for kj in 0..kw {
                            let ix = (ox * c.stride + kj * c.dilation) as isize - c.padding as isize;
                            let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                            row[(ci * kh + ki) * kw + kj] =
                                if inside { plane[iy as usize * w + ix as usize] } else { 0.0 };
                        }
                    }
                }
            }
            let bias = self.bias.as_ref().map(|b| &b[gi * cout..(gi + 1) * cout]);
            let y = weights.matmul(&cols, positions, bias)?;
            for (p, values) in y.chunks_exact(cout).enumerate() {
                let (b, pix) = (p / (oh * ow), p % (oh * ow));
                for (co, &v) in values.iter().enumerate() {
                    out[((b * self.out_channels) + gi * cout + co) * oh * ow + pix] = v;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, self.out_channels, oh, ow))))
    }
}
