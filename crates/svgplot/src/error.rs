//! The error every chart's `render` returns for input it cannot draw.

use std::fmt;

/// Why a chart could not be drawn. Rendering never panics: bad input ends here.
#[derive(Debug, Clone)]
pub enum PlotError {
    /// An input that needs at least one element is empty; `what` names it
    /// (`"categories"`, `"series"` or `"samples"`).
    Empty {
        /// The empty input.
        what: &'static str,
    },
    /// A value is NaN or infinite.
    NonFinite {
        /// The series, overlay, or `"samples"`, holding the value.
        series: String,
        /// The value's index within it.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A series holds a different number of values than there are categories.
    LengthMismatch {
        /// The series.
        series: String,
        /// The number of categories.
        expected: usize,
        /// The number of values the series holds.
        found: usize,
    },
    /// A value is zero or negative on a logarithmic axis. Such values are never clipped: clamp or drop them
    /// before plotting (e.g. `v.max(1e-12)`), or use a linear axis.
    NonPositiveOnLog {
        /// The series, or `"samples"`, holding the value.
        series: String,
        /// The value's index within it.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A histogram bin count outside `1..=max`.
    BinCount {
        /// The count asked for.
        requested: usize,
        /// The largest count allowed.
        max: usize,
    },
    /// The data range is too wide for `f64`: its span (or the span of the nice axis around it) overflows.
    RangeOverflow {
        /// The smallest value.
        lo: f64,
        /// The largest value.
        hi: f64,
    },
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty { what } => write!(f, "nothing to plot: no {what}"),
            Self::NonFinite { series, index, value } => {
                write!(f, "`{series}`: value {value} at index {index} is not finite")
            }
            Self::LengthMismatch { series, expected, found } => {
                write!(f, "series `{series}` has {found} values, expected {expected} (one per category or x value)")
            }
            Self::NonPositiveOnLog { series, index, value } => write!(
                f,
                "`{series}`: value {value} at index {index} cannot be shown on a logarithmic axis \
                 (clamp or drop values <= 0, or use a linear axis)"
            ),
            Self::BinCount { requested, max } => write!(f, "bin count {requested} is outside 1..={max}"),
            Self::RangeOverflow { lo, hi } => write!(f, "data range [{lo}, {hi}] is too wide to plot"),
        }
    }
}

impl std::error::Error for PlotError {}
