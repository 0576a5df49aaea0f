//! Axes: nice 1-2-5 tick steps, and linear or log10 scales that map data values to fractions of the plot.

use crate::error::PlotError;
use crate::fmt::exact;

/// The narrowest data span an axis accepts; below it tick arithmetic would run into subnormal numbers.
const MIN_SPAN: f64 = 1e-290;

/// The most decades a log axis labels one by one; wider axes label every second, third, ... decade.
const MAX_LOG_TICKS: i32 = 10;

/// How an axis maps values to positions.
enum Scale {
    /// Positions proportional to the value.
    Linear,
    /// Positions proportional to the value's log10.
    Log10,
}

/// One axis: its scale, domain, and ticks.
pub(crate) struct Axis {
    scale: Scale,
    /// The lower end of the domain: a value, or for a log axis its log10.
    lo: f64,
    /// The upper end of the domain, in the same units as `lo`.
    hi: f64,
    /// Each tick's position as a fraction of the axis (0 at `lo`, 1 at `hi`) and its label.
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A linear axis over `[lo, hi]` extended outward to whole tick steps, with about `target` ticks.
    /// A flat range is widened first (see [`widen`]).
    pub(crate) fn linear_nice(lo: f64, hi: f64, target: usize) -> Result<Self, PlotError> {
        let (lo, hi) = widen(lo, hi)?;
        let step = Step::nice(hi - lo, target);
        let (k0, k1) = (snap(lo / step.value()).floor() as i64, snap(hi / step.value()).ceil() as i64);
        let (nice_lo, nice_hi) = (step.at(k0), step.at(k1));
        if !(nice_hi - nice_lo).is_finite() {
            return Err(PlotError::RangeOverflow { lo, hi });
        }
        Ok(Self::linear(nice_lo, nice_hi, &step, k0, k1))
    }

    /// A linear axis over exactly `[lo, hi]` (a flat range widened, see [`widen`]), ticked at the whole steps
    /// inside it, about `target` of them.
    pub(crate) fn linear_exact(lo: f64, hi: f64, target: usize) -> Result<Self, PlotError> {
        let (lo, hi) = widen(lo, hi)?;
        let step = Step::nice(hi - lo, target);
        let (k0, k1) = (snap(lo / step.value()).ceil() as i64, snap(hi / step.value()).floor() as i64);
        Ok(Self::linear(lo, hi, &step, k0, k1))
    }

    /// A log10 axis from the greatest power of ten strictly below `min` to the least power of ten at or above
    /// `max`, ticked at powers of ten. Needs `0 < min <= max`, both finite.
    pub(crate) fn log10(min: f64, max: f64) -> Self {
        let lo = min.log10().ceil() as i32 - 1;
        let hi = (max.log10().ceil() as i32).max(lo + 1);
        let every = (hi - lo + MAX_LOG_TICKS - 1) / MAX_LOG_TICKS;
        let span = f64::from(hi - lo);
        let ticks = (lo..=hi)
            .filter(|e| e.rem_euclid(every) == 0)
            .map(|e| {
                let label = if (-4..6).contains(&e) { exact(Step { m: 1, e }.at(1)) } else { format!("1e{e}") };
                (f64::from(e - lo) / span, label)
            })
            .collect();
        Axis { scale: Scale::Log10, lo: f64::from(lo), hi: f64::from(hi), ticks }
    }

    /// Where `v` falls along the axis: 0 at the lower end, 1 at the upper end.
    pub(crate) fn frac(&self, v: f64) -> f64 {
        let v = match self.scale {
            Scale::Linear => v,
            Scale::Log10 => v.log10(),
        };
        (v - self.lo) / (self.hi - self.lo)
    }

    /// The ticks: each one's position (as [`Axis::frac`] gives it) and label.
    pub(crate) fn ticks(&self) -> &[(f64, String)] {
        &self.ticks
    }

    fn linear(lo: f64, hi: f64, step: &Step, k0: i64, k1: i64) -> Self {
        let ticks = (k0..=k1).map(|k| step.at(k)).map(|v| ((v - lo) / (hi - lo), exact(v))).collect();
        Axis { scale: Scale::Linear, lo, hi, ticks }
    }
}

/// Widens a flat range (all values equal) by ±1% of the value, or by ±0.5 when the value is 0; other ranges
/// pass unchanged. Errors when the span overflows `f64` or is narrower than [`MIN_SPAN`].
pub(crate) fn widen(lo: f64, hi: f64) -> Result<(f64, f64), PlotError> {
    let (wlo, whi) = match hi - lo {
        0.0 if lo == 0.0 => (-0.5, 0.5),
        0.0 => (lo - lo.abs() / 100.0, hi + hi.abs() / 100.0),
        _ => (lo, hi),
    };
    let span = whi - wlo;
    if span.is_finite() && span >= MIN_SPAN {
        Ok((wlo, whi))
    } else {
        Err(PlotError::RangeOverflow { lo, hi })
    }
}

/// Rounds a ratio that is within rounding error of an integer to it, so that a range ending on a tick does not
/// gain an extra step.
fn snap(r: f64) -> f64 {
    if (r - r.round()).abs() < 1e-6 {
        r.round()
    } else {
        r
    }
}

/// A tick step `m * 10^e` with `m` one of 1, 2 or 5.
struct Step {
    m: i64,
    e: i32,
}

impl Step {
    /// The smallest 1-2-5 step that cuts `span` into at most `target` parts.
    fn nice(span: f64, target: usize) -> Self {
        let raw = span / target as f64;
        let e = raw.log10().floor() as i32;
        let f = raw / Step { m: 1, e }.at(1);
        match f {
            f if f <= 1.0 => Step { m: 1, e },
            f if f <= 2.0 => Step { m: 2, e },
            f if f <= 5.0 => Step { m: 5, e },
            _ => Step { m: 1, e: e + 1 },
        }
    }

    /// The step's size.
    fn value(&self) -> f64 {
        self.at(1)
    }

    /// `k` steps, computed with a single rounding (so that `0.1 * 3` reads `0.3`, not `0.30000000000000004`).
    fn at(&self, k: i64) -> f64 {
        let n = k.saturating_mul(self.m) as f64;
        if self.e >= 0 {
            n * 10f64.powi(self.e)
        } else {
            n / 10f64.powi(-self.e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(axis: &Axis) -> Vec<&str> {
        axis.ticks().iter().map(|(_, l)| l.as_str()).collect()
    }

    #[test]
    fn nice_axis_extends_to_whole_1_2_5_steps() {
        let a = Axis::linear_nice(0.0, 0.93, 6).unwrap();
        assert_eq!(labels(&a), ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(a.frac(0.0), 0.0);
        assert_eq!(a.frac(1.0), 1.0);
        let a = Axis::linear_nice(-3.2, 17.0, 6).unwrap();
        assert_eq!(labels(&a), ["-5", "0", "5", "10", "15", "20"]);
        assert_eq!(a.ticks()[1].0, 0.2);
        let a = Axis::linear_nice(0.0, 0.6, 6).unwrap();
        assert_eq!(labels(&a), ["0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6"]);
        let a = Axis::linear_nice(0.0, 2.4e-5, 6).unwrap();
        assert_eq!(labels(&a), ["0", "5e-6", "1e-5", "1.5e-5", "2e-5", "2.5e-5"]);
    }

    #[test]
    fn exact_axis_keeps_the_range_and_ticks_inside_it() {
        let a = Axis::linear_exact(0.13, 0.87, 8).unwrap();
        assert_eq!(labels(&a), ["0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8"]);
        assert!((a.frac(0.13)).abs() < 1e-12 && (a.frac(0.87) - 1.0).abs() < 1e-12);
        assert!(a.ticks().iter().all(|(f, _)| (0.0..=1.0).contains(f)));
    }

    #[test]
    fn flat_ranges_widen_and_extreme_ones_fail() {
        let a = Axis::linear_exact(3.0, 3.0, 6).unwrap();
        assert!((a.frac(2.97)).abs() < 1e-9 && (a.frac(3.03) - 1.0).abs() < 1e-9);
        let a = Axis::linear_exact(0.0, 0.0, 6).unwrap();
        assert_eq!((a.frac(-0.5), a.frac(0.5)), (0.0, 1.0));
        assert!(matches!(Axis::linear_nice(-f64::MAX, f64::MAX, 6), Err(PlotError::RangeOverflow { .. })));
        assert!(matches!(Axis::linear_nice(0.0, 1e-300, 6), Err(PlotError::RangeOverflow { .. })));
    }

    #[test]
    fn log_axis_ticks_decades() {
        let a = Axis::log10(0.003, 250.0);
        assert_eq!(labels(&a), ["0.001", "0.01", "0.1", "1", "10", "100", "1000"]);
        assert!((a.frac(1.0) - 0.5).abs() < 1e-12);
        // A value that is a power of ten gets a decade below it, so its bar is not empty.
        let a = Axis::log10(1.0, 1.0);
        assert_eq!(labels(&a), ["0.1", "1"]);
        let a = Axis::log10(2e-12, 1e18);
        assert_eq!(labels(&a), ["1e-12", "1e-9", "1e-6", "0.001", "1", "1000", "1e6", "1e9", "1e12", "1e15", "1e18"]);
    }
}
