//! Drop-in quantized layers: [`QLinear`] for `candle_nn::Linear`, [`QConv2d`] for `candle_nn::Conv2d`.

mod conv2d;
mod int_weights;
mod linear;
mod scheme;

pub use conv2d::QConv2d;
pub use linear::QLinear;
pub use scheme::LayerScheme;
