//! The frame every chart shares: canvas size and margins, title, axes with ticks and labels, axis titles and
//! legend. A chart describes them in a [`Spec`] and draws only its marks, inside [`draw`].

use crate::axis::Axis;
use crate::fmt::coord;
use crate::svg::{AttrValue, Svg};

/// Height of the plotting area in pixels.
const PLOT_H: f64 = 320.0;
/// Width of the plotting area of a chart with a numeric x axis.
const NUMERIC_W: f64 = 640.0;
/// Least width of the plotting area of a chart with categories; more categories make it wider.
const MIN_CATEGORY_W: f64 = 480.0;
/// Padding around the canvas edge.
const PAD: f64 = 12.0;
const TITLE_FONT: f64 = 16.0;
const AXIS_TITLE_FONT: f64 = 13.0;
const TICK_FONT: f64 = 12.0;
const CATEGORY_FONT: f64 = 11.0;
const LEGEND_FONT: f64 = 12.0;
/// Vertical distance between legend entries.
const LEGEND_ROW: f64 = 18.0;
/// Angle of category labels too long to sit level under their slot.
const CATEGORY_ANGLE: f64 = -60.0;
const TEXT_COLOUR: &str = "#333333";
const GRID_COLOUR: &str = "#e4e4e4";

/// The chart title and the two axis titles; an empty string leaves that title out.
#[derive(Debug, Clone, Default)]
pub(crate) struct Titles {
    /// Drawn centred above the plot.
    pub(crate) title: String,
    /// Drawn under the x axis.
    pub(crate) x: String,
    /// Drawn rotated left of the y axis.
    pub(crate) y: String,
}

/// What runs along the x axis.
pub(crate) enum XAxis<'a> {
    /// One slot per label, each at least `min_slot` pixels wide.
    Categories { labels: &'a [String], min_slot: f64 },
    /// A numeric axis.
    Numeric(&'a Axis),
}

/// How a legend entry shows its colour.
pub(crate) enum Mark {
    /// A filled square, for bars.
    Swatch,
    /// A short line, for lines.
    Line,
}

/// One legend row.
pub(crate) struct LegendEntry {
    /// The text.
    pub(crate) label: String,
    /// The colour of the series it names.
    pub(crate) colour: &'static str,
    /// How the colour is shown.
    pub(crate) mark: Mark,
}

/// Everything the frame draws.
pub(crate) struct Spec<'a> {
    /// Chart and axis titles.
    pub(crate) titles: &'a Titles,
    /// The x axis.
    pub(crate) x: XAxis<'a>,
    /// The y axis.
    pub(crate) y: &'a Axis,
    /// Legend rows, top to bottom; none draws no legend.
    pub(crate) legend: Vec<LegendEntry>,
}

/// The laid-out canvas: where the plotting area lies, for a chart to place its marks.
pub(crate) struct Frame {
    left: f64,
    top: f64,
    plot_w: f64,
    /// Width of one category slot (0 on a numeric x axis).
    slot: f64,
    /// Rotation of category labels in degrees; 0 when they sit level.
    label_angle: f64,
    width: f64,
    height: f64,
}

/// Lays out the frame of `spec`, draws it around the marks that `marks` writes, and returns the SVG document.
pub(crate) fn draw(spec: &Spec, marks: impl FnOnce(&Frame, &mut Svg)) -> String {
    let frame = Frame::layout(spec);
    let mut svg = Svg::new(frame.width, frame.height, &spec.titles.title);
    frame.title(&mut svg, &spec.titles.title);
    frame.y_axis(&mut svg, spec.y);
    frame.x_axis(&mut svg, &spec.x);
    marks(&frame, &mut svg);
    frame.axis_lines(&mut svg);
    frame.axis_titles(&mut svg, spec.titles);
    frame.legend(&mut svg, &spec.legend);
    svg.finish()
}

impl Frame {
    /// The x pixel at fraction `f` of the x axis.
    pub(crate) fn x(&self, f: f64) -> f64 {
        self.left + f * self.plot_w
    }

    /// The y pixel at fraction `f` of the y axis (0 at the bottom).
    pub(crate) fn y(&self, f: f64) -> f64 {
        self.bottom() - f * PLOT_H
    }

    /// The y pixel of the top of the plotting area.
    pub(crate) fn top(&self) -> f64 {
        self.top
    }

    /// The y pixel of the bottom of the plotting area.
    pub(crate) fn bottom(&self) -> f64 {
        self.top + PLOT_H
    }

    /// The width of one category slot.
    pub(crate) fn slot(&self) -> f64 {
        self.slot
    }

    /// The x pixel where category `i`'s slot starts.
    pub(crate) fn slot_left(&self, i: usize) -> f64 {
        self.left + i as f64 * self.slot
    }

    fn layout(spec: &Spec) -> Self {
        let top = PAD + if spec.titles.title.is_empty() { 0.0 } else { TITLE_FONT + 12.0 } + 6.0;
        let y_labels = spec.y.ticks().iter().map(|(_, l)| text_width(l, TICK_FONT)).fold(0.0, f64::max);
        let mut left = PAD + title_band(&spec.titles.y) + y_labels + 10.0;
        let mut right = PAD;
        let (plot_w, slot, label_angle, band) = match spec.x {
            XAxis::Numeric(axis) => {
                let last = axis.ticks().last().map_or(0.0, |(_, l)| text_width(l, TICK_FONT) / 2.0);
                right += last;
                (NUMERIC_W, 0.0, 0.0, TICK_FONT + 12.0)
            }
            XAxis::Categories { labels, min_slot } => {
                let slot = min_slot.max(MIN_CATEGORY_W / labels.len() as f64);
                let widest = labels.iter().map(|l| text_width(l, CATEGORY_FONT)).fold(0.0, f64::max);
                if widest <= slot - 4.0 {
                    (slot * labels.len() as f64, slot, 0.0, CATEGORY_FONT + 12.0)
                } else {
                    let (sin, cos) = CATEGORY_ANGLE.to_radians().sin_cos();
                    // A rotated label hangs left of its slot's centre: each one must stay on the canvas.
                    let overhang = labels
                        .iter()
                        .enumerate()
                        .map(|(i, l)| text_width(l, CATEGORY_FONT) * cos - (i as f64 + 0.5) * slot)
                        .fold(0.0, f64::max);
                    left = left.max(overhang + PAD);
                    (slot * labels.len() as f64, slot, CATEGORY_ANGLE, widest * sin.abs() + CATEGORY_FONT + 12.0)
                }
            }
        };
        let legend_w = spec.legend.iter().map(|e| text_width(&e.label, LEGEND_FONT)).fold(0.0, f64::max);
        if !spec.legend.is_empty() {
            right += 16.0 + 20.0 + legend_w;
        }
        let bottom = band + title_band(&spec.titles.x) + PAD;
        let legend_h = spec.legend.len() as f64 * LEGEND_ROW;
        let height = (top + PLOT_H + bottom).max(top + legend_h + PAD);
        let width = (left + plot_w + right).max(text_width(&spec.titles.title, TITLE_FONT) + 2.0 * PAD);
        Frame { left, top, plot_w, slot, label_angle, width, height }
    }

    fn title(&self, svg: &mut Svg, title: &str) {
        if title.is_empty() {
            return;
        }
        svg.text(
            "text",
            &[
                ("class", &"title"),
                ("x", &(self.width / 2.0)),
                ("y", &(PAD + TITLE_FONT)),
                ("text-anchor", &"middle"),
                ("font-size", &TITLE_FONT),
                ("font-weight", &"bold"),
                ("fill", &TEXT_COLOUR),
            ],
            title,
        );
    }

    fn y_axis(&self, svg: &mut Svg, axis: &Axis) {
        for (f, label) in axis.ticks() {
            let y = self.y(*f);
            let right = self.x(1.0);
            svg.leaf(
                "line",
                &[
                    ("class", &"grid"),
                    ("x1", &self.left),
                    ("y1", &y),
                    ("x2", &right),
                    ("y2", &y),
                    ("stroke", &GRID_COLOUR),
                ],
            );
            svg.text(
                "text",
                &[
                    ("class", &"tick"),
                    ("x", &(self.left - 6.0)),
                    ("y", &y),
                    ("dy", &"0.35em"),
                    ("text-anchor", &"end"),
                    ("font-size", &TICK_FONT),
                    ("fill", &TEXT_COLOUR),
                ],
                label,
            );
        }
    }

    fn x_axis(&self, svg: &mut Svg, axis: &XAxis) {
        let bottom = self.bottom();
        match axis {
            XAxis::Numeric(axis) => {
                for (f, label) in axis.ticks() {
                    let x = self.x(*f);
                    svg.leaf(
                        "line",
                        &[("x1", &x), ("y1", &bottom), ("x2", &x), ("y2", &(bottom + 5.0)), ("stroke", &TEXT_COLOUR)],
                    );
                    svg.text(
                        "text",
                        &[
                            ("class", &"tick"),
                            ("x", &x),
                            ("y", &(bottom + 7.0 + TICK_FONT)),
                            ("text-anchor", &"middle"),
                            ("font-size", &TICK_FONT),
                            ("fill", &TEXT_COLOUR),
                        ],
                        label,
                    );
                }
            }
            XAxis::Categories { labels, .. } => {
                for (i, label) in labels.iter().enumerate() {
                    let x = self.slot_left(i) + self.slot / 2.0;
                    let common: [(&str, &dyn AttrValue); 3] =
                        [("class", &"category"), ("font-size", &CATEGORY_FONT), ("fill", &TEXT_COLOUR)];
                    if self.label_angle == 0.0 {
                        let y = bottom + 6.0 + CATEGORY_FONT;
                        let place: [(&str, &dyn AttrValue); 3] = [("x", &x), ("y", &y), ("text-anchor", &"middle")];
                        svg.text("text", &[&common[..], &place[..]].concat(), label);
                    } else {
                        let y = bottom + 8.0;
                        let rotate = format!("rotate({} {} {})", coord(self.label_angle), coord(x), coord(y));
                        let place: [(&str, &dyn AttrValue); 5] =
                            [("x", &x), ("y", &y), ("dy", &"0.35em"), ("text-anchor", &"end"), ("transform", &rotate)];
                        svg.text("text", &[&common[..], &place[..]].concat(), label);
                    }
                }
            }
        }
    }

    fn axis_lines(&self, svg: &mut Svg) {
        let (l, r, t, b) = (self.left, self.x(1.0), self.top, self.bottom());
        let d = format!("M{} {}V{}H{}", coord(l), coord(t), coord(b), coord(r));
        svg.leaf("path", &[("class", &"axis"), ("d", &d), ("fill", &"none"), ("stroke", &TEXT_COLOUR)]);
    }

    fn axis_titles(&self, svg: &mut Svg, titles: &Titles) {
        if !titles.x.is_empty() {
            let x = self.x(0.5);
            let y = self.height - PAD;
            svg.text(
                "text",
                &[
                    ("class", &"axis-title"),
                    ("x", &x),
                    ("y", &y),
                    ("text-anchor", &"middle"),
                    ("font-size", &AXIS_TITLE_FONT),
                    ("fill", &TEXT_COLOUR),
                ],
                &titles.x,
            );
        }
        if !titles.y.is_empty() {
            let x = PAD + AXIS_TITLE_FONT;
            let y = self.top + PLOT_H / 2.0;
            let rotate = format!("rotate(-90 {} {})", coord(x), coord(y));
            svg.text(
                "text",
                &[
                    ("class", &"axis-title"),
                    ("x", &x),
                    ("y", &y),
                    ("transform", &rotate),
                    ("text-anchor", &"middle"),
                    ("font-size", &AXIS_TITLE_FONT),
                    ("fill", &TEXT_COLOUR),
                ],
                &titles.y,
            );
        }
    }

    fn legend(&self, svg: &mut Svg, entries: &[LegendEntry]) {
        if entries.is_empty() {
            return;
        }
        let x = self.x(1.0) + 16.0;
        svg.open("g", &[("class", &"legend")]);
        for (i, entry) in entries.iter().enumerate() {
            let y = self.top + i as f64 * LEGEND_ROW;
            match entry.mark {
                Mark::Swatch => svg.leaf(
                    "rect",
                    &[("x", &x), ("y", &(y + 1.0)), ("width", &14.0), ("height", &10.0), ("fill", &entry.colour)],
                ),
                Mark::Line => svg.leaf(
                    "line",
                    &[
                        ("x1", &x),
                        ("y1", &(y + 6.0)),
                        ("x2", &(x + 14.0)),
                        ("y2", &(y + 6.0)),
                        ("stroke", &entry.colour),
                        ("stroke-width", &2.0),
                    ],
                ),
            }
            svg.text(
                "text",
                &[
                    ("x", &(x + 20.0)),
                    ("y", &(y + 6.0)),
                    ("dy", &"0.35em"),
                    ("font-size", &LEGEND_FONT),
                    ("fill", &TEXT_COLOUR),
                ],
                &entry.label,
            );
        }
        svg.close("g");
    }
}

/// A rough width of `text` at `font_size` pixels in a sans-serif font (0.6 em a character), for margins.
fn text_width(text: &str, font_size: f64) -> f64 {
    text.chars().count() as f64 * font_size * 0.6
}

/// The margin an axis title takes: none when it is empty.
fn title_band(title: &str) -> f64 {
    if title.is_empty() {
        0.0
    } else {
        AXIS_TITLE_FONT + 10.0
    }
}
