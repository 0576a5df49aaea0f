//! Dependency-free SVG charts, written as strings: grouped bar charts and histograms with overlay lines, for
//! quantization analyses such as per-layer sensitivity or a weight histogram under a quantization grid.
//!
//! Every chart is built with chained setters and drawn by `render`, which returns a standalone SVG 1.1 document
//! (white background, `sans-serif` text, no scripts or external resources, so GitHub shows it as an image) or a
//! [`PlotError`] for input it cannot draw: it never panics. The same input always gives the same bytes;
//! coordinates carry at most 2 decimals. All text is XML-escaped.
//!
//! Marks carry classes that tools (and the tests) can select: `bar` for [`BarChart`] bars, `bin` for
//! [`Histogram`] bins, `overlay` for overlay lines. Each bar, bin and overlay line has a `<title>` child holding its
//! value, shown as a tooltip on hover.
//!
//! ```
//! use svgplot::{BarChart, Histogram, Overlay, Series};
//!
//! let layers = ["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.key"];
//! let svg = BarChart::new(layers)
//!     .series(Series::new("int8", vec![2.1e-5, 3.4e-5]))
//!     .series(Series::new("int4-g32", vec![1.2e-3, 9.0e-4]))
//!     .title("Per-layer sensitivity")
//!     .y_label("1 - cos")
//!     .log_y(true)
//!     .render()?;
//! assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
//! assert_eq!(svg.matches("class=\"bar\"").count(), 4);
//!
//! let weights = [-0.31f32, -0.12, -0.05, 0.0, 0.02, 0.07, 0.11, 0.31];
//! let grid: Vec<f64> = (-8..8).map(|q| f64::from(q) * 0.31 / 7.0).collect();
//! let svg = Histogram::new(&weights).bins(8).overlay(Overlay::new("int4 levels", grid)).render()?;
//! assert_eq!(svg.matches("class=\"bin\"").count(), 8);
//! // Level -8 (-0.354) lies below the smallest weight, so 15 of the 16 levels are drawn.
//! assert_eq!(svg.matches("class=\"overlay\"").count(), 15);
//! # Ok::<(), svgplot::PlotError>(())
//! ```
#![deny(missing_docs)]

/// The setters every chart shares, for a chart struct with `titles: frame::Titles` and `log_y: bool`; `$log_doc`
/// documents what a log axis means for it.
macro_rules! chart_setters {
    ($log_doc:literal) => {
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

        #[doc = $log_doc]
        pub fn log_y(mut self, log: bool) -> Self {
            self.log_y = log;
            self
        }
    };
}

mod axis;
mod bar;
mod data;
mod error;
mod fmt;
mod frame;
mod histogram;
mod palette;
mod svg;

pub use bar::BarChart;
pub use data::Series;
pub use error::PlotError;
pub use histogram::{Histogram, Overlay};
