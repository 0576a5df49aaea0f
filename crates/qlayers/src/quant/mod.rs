//! Quantized tensors: schemes, parameters, NF4, codebooks, error metrics, and their ggml block forms.

pub mod codebook;
pub mod ggml;
mod layout;
pub mod metrics;
pub mod nf4;
mod params;
mod scheme;
mod tensor;

pub use codebook::Codebook;
pub use layout::ParamLayout;
pub(crate) use params::{check_stored_scales, fits_f16};
pub use params::{compute_params, QParams, MIN_SCALE};
pub use scheme::{Bits, CodeRange, Granularity, LinearScheme, Scheme};
pub use tensor::QTensor;
