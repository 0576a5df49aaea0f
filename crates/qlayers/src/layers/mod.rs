//! Drop-in quantized layers: [`QLinear`] for `candle_nn::Linear`, [`QConv2d`] for `candle_nn::Conv2d`, on the CPU
//! kernels or candle's ([`LayerPath`]); SmoothQuant
//! factors for W8A8 layers.

mod conv2d;
mod device;
mod int_weights;
mod linear;
mod scheme;
mod smoothing;

pub use conv2d::QConv2d;
pub use device::LayerPath;
pub use linear::QLinear;
pub use scheme::LayerScheme;
pub use smoothing::{smoothed_weight, smoothing_factors, InputRange};
