//! The form a quantized layer takes on candle's own kernels, which is how it runs on a device other than the CPU
//! (CUDA, Metal): weights that a ggml block format holds exactly ([`crate::quant::ggml`]) go to candle's quantized
//! matmul (`QMatMul`) as those blocks; the others are dequantized once, to f16, for candle's matmul.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::Result;
use crate::kernels::{check_activation_step, check_input_scale, Isa};
use crate::quant::{ggml, QTensor};

/// How a layer computes its products: on the CPU with this crate's kernels, or with candle's on any device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerPath {
    /// The fused integer kernels of [`crate::kernels`] on the CPU, at this level.
    Kernels(Isa),
    /// The f32 GEMM of [`crate::kernels`] on the CPU.
    FloatGemm,
    /// candle's matmul on f32 weights.
    CandleF32,
    /// candle's quantized matmul on ggml blocks of this format, which hold the layer's codes as they are.
    GgmlBlocks(GgmlDType),
    /// candle's matmul on the layer's weights dequantized once to f16 (no ggml format holds the scheme exactly).
    DequantizedF16,
}

impl std::fmt::Display for LayerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kernels(isa) => write!(f, "cpu kernels ({isa})"),
            Self::FloatGemm => f.write_str("cpu f32 gemm"),
            Self::CandleF32 => f.write_str("candle f32 matmul"),
            Self::GgmlBlocks(dtype) => write!(f, "candle qmatmul ({dtype:?} blocks)"),
            Self::DequantizedF16 => f.write_str("candle f16 matmul (dequantized)"),
        }
    }
}

/// A quantized linear layer's weights on candle's kernels, on one device.
#[derive(Debug, Clone)]
pub(crate) struct DeviceLinear {
    matmul: QMatMul,
    path: LayerPath,
    /// `[out]`, f32.
    bias: Option<Tensor>,
    /// SmoothQuant's per-input factors, as given and as an f32 `[in]` tensor on the device.
    input_scale: Option<(Vec<f32>, Tensor)>,
    /// A static W8A8 layer's calibrated activation step, kept for checkpoints (candle quantizes activations its
    /// own way).
    activation_step: Option<f32>,
    /// Bytes the weights take on the device.
    weight_bytes: usize,
}

impl DeviceLinear {
    /// `q` (`[out, in]`) on `device`. The ggml blocks take the codes as they are and the scales (and minimums)
    /// rounded to f16, as the weight-only layers keep them on the CPU, whose weights they then are bit for bit;
    /// `half_params` says whether the CPU layer keeps f16 parameters, and so what the f16 fallback dequantizes.
    pub(crate) fn new(q: &QTensor, bias: Option<&Tensor>, half_params: bool, device: &Device) -> Result<Self> {
        let exact = q.with_f16_params();
        let (matmul, path, weight_bytes) = match ggml::to_ggml(&exact, device)? {
            Some(blocks) => {
                let (dtype, bytes) = (blocks.dtype(), blocks.storage_size_in_bytes());
                (QMatMul::from_qtensor(blocks)?, LayerPath::GgmlBlocks(dtype), bytes)
            }
            None => {
                let held = if half_params { &exact } else { q };
                let weights = Tensor::from_vec(held.dequantize_f32(), q.shape(), device)?.to_dtype(DType::F16)?;
                let bytes = 2 * weights.elem_count();
                (QMatMul::TensorF16(weights), LayerPath::DequantizedF16, bytes)
            }
        };
        let bias = bias.map(|b| b.to_dtype(DType::F32)?.to_device(device)).transpose()?;
        Ok(Self { matmul, path, bias, input_scale: None, activation_step: None, weight_bytes })
    }

    /// This layer with each input feature multiplied by `scale` before the product (see
    /// [`crate::QLinear::with_input_scale`]).
    pub(crate) fn with_input_scale(self, scale: Vec<f32>, in_features: usize) -> Result<Self> {
        check_input_scale(&scale, in_features)?;
        let tensor = Tensor::from_slice(&scale, in_features, &self.device())?;
        Ok(Self { input_scale: Some((scale, tensor)), ..self })
    }

    /// This layer with a static W8A8 activation step (see [`crate::QLinear::with_activation_step`]).
    pub(crate) fn with_activation_step(self, step: f32) -> Result<Self> {
        check_activation_step(step)?;
        Ok(Self { activation_step: Some(step), ..self })
    }

    /// See [`crate::QLinear::activation_step`].
    pub(crate) fn activation_step(&self) -> Option<f32> {
        self.activation_step
    }

    /// The device the weights are on.
    pub(crate) fn device(&self) -> Device {
        match &self.matmul {
            QMatMul::QTensor(q) => q.device(),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.device().clone(),
        }
    }

    /// Which of candle's kernels the layer runs.
    pub(crate) fn path(&self) -> LayerPath {
        self.path
    }

    /// See [`crate::QLinear::input_scale`].
    pub(crate) fn input_scale(&self) -> Option<&[f32]> {
        self.input_scale.as_ref().map(|(values, _)| values.as_slice())
    }

    /// Bytes of the weights and bias on the device.
    pub(crate) fn storage_bytes(&self) -> usize {
        self.weight_bytes + self.bias.as_ref().map_or(0, |b| 4 * b.elem_count())
    }

    /// `x W^T + b` for a contiguous f32 `x` of shape `[..., in]` on the layer's device.
    pub(crate) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = match &self.input_scale {
            Some((_, scale)) => x.broadcast_mul(scale)?,
            None => x.clone(),
        };
        let y = self.matmul.forward(&x)?;
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }
}
