//! Line charts: several series over one shared numeric x axis.

use crate::axis::Axis;
use crate::data::{check_finite, check_positive, min_max, Series};
use crate::error::PlotError;
use crate::fmt::{brief, coord};
use crate::frame::{self, LegendEntry, Mark, Spec, Titles, XAxis};
use crate::palette;

/// About how many ticks each axis gets.
const X_TICKS: usize = 8;
const Y_TICKS: usize = 6;

/// A line chart, e.g. an error against bits per weight for several schemes.
///
/// Every [`Series`] holds one value per x value and is drawn as a `<polyline class="line">` joining its points
/// in the order given, plus a `<circle class="point">` per point whose `<title>` child (a hover tooltip) reads
/// `series: (x, y)`. The x axis spans exactly the x values; the y axis spans the values, extended to whole tick
/// steps. A flat range is widened by ±1% of its value (±0.5 when it is 0).
#[derive(Debug, Clone)]
pub struct LineChart {
    xs: Vec<f64>,
    series: Vec<Series>,
    titles: Titles,
    log_y: bool,
}

impl LineChart {
    /// A chart over these x values, with no series yet.
    pub fn new(xs: Vec<f64>) -> Self {
        LineChart { xs, series: Vec::new(), titles: Titles::default(), log_y: false }
    }

    /// Adds a series: one value per x value, in the same order.
    pub fn series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Sets the title drawn above the chart.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.titles.title = title.into();
        self
    }

    /// Sets the x axis title.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.titles.x = label.into();
        self
    }

    /// Sets the y axis title.
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.titles.y = label.into();
        self
    }

    /// Chooses a log10 y axis (`true`; values must then be positive) or a linear one (`false`, the default).
    pub fn log_y(mut self, log: bool) -> Self {
        self.log_y = log;
        self
    }

    /// Draws the chart as a standalone SVG document.
    ///
    /// Fails when there are no x values or no series, when a series' length differs from the number of x values,
    /// on a NaN or infinite x or value, and on a log axis on a value that is not positive.
    pub fn render(&self) -> Result<String, PlotError> {
        check_finite("x values", &self.xs)?;
        let (x_min, x_max) = min_max(self.xs.iter().copied()).ok_or(PlotError::Empty { what: "x values" })?;
        if self.series.is_empty() {
            return Err(PlotError::Empty { what: "series" });
        }
        for s in &self.series {
            if s.values.len() != self.xs.len() {
                return Err(PlotError::LengthMismatch {
                    series: s.name.clone(),
                    expected: self.xs.len(),
                    found: s.values.len(),
                });
            }
            check_finite(&s.name, &s.values)?;
            if self.log_y {
                check_positive(&s.name, &s.values)?;
            }
        }
        let (min, max) = min_max(self.series.iter().flat_map(|s| s.values.iter().copied()))
            .ok_or(PlotError::Empty { what: "series" })?;
        let x = Axis::linear_exact(x_min, x_max, X_TICKS)?;
        let y = if self.log_y { Axis::log10(min, max) } else { Axis::linear_nice(min, max, Y_TICKS)? };
        let legend = self
            .series
            .iter()
            .enumerate()
            .map(|(j, s)| LegendEntry { label: s.name.clone(), colour: palette::colour(j), mark: Mark::Line })
            .collect();
        let spec = Spec { titles: &self.titles, x: XAxis::Numeric(&x), y: &y, legend };
        Ok(frame::draw(&spec, |frame, svg| {
            for (j, s) in self.series.iter().enumerate() {
                let colour = palette::colour(j);
                let pixels: Vec<(f64, f64)> = self
                    .xs
                    .iter()
                    .zip(&s.values)
                    .map(|(&xv, &yv)| (frame.x(x.frac(xv)), frame.y(y.frac(yv))))
                    .collect();
                let points = pixels.iter().map(|&(px, py)| format!("{},{}", coord(px), coord(py))).collect::<Vec<_>>();
                svg.leaf(
                    "polyline",
                    &[
                        ("class", &"line"),
                        ("points", &points.join(" ")),
                        ("fill", &"none"),
                        ("stroke", &colour),
                        ("stroke-width", &2.0),
                    ],
                );
                for ((px, py), (xv, yv)) in pixels.into_iter().zip(self.xs.iter().zip(&s.values)) {
                    svg.open(
                        "circle",
                        &[("class", &"point"), ("cx", &px), ("cy", &py), ("r", &3.0), ("fill", &colour)],
                    );
                    svg.text("title", &[], &format!("{}: ({}, {})", s.name, brief(*xv), brief(*yv)));
                    svg.close("circle");
                }
            }
        }))
    }
}
