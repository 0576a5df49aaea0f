//! The one error type of `qlayers`: every bad input gets a variant that names the problem.

/// What went wrong while quantizing, packing or running a quantized layer.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The tensor to quantize has no elements.
    #[error("cannot quantize an empty tensor (shape {shape:?})")]
    EmptyTensor {
        /// Shape of the offending tensor.
        shape: Vec<usize>,
    },
    /// A NaN or infinite value was found where finite values are required.
    #[error("{what} contains a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Which input holds the value (for example "input tensor").
        what: &'static str,
        /// Flat (row-major) index of the first offending value.
        index: usize,
        /// The value itself.
        value: f32,
    },
    /// A bit width other than 2, 4 or 8 was asked for.
    #[error("unsupported bit width {0}: expected 2, 4 or 8")]
    UnsupportedBits(u32),
    /// A group size that is zero or does not divide the grouped dimension.
    #[error("group size {group_size} does not divide the last dimension ({dim}) of shape {shape:?}")]
    BadGroupSize {
        /// Requested group size.
        group_size: usize,
        /// Size of the grouped (last) dimension.
        dim: usize,
        /// Shape of the tensor.
        shape: Vec<usize>,
    },
    /// A per-channel axis outside the tensor's rank.
    #[error("channel dimension {dim} is out of range for a tensor of rank {rank}")]
    BadChannelDim {
        /// Requested axis.
        dim: usize,
        /// Rank of the tensor.
        rank: usize,
    },
    /// A scale that breaks `rule`: one to quantize with must be finite and strictly positive; a stored one (the
    /// scale of codes already made) must be finite.
    #[error("scale #{index} is {value}: {rule}")]
    BadScale {
        /// Position of the scale in the parameter list.
        index: usize,
        /// The offending value.
        value: f32,
        /// What the scales must be.
        rule: &'static str,
    },
    /// An explicit zero point outside the code range.
    #[error("zero point #{index} is {value}, outside the code range [{min}, {max}]")]
    BadZeroPoint {
        /// Position of the zero point in the parameter list.
        index: usize,
        /// The offending value.
        value: i32,
        /// Smallest code.
        min: i32,
        /// Largest code.
        max: i32,
    },
    /// The number of scales or zero points does not match the granularity.
    #[error("expected {expected} {what} for this granularity and shape, got {got}")]
    ParamCount {
        /// "scales" or "zero points".
        what: &'static str,
        /// How many the shape and granularity call for.
        expected: usize,
        /// How many were given.
        got: usize,
    },
    /// A code that does not fit in the bit width.
    #[error("code {value} at index {index} does not fit in {bits} bits")]
    CodeOutOfRange {
        /// Position of the code.
        index: usize,
        /// The code.
        value: u8,
        /// The bit width.
        bits: u32,
    },
    /// A packed buffer too short for the number of values asked for.
    #[error("packed buffer of {got} bytes is too short for {len} values of {bits} bits ({expected} bytes)")]
    PackedTooShort {
        /// Number of values to unpack.
        len: usize,
        /// The bit width.
        bits: u32,
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// Two tensors that must have the same shape do not.
    #[error("shape mismatch: {what}: {left:?} vs {right:?}")]
    ShapeMismatch {
        /// What was being compared.
        what: &'static str,
        /// First shape.
        left: Vec<usize>,
        /// Second shape.
        right: Vec<usize>,
    },
    /// A scheme that is not meaningful (for example symmetric with unsigned codes).
    #[error("invalid scheme: {0}")]
    InvalidScheme(String),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result type of `qlayers`.
pub type Result<T> = std::result::Result<T, QuantError>;

impl From<QuantError> for candle_core::Error {
    fn from(err: QuantError) -> Self {
        match err {
            QuantError::Candle(inner) => inner,
            other => candle_core::Error::wrap(other),
        }
    }
}
