//! Named data series and the checks every chart runs on its values.

use crate::error::PlotError;

/// A named run of values: one bar per category in a [`BarChart`](crate::BarChart).
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend label, e.g. `"int4-g32"`.
    pub name: String,
    /// The values, in category or x order.
    pub values: Vec<f64>,
}

impl Series {
    /// A series named `name` holding `values`.
    pub fn new(name: impl Into<String>, values: Vec<f64>) -> Self {
        Series { name: name.into(), values }
    }
}

/// Fails on the first NaN or infinite value of `values`, naming `name` and the index.
pub(crate) fn check_finite(name: &str, values: &[f64]) -> Result<(), PlotError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(PlotError::NonFinite { series: name.to_string(), index, value: values[index] }),
        None => Ok(()),
    }
}

/// Fails on the first value of `values` that is zero or negative, which a log axis cannot place.
pub(crate) fn check_positive(name: &str, values: &[f64]) -> Result<(), PlotError> {
    match values.iter().position(|&v| v <= 0.0) {
        Some(index) => Err(PlotError::NonPositiveOnLog { series: name.to_string(), index, value: values[index] }),
        None => Ok(()),
    }
}

/// The smallest and largest of finite `values`, or `None` when there are none.
pub(crate) fn min_max(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}
