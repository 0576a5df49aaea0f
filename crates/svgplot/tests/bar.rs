//! Bar charts: structure, geometry, escaping, log axis, width growth and errors.

mod common;

use common::{class, num, parse, title};
use svgplot::{BarChart, PlotError, Series};

fn two_series() -> BarChart {
    BarChart::new(["fc1", "fc2", "fc3"])
        .series(Series::new("int8", vec![1.0, 2.0, 4.0]))
        .series(Series::new("int4-g32", vec![0.5, 3.0, 8.0]))
}

#[test]
fn one_bar_per_category_and_series_with_height_proportional_to_value() {
    let svg = two_series().title("SNR").render().unwrap();
    let doc = parse(&svg);
    let bars = class(&doc, "bar");
    assert_eq!(bars.len(), 6);
    // Category-major order: fc1/int8, fc1/int4-g32, fc2/int8, ...
    let values = [1.0, 0.5, 2.0, 3.0, 4.0, 8.0];
    let per_unit = num(bars[0], "height") / values[0];
    for (bar, value) in bars.iter().zip(values) {
        assert!((num(*bar, "height") - per_unit * value).abs() < 0.02, "{}", title(*bar));
        // All bars stand on the same baseline.
        assert!((num(*bar, "y") + num(*bar, "height") - num(bars[0], "y") - num(bars[0], "height")).abs() < 0.02);
    }
    assert_eq!(title(bars[3]), "fc2 / int4-g32: 3");
    // Series keep one colour across categories, and the two colours differ.
    assert_eq!(bars[0].attribute("fill"), bars[2].attribute("fill"));
    assert_ne!(bars[0].attribute("fill"), bars[1].attribute("fill"));
    // The legend names both series.
    let legend: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.ancestors().any(|a| a.attribute("class") == Some("legend")))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(legend, ["int8", "int4-g32"]);
}

#[test]
fn negative_values_hang_below_zero() {
    let svg = BarChart::new(["a", "b"]).series(Series::new("snr", vec![10.0, -5.0])).render().unwrap();
    let doc = parse(&svg);
    let bars = class(&doc, "bar");
    let zero = num(bars[0], "y") + num(bars[0], "height");
    assert!((num(bars[1], "y") - zero).abs() < 0.02);
    assert!((num(bars[1], "height") * 2.0 - num(bars[0], "height")).abs() < 0.02);
}

#[test]
fn text_is_escaped() {
    let label = "a<b&\"c\"";
    let svg = BarChart::new([label, "x'y"])
        .series(Series::new("s<1>", vec![1.0, 2.0]))
        .title("it's <ok> & \"fine\"")
        .x_label("<x>")
        .y_label("&y")
        .render()
        .unwrap();
    let doc = parse(&svg);
    let texts: Vec<&str> = doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).collect();
    for expected in [label, "x'y", "s<1>", "it's <ok> & \"fine\"", "<x>", "&y"] {
        assert!(texts.contains(&expected), "{expected:?} missing from {texts:?}");
    }
    assert_eq!(title(class(&doc, "bar")[0]), "a<b&\"c\" / s<1>: 1");
}

#[test]
fn log_axis_spaces_decades_evenly() {
    let svg =
        BarChart::new(["a", "b", "c"]).series(Series::new("kl", vec![1.0, 10.0, 100.0])).log_y(true).render().unwrap();
    let doc = parse(&svg);
    let h: Vec<f64> = class(&doc, "bar").iter().map(|b| num(*b, "height")).collect();
    assert!(h[0] > 1.0, "the smallest bar is visible");
    assert!(((h[1] - h[0]) - (h[2] - h[1])).abs() < 0.02, "{h:?}");
    let ticks: Vec<&str> = class(&doc, "tick").iter().filter_map(|n| n.text()).collect();
    assert_eq!(ticks, ["0.1", "1", "10", "100"]);
}

#[test]
fn many_categories_widen_the_chart_and_rotate_labels() {
    let short =
        parse(&two_series().render().unwrap()).root_element().attribute("width").unwrap().parse::<f64>().unwrap();
    let names: Vec<String> = (0..220).map(|i| format!("encoder.layer.{i}.attention.self.query")).collect();
    let values: Vec<f64> = (0..220).map(f64::from).collect();
    let svg = BarChart::new(names)
        .series(Series::new("int8", values.clone()))
        .series(Series::new("nf4", values))
        .render()
        .unwrap();
    let doc = parse(&svg);
    let wide = num(doc.root_element(), "width");
    assert!(wide > 220.0 * 16.0 && wide > 4.0 * short, "{wide} vs {short}");
    let labels = class(&doc, "category");
    assert_eq!(labels.len(), 220);
    assert!(labels.iter().all(|l| l.attribute("transform").is_some_and(|t| t.starts_with("rotate(-60 "))));
    // Neighbouring labels are at least a font size apart across their slant.
    assert!((num(labels[1], "x") - num(labels[0], "x")) * 60f64.to_radians().sin() >= 11.0);
    // Short labels that fit their slot sit level.
    let doc = two_series().render().unwrap();
    assert!(class(&parse(&doc), "category").iter().all(|l| l.attribute("transform").is_none()));
}

#[test]
fn all_zero_values_still_draw() {
    let svg = BarChart::new(["a"]).series(Series::new("s", vec![0.0])).render().unwrap();
    let doc = parse(&svg);
    assert_eq!(num(class(&doc, "bar")[0], "height"), 0.0);
}

#[test]
fn output_is_deterministic() {
    assert_eq!(two_series().render().unwrap(), two_series().render().unwrap());
}

#[test]
fn bad_input_is_an_error() {
    let err = BarChart::new(Vec::<String>::new()).series(Series::new("s", vec![])).render().unwrap_err();
    assert!(matches!(err, PlotError::Empty { what: "categories" }), "{err}");
    let err = BarChart::new(["a"]).render().unwrap_err();
    assert!(matches!(err, PlotError::Empty { what: "series" }), "{err}");
    let err = two_series().series(Series::new("short", vec![1.0])).render().unwrap_err();
    assert!(
        matches!(err, PlotError::LengthMismatch { ref series, expected: 3, found: 1 } if series == "short"),
        "{err}"
    );
    let err = two_series().series(Series::new("nan", vec![1.0, f64::NAN, 2.0])).render().unwrap_err();
    assert!(matches!(err, PlotError::NonFinite { ref series, index: 1, .. } if series == "nan"), "{err}");
    assert!(err.to_string().contains("`nan`") && err.to_string().contains("index 1"), "{err}");
    let err = two_series().series(Series::new("inf", vec![1.0, 2.0, f64::INFINITY])).render().unwrap_err();
    assert!(matches!(err, PlotError::NonFinite { index: 2, .. }), "{err}");
    let err = two_series().series(Series::new("zero", vec![1.0, 0.0, 2.0])).log_y(true).render().unwrap_err();
    assert!(
        matches!(err, PlotError::NonPositiveOnLog { ref series, index: 1, value } if series == "zero" && value == 0.0)
    );
    let err = BarChart::new(["a", "b"]).series(Series::new("huge", vec![-f64::MAX, f64::MAX])).render().unwrap_err();
    assert!(matches!(err, PlotError::RangeOverflow { .. }), "{err}");
    // The error is a std error with a message.
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(!boxed.to_string().is_empty());
}
