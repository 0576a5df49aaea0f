//! Histograms of samples, with optional vertical overlay lines (e.g. the levels of a quantization grid).

use crate::axis::{widen, Axis};
use crate::data::{check_finite, min_max};
use crate::error::PlotError;
use crate::fmt::brief;
use crate::frame::{self, LegendEntry, Mark, Spec, Titles, XAxis};
use crate::palette;

/// Most bins a histogram may be asked for.
const MAX_BINS: usize = 1000;
/// Most bins the automatic rule picks.
const MAX_AUTO_BINS: usize = 200;
/// About how many ticks each axis gets.
const X_TICKS: usize = 8;
const Y_TICKS: usize = 6;

/// Vertical lines drawn over a histogram at the given x positions, in one colour with one legend entry: e.g. the
/// 16 levels of an int4 grid or of the NF4 codebook, scaled to one weight group.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The legend label.
    pub name: String,
    /// Where to draw a line, in data units.
    pub xs: Vec<f64>,
}

impl Overlay {
    /// Lines named `name` at each of `xs`.
    pub fn new(name: impl Into<String>, xs: Vec<f64>) -> Self {
        Overlay { name: name.into(), xs }
    }
}

/// A histogram of samples, e.g. a weight row or the error `x - x_hat` of a quantization scheme.
///
/// The bins split the samples' range `[min, max]` into equal widths (the last bin includes `max`). Their number
/// is [`Histogram::bins`] when given, otherwise the Freedman–Diaconis rule: width `2 * IQR / n^(1/3)`, giving
/// `ceil((max - min) / width)` bins, at most 200; when the interquartile range is 0 it falls back to
/// `ceil(sqrt(n))` bins (also at most 200). When all samples are equal the range is widened by ±1% of their
/// value (±0.5 when it is 0). Each bin is a `<rect class="bin">` whose `<title>` child (a hover tooltip) reads
/// `count in [lo, hi)`; empty bins are drawn with height 0.
///
/// Each [`Overlay`] takes the next palette colour and draws one `<line class="overlay">` per x inside the range
/// (give or take a billionth of its width, for rounding); x values outside it are left out, and its legend entry
/// says how many.
#[derive(Debug, Clone)]
pub struct Histogram {
    samples: Vec<f64>,
    bins: Option<usize>,
    overlays: Vec<Overlay>,
    titles: Titles,
    log_y: bool,
}

impl Histogram {
    /// A histogram of `samples` (`f32`, `f64`, or any type that converts to `f64` losslessly).
    pub fn new<T: Copy + Into<f64>>(samples: &[T]) -> Self {
        Histogram {
            samples: samples.iter().map(|&s| s.into()).collect(),
            bins: None,
            overlays: Vec::new(),
            titles: Titles::default(),
            log_y: false,
        }
    }

    /// Uses exactly `count` bins (1 to 1000) instead of the Freedman–Diaconis rule.
    pub fn bins(mut self, count: usize) -> Self {
        self.bins = Some(count);
        self
    }

    /// Adds an overlay of vertical lines.
    pub fn overlay(mut self, overlay: Overlay) -> Self {
        self.overlays.push(overlay);
        self
    }

    chart_setters!("Chooses a log10 count axis (`true`), which shows thin tails next to a tall peak, or a linear one (`false`, the default). On a log axis empty bins have height 0 and the axis starts a decade below 1.");

    /// Draws the histogram as a standalone SVG document.
    ///
    /// Fails when there are no samples, on a NaN or infinite sample or overlay x, and on a bin count outside
    /// 1 to 1000.
    pub fn render(&self) -> Result<String, PlotError> {
        check_finite("samples", &self.samples)?;
        for o in &self.overlays {
            check_finite(&o.name, &o.xs)?;
        }
        let (min, max) = min_max(self.samples.iter().copied()).ok_or(PlotError::Empty { what: "samples" })?;
        let (lo, hi) = widen(min, max)?;
        let bins = match self.bins {
            Some(requested) if requested == 0 || requested > MAX_BINS => {
                return Err(PlotError::BinCount { requested, max: MAX_BINS })
            }
            Some(count) => count,
            None => auto_bins(&self.samples, lo, hi),
        };
        let mut counts = vec![0usize; bins];
        for &s in &self.samples {
            let i = ((s - lo) / (hi - lo) * bins as f64).floor() as usize;
            counts[i.min(bins - 1)] += 1;
        }
        let top = counts.iter().copied().max().unwrap_or(0) as f64;
        let x = Axis::linear_exact(lo, hi, X_TICKS)?;
        let y = if self.log_y { Axis::log10(1.0, top) } else { Axis::linear_nice(0.0, top, Y_TICKS)? };
        // Overlay x values within rounding error of the range (say, a grid level at the largest |sample|
        // computed as `7 * (absmax / 7)`) count as inside.
        let slack = (hi - lo) * 1e-9;
        let inside = |v: &f64| (lo - slack..=hi + slack).contains(v);
        let legend = self
            .overlays
            .iter()
            .enumerate()
            .map(|(j, o)| {
                let outside = o.xs.iter().filter(|v| !inside(v)).count();
                let label =
                    if outside == 0 { o.name.clone() } else { format!("{} ({outside} outside the range)", o.name) };
                LegendEntry { label, colour: palette::colour(j), mark: Mark::Line }
            })
            .collect();
        let spec = Spec { titles: &self.titles, x: XAxis::Numeric(&x), y: &y, legend };
        Ok(frame::draw(&spec, |frame, svg| {
            let edge = |i: usize| lo + (hi - lo) * i as f64 / bins as f64;
            for (i, &count) in counts.iter().enumerate() {
                let (left, right) = (frame.x(i as f64 / bins as f64), frame.x((i + 1) as f64 / bins as f64));
                let height = if count == 0 { 0.0 } else { frame.bottom() - frame.y(y.frac(count as f64)) };
                svg.open(
                    "rect",
                    &[
                        ("class", &"bin"),
                        ("x", &left),
                        ("y", &(frame.bottom() - height)),
                        ("width", &(right - left)),
                        ("height", &height),
                        ("fill", &palette::NEUTRAL),
                        ("stroke", &"white"),
                        ("stroke-width", &0.5),
                    ],
                );
                let close = if i + 1 == bins { ']' } else { ')' };
                svg.text("title", &[], &format!("{count} in [{}, {}{close}", brief(edge(i)), brief(edge(i + 1))));
                svg.close("rect");
            }
            for (j, o) in self.overlays.iter().enumerate() {
                for v in o.xs.iter().filter(|v| inside(v)) {
                    let px = frame.x(x.frac(*v));
                    svg.open(
                        "line",
                        &[
                            ("class", &"overlay"),
                            ("x1", &px),
                            ("y1", &frame.top()),
                            ("x2", &px),
                            ("y2", &frame.bottom()),
                            ("stroke", &palette::colour(j)),
                            ("stroke-width", &1.5),
                        ],
                    );
                    svg.text("title", &[], &format!("{}: {}", o.name, brief(*v)));
                    svg.close("line");
                }
            }
        }))
    }
}

/// The Freedman–Diaconis bin count for `samples` over `[lo, hi]`, or the square-root rule when the
/// interquartile range is 0; between 1 and [`MAX_AUTO_BINS`].
fn auto_bins(samples: &[f64], lo: f64, hi: f64) -> usize {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let iqr = quantile(&sorted, 0.75) - quantile(&sorted, 0.25);
    let count = if iqr > 0.0 { ((hi - lo) / (2.0 * iqr / n.cbrt())).ceil() } else { n.sqrt().ceil() };
    (count as usize).clamp(1, MAX_AUTO_BINS)
}

/// The `p`-quantile of non-empty `sorted` samples, interpolating linearly between neighbours.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + (next - sorted[i]) * frac,
        None => sorted[i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freedman_diaconis_and_fallbacks() {
        // IQR of 0..=99 is 49.5; width 2 * 49.5 / 100^(1/3) = 21.33; range 99 -> 5 bins.
        let samples: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(auto_bins(&samples, 0.0, 99.0), 5);
        // Mostly equal values: IQR 0, so sqrt(n) bins.
        let mut samples = vec![1.0; 99];
        samples.push(5.0);
        assert_eq!(auto_bins(&samples, 1.0, 5.0), 10);
        // A huge outlier would ask for tens of thousands of bins: capped.
        let mut samples: Vec<f64> = (0..1000).map(|i| f64::from(i) / 1000.0).collect();
        samples.push(1e6);
        assert_eq!(auto_bins(&samples, 0.0, 1e6), MAX_AUTO_BINS);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
    }
}
