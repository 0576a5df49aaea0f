//! How a granularity groups the elements of a row-major tensor.
//!
//! Every granularity is the same picture: the flat tensor viewed as `[outer, channels, inner]`, where all elements
//! with the same `channels` index share one parameter. Per tensor is `[1, 1, n]`, per channel along `d` is
//! `[prod(dims < d), dim_d, prod(dims > d)]`, per group of `g` is `[1, n / g, g]`.

use super::scheme::Granularity;
use crate::error::{QuantError, Result};

/// The `[outer, channels, inner]` view of a tensor under a granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLayout {
    /// Number of repetitions of the channel pattern.
    pub outer: usize,
    /// Number of parameters (scales).
    pub channels: usize,
    /// Contiguous elements that share one parameter inside each repetition.
    pub inner: usize,
}

impl ParamLayout {
    /// The view of a tensor of `shape` under `granularity`; errors on an empty tensor, a bad axis or a group size
    /// that does not divide the last dimension.
    pub fn new(shape: &[usize], granularity: Granularity) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel == 0 {
            return Err(QuantError::EmptyTensor { shape: shape.to_vec() });
        }
        match granularity {
            Granularity::PerTensor => Ok(Self { outer: 1, channels: 1, inner: numel }),
            Granularity::PerChannel { dim } => {
                if dim >= shape.len() {
                    return Err(QuantError::BadChannelDim { dim, rank: shape.len() });
                }
                Ok(Self {
                    outer: shape[..dim].iter().product(),
                    channels: shape[dim],
                    inner: shape[dim + 1..].iter().product(),
                })
            }
            Granularity::PerGroup { size } => {
                let last = shape.last().copied().unwrap_or(1);
                if size == 0 || last % size != 0 {
                    return Err(QuantError::BadGroupSize { group_size: size, dim: last, shape: shape.to_vec() });
                }
                Ok(Self { outer: 1, channels: numel / size, inner: size })
            }
        }
    }

    /// Calls `f(channel, run)` for every contiguous run of elements that share the parameter `channel`.
    pub fn for_each_run<T>(&self, data: &[T], mut f: impl FnMut(usize, &[T])) {
        let runs = data.chunks_exact(self.inner);
        for (i, run) in runs.enumerate() {
            f(i % self.channels, run);
        }
    }

    /// Mutable counterpart of [`ParamLayout::for_each_run`].
    pub fn for_each_run_mut<T>(&self, data: &mut [T], mut f: impl FnMut(usize, &mut [T])) {
        let runs = data.chunks_exact_mut(self.inner);
        for (i, run) in runs.enumerate() {
            f(i % self.channels, run);
        }
    }
}
