//! Quantized tensors and drop-in quantized candle layers.
//!
//! The core is [`QTensor`]: integer codes plus scales and zero points under a [`Scheme`] (symmetric or
//! asymmetric, per tensor, per channel or per group, at 8, 4 or 2 bits, or a 16-entry codebook: NF4 or k-means).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use qlayers::{metrics::ErrorStats, Bits, Granularity, LinearScheme, QTensor};
//!
//! let x = Tensor::randn(0f32, 1.0, (16, 64), &Device::Cpu)?;
//! let q = QTensor::quantize(&x, LinearScheme::symmetric(Bits::B8, Granularity::PerChannel { dim: 0 }))?;
//! assert_eq!(q.scales().len(), 16);
//! let x_hat = q.dequantize(&Device::Cpu)?;
//! assert!(ErrorStats::between(&x, &x_hat)?.snr_db > 35.0);
//! # Ok::<(), qlayers::QuantError>(())
//! ```

pub mod activation;
pub mod error;
pub mod float_ops;
pub mod kernels;
pub mod layers;
pub mod pack;
pub mod quant;
pub mod threads;

pub use activation::Activation;
pub use error::{QuantError, Result};
pub use kernels::{Isa, PackedWeights, WeightCodes};
pub use layers::{LayerPath, LayerScheme, QConv2d, QLinear};
pub use quant::{metrics, nf4, Bits, CodeRange, Codebook, Granularity, LinearScheme, QParams, QTensor, Scheme};
