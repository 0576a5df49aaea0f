//! Line charts: one polyline per series, one point per x value, log axis and errors.

mod common;

use common::{class, num, parse, title};
use svgplot::{LineChart, PlotError, Series};

fn chart() -> LineChart {
    LineChart::new(vec![2.0, 3.0, 4.0, 8.0])
        .series(Series::new("per-channel", vec![0.3, 0.08, 0.02, 1e-4]))
        .series(Series::new("g32", vec![0.1, 0.03, 0.008, 5e-5]))
        .x_label("bits")
        .y_label("relative error")
}

#[test]
fn one_polyline_per_series_through_every_point() {
    let svg = chart().render().unwrap();
    let doc = parse(&svg);
    let lines = class(&doc, "line");
    assert_eq!(lines.len(), 2);
    let points = class(&doc, "point");
    assert_eq!(points.len(), 8);
    let vertices: Vec<&str> = lines[0].attribute("points").unwrap().split(' ').collect();
    assert_eq!(vertices.len(), 4);
    assert_eq!(vertices[1], format!("{},{}", points[1].attribute("cx").unwrap(), points[1].attribute("cy").unwrap()));
    assert_eq!(title(points[2]), "per-channel: (4, 0.02)");
    // x positions are proportional: 2 -> 3 is a sixth of 2 -> 8.
    let x: Vec<f64> = points[..4].iter().map(|p| num(*p, "cx")).collect();
    assert!(((x[1] - x[0]) * 6.0 - (x[3] - x[0])).abs() < 0.05, "{x:?}");
}

#[test]
fn log_axis_spaces_decades_evenly() {
    let svg = LineChart::new(vec![0.0, 1.0, 2.0])
        .series(Series::new("s", vec![1e-3, 1e-2, 1e-1]))
        .log_y(true)
        .render()
        .unwrap();
    let doc = parse(&svg);
    let y: Vec<f64> = class(&doc, "point").iter().map(|p| num(*p, "cy")).collect();
    assert!(((y[0] - y[1]) - (y[1] - y[2])).abs() < 0.02 && y[0] > y[1], "{y:?}");
}

#[test]
fn bad_input_is_an_error() {
    let err = LineChart::new(vec![]).series(Series::new("s", vec![])).render().unwrap_err();
    assert!(matches!(err, PlotError::Empty { what: "x values" }), "{err}");
    let err = LineChart::new(vec![1.0]).render().unwrap_err();
    assert!(matches!(err, PlotError::Empty { what: "series" }), "{err}");
    let err = LineChart::new(vec![1.0, f64::NAN]).render().unwrap_err();
    assert!(matches!(err, PlotError::NonFinite { ref series, index: 1, .. } if series == "x values"), "{err}");
    let err = chart().series(Series::new("three", vec![1.0, 2.0, 3.0])).render().unwrap_err();
    assert!(matches!(err, PlotError::LengthMismatch { expected: 4, found: 3, .. }), "{err}");
    let err = chart().series(Series::new("neg", vec![1.0, 2.0, -3.0, 4.0])).log_y(true).render().unwrap_err();
    assert!(matches!(err, PlotError::NonPositiveOnLog { index: 2, .. }), "{err}");
}
