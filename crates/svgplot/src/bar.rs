//! Grouped vertical bar charts: one group per category, one bar per series in each group.

use crate::axis::Axis;
use crate::data::{check_finite, check_positive, min_max, Series};
use crate::error::PlotError;
use crate::fmt::brief;
use crate::frame::{self, LegendEntry, Mark, Spec, Titles, XAxis};
use crate::palette;

/// About how many ticks the y axis gets.
const Y_TICKS: usize = 6;
/// Least width of one bar; with many categories the chart widens rather than thinning bars below it.
const MIN_BAR_W: f64 = 6.0;
/// Greatest width of one bar, so that a chart with few categories does not draw slabs.
const MAX_BAR_W: f64 = 40.0;
/// Share of each category slot the bars fill at most; the rest separates neighbouring groups.
const GROUP_FILL: f64 = 0.8;
/// Least category slot, so that rotated labels of neighbouring slots do not overlap.
const MIN_SLOT: f64 = 16.0;

/// A grouped vertical bar chart, e.g. a per-layer error for several quantization schemes.
///
/// Categories run along x with one bar per [`Series`] each, coloured by series and named in a legend. Labels
/// too long to sit level under their group are rotated 60 degrees; the chart grows wider with the number of
/// categories (a group is at least 16 pixels wide, and bars are 6 to 40 pixels wide). Each bar is a `<rect class="bar">` whose
/// `<title>` child (a hover tooltip) reads `category / series: value`.
///
/// On a linear y axis bars grow from 0, so negative values hang below it, and the axis always shows 0. On a log
/// axis ([`BarChart::log_y`]) bars grow from the bottom of the axis, a power of ten strictly below the smallest
/// value; values that are zero or negative are an error ([`PlotError::NonPositiveOnLog`]), never clipped.
#[derive(Debug, Clone)]
pub struct BarChart {
    categories: Vec<String>,
    series: Vec<Series>,
    titles: Titles,
    log_y: bool,
}

impl BarChart {
    /// A chart with these categories (left to right) and no series yet.
    pub fn new<I, S>(categories: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let categories = categories.into_iter().map(Into::into).collect();
        BarChart { categories, series: Vec::new(), titles: Titles::default(), log_y: false }
    }

    /// Adds a series: one value per category, in category order.
    pub fn series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    chart_setters!("Chooses a log10 y axis (`true`) or a linear one (`false`, the default).");

    /// Draws the chart as a standalone SVG document.
    ///
    /// Fails when there are no categories or no series, when a series' length differs from the number of
    /// categories, on a NaN or infinite value, and on a log axis on a value that is not positive.
    pub fn render(&self) -> Result<String, PlotError> {
        let n = self.categories.len();
        if n == 0 {
            return Err(PlotError::Empty { what: "categories" });
        }
        if self.series.is_empty() {
            return Err(PlotError::Empty { what: "series" });
        }
        for s in &self.series {
            if s.values.len() != n {
                return Err(PlotError::LengthMismatch { series: s.name.clone(), expected: n, found: s.values.len() });
            }
            check_finite(&s.name, &s.values)?;
            if self.log_y {
                check_positive(&s.name, &s.values)?;
            }
        }
        let (min, max) = min_max(self.series.iter().flat_map(|s| s.values.iter().copied()))
            .ok_or(PlotError::Empty { what: "series" })?;
        let y =
            if self.log_y { Axis::log10(min, max) } else { Axis::linear_nice(min.min(0.0), max.max(0.0), Y_TICKS)? };
        let legend = self
            .series
            .iter()
            .enumerate()
            .map(|(j, s)| LegendEntry { label: s.name.clone(), colour: palette::colour(j), mark: Mark::Swatch })
            .collect();
        let ns = self.series.len() as f64;
        let min_slot = MIN_SLOT.max(ns * MIN_BAR_W / GROUP_FILL);
        let spec =
            Spec { titles: &self.titles, x: XAxis::Categories { labels: &self.categories, min_slot }, y: &y, legend };
        Ok(frame::draw(&spec, |frame, svg| {
            let bar_w = (frame.slot() * GROUP_FILL / ns).min(MAX_BAR_W);
            let base = if self.log_y { frame.y(0.0) } else { frame.y(y.frac(0.0)) };
            for (i, category) in self.categories.iter().enumerate() {
                let group_left = frame.slot_left(i) + (frame.slot() - ns * bar_w) / 2.0;
                for (j, s) in self.series.iter().enumerate() {
                    let value = s.values[i];
                    let top = frame.y(y.frac(value));
                    let x = group_left + j as f64 * bar_w;
                    svg.open(
                        "rect",
                        &[
                            ("class", &"bar"),
                            ("x", &x),
                            ("y", &top.min(base)),
                            ("width", &bar_w),
                            ("height", &(top - base).abs()),
                            ("fill", &palette::colour(j)),
                        ],
                    );
                    svg.text("title", &[], &format!("{category} / {}: {}", s.name, brief(value)));
                    svg.close("rect");
                }
            }
        }))
    }
}
