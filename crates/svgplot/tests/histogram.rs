//! Histograms: bin counts, bin geometry, overlays, log axis, flat data and errors.

mod common;

use common::{class, num, parse, title};
use roxmltree::Node;
use svgplot::{Histogram, Overlay, PlotError};

/// Deterministic, roughly normal samples (a sum of 12 uniforms from xorshift).
fn normal(n: usize, scale: f64) -> Vec<f64> {
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n).map(|_| ((0..12).map(|_| uniform()).sum::<f64>() - 6.0) * scale).collect()
}

/// The count a bin's tooltip (`count in [lo, hi)`) reports.
fn count(bin: Node) -> usize {
    title(bin).split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn bins_hold_every_sample_and_tile_the_range() {
    let samples = normal(5000, 0.02);
    let svg = Histogram::new(&samples).bins(40).render().unwrap();
    let doc = parse(&svg);
    let bins = class(&doc, "bin");
    assert_eq!(bins.len(), 40);
    assert_eq!(bins.iter().map(|b| count(*b)).sum::<usize>(), 5000);
    for pair in bins.windows(2) {
        assert!((num(pair[0], "x") + num(pair[0], "width") - num(pair[1], "x")).abs() < 0.02);
        assert!((num(pair[0], "width") - num(pair[1], "width")).abs() < 0.02);
    }
    // Heights are proportional to counts.
    let tallest = bins.iter().max_by_key(|b| count(**b)).unwrap();
    let per_sample = num(*tallest, "height") / count(*tallest) as f64;
    assert!(bins.iter().all(|b| (num(*b, "height") - per_sample * count(*b) as f64).abs() < 0.02));
    assert!(title(bins[39]).ends_with(']') && title(bins[0]).ends_with(')'));
}

#[test]
fn automatic_bins_follow_freedman_diaconis() {
    let samples = normal(1000, 1.0);
    let doc_svg = Histogram::new(&samples).render().unwrap();
    let doc = parse(&doc_svg);
    let bins = class(&doc, "bin");
    // IQR of a standard normal is about 1.35: width 2 * 1.35 / 10 = 0.27 over a range of about 6 to 7.
    assert!((18..=32).contains(&bins.len()), "{} bins", bins.len());
    assert_eq!(bins.iter().map(|b| count(*b)).sum::<usize>(), 1000);
}

#[test]
fn f32_samples_are_accepted() {
    let samples: Vec<f32> = normal(100, 1.0).into_iter().map(|v| v as f32).collect();
    let svg = Histogram::new(&samples).bins(10).render().unwrap();
    assert_eq!(class(&parse(&svg), "bin").iter().map(|b| count(*b)).sum::<usize>(), 100);
}

#[test]
fn overlays_draw_one_line_per_x_inside_the_range() {
    let samples = [-1.0, -0.3, 0.0, 0.2, 1.0];
    let svg = Histogram::new(&samples)
        .bins(4)
        .overlay(Overlay::new("grid", vec![-2.0, -0.5, 0.0, 0.5, 2.0]))
        .overlay(Overlay::new("nf4", vec![-1.0, 1.0]))
        .render()
        .unwrap();
    let doc = parse(&svg);
    let bins = class(&doc, "bin");
    let (left, right) = (num(bins[0], "x"), num(bins[3], "x") + num(bins[3], "width"));
    let lines = class(&doc, "overlay");
    let xs: Vec<f64> = lines.iter().map(|l| num(*l, "x1")).collect();
    assert_eq!(xs.len(), 5);
    // -0.5, 0 and 0.5 at a quarter, half and three quarters of the range; -1 and 1 at its ends.
    let expected = [0.25, 0.5, 0.75, 0.0, 1.0].map(|f| left + f * (right - left));
    for (x, e) in xs.iter().zip(expected) {
        assert!((x - e).abs() < 0.02, "{xs:?} vs {expected:?}");
    }
    assert!(lines.iter().all(|l| num(*l, "x1") == num(*l, "x2") && num(*l, "y2") > num(*l, "y1")));
    assert_ne!(lines[0].attribute("stroke"), lines[3].attribute("stroke"));
    assert_eq!(title(lines[1]), "grid: 0");
    let legend: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text") && n.ancestors().any(|a| a.attribute("class") == Some("legend")))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(legend, ["grid (2 outside the range)", "nf4"]);
}

#[test]
fn log_counts_space_decades_evenly_and_leave_empty_bins_flat() {
    // Bins over [0, 4): counts 1, 10, 0 and 100 (the last bin also takes the maximum, 4).
    let mut samples = vec![0.5];
    samples.extend(std::iter::repeat_n(1.5, 10));
    samples.extend(std::iter::repeat_n(3.5, 99));
    samples.push(4.0);
    let svg = Histogram::new(&samples).bins(4).log_y(true).render().unwrap();
    let doc = parse(&svg);
    let bins = class(&doc, "bin");
    assert_eq!(bins.iter().map(|b| count(*b)).collect::<Vec<_>>(), [1, 10, 0, 100]);
    let h: Vec<f64> = bins.iter().map(|b| num(*b, "height")).collect();
    assert!(h[0] > 1.0 && h[2] == 0.0);
    assert!(((h[1] - h[0]) - (h[3] - h[1])).abs() < 0.02, "{h:?}");
}

#[test]
fn equal_samples_widen_the_range() {
    let svg = Histogram::new(&[0.25; 10]).render().unwrap();
    let doc = parse(&svg);
    let counts: Vec<usize> = class(&doc, "bin").iter().map(|b| count(*b)).collect();
    assert_eq!(counts.iter().sum::<usize>(), 10);
    assert_eq!(counts.iter().filter(|&&c| c > 0).count(), 1);
    // The range is 0.25 ± 1%: the first bin starts at 0.2475.
    assert!(title(class(&doc, "bin")[0]).contains("[0.2475, "));
    let svg = Histogram::new(&[0.0; 3]).bins(2).render().unwrap();
    assert!(title(class(&parse(&svg), "bin")[0]).ends_with("[-0.5, 0)"));
}

#[test]
fn bad_input_is_an_error() {
    let err = Histogram::new(&[] as &[f64]).render().unwrap_err();
    assert!(matches!(err, PlotError::Empty { what: "samples" }), "{err}");
    let err = Histogram::new(&[1.0, 2.0, f64::NAN]).render().unwrap_err();
    assert!(matches!(err, PlotError::NonFinite { ref series, index: 2, .. } if series == "samples"), "{err}");
    let err = Histogram::new(&[1.0f32, f32::NEG_INFINITY]).render().unwrap_err();
    assert!(matches!(err, PlotError::NonFinite { index: 1, .. }), "{err}");
    let err =
        Histogram::new(&[1.0, 2.0]).overlay(Overlay::new("levels", vec![0.0, f64::INFINITY])).render().unwrap_err();
    assert!(matches!(err, PlotError::NonFinite { ref series, index: 1, .. } if series == "levels"), "{err}");
    for requested in [0, 1001] {
        let err = Histogram::new(&[1.0, 2.0]).bins(requested).render().unwrap_err();
        assert!(matches!(err, PlotError::BinCount { requested: r, max: 1000 } if r == requested), "{err}");
    }
    let err = Histogram::new(&[-f64::MAX, f64::MAX]).render().unwrap_err();
    assert!(matches!(err, PlotError::RangeOverflow { .. }), "{err}");
}
