//! `runner inspect` and `runner quantize --auto` on all-MiniLM-L6-v2: the JSON report, the SVG charts (parsed),
//! and clean errors on bad requests. Needs `models/fetch minilm` (CI fetches it).

mod common;

use common::{fails, minilm, ok};

/// Elements of `svg` whose `class` attribute is `class`.
fn count_class(svg: &str, class: &str) -> usize {
    let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert_eq!(doc.root_element().tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    doc.descendants().filter(|n| n.attribute("class") == Some(class)).count()
}

#[test]
fn inspect_reports_every_layer_and_scheme_and_draws_them() {
    let dir = std::env::temp_dir().join(format!("runner-inspect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let model = minilm();
    let out = ok(&[
        "inspect",
        "--model",
        &model,
        "--quant",
        "w8a8-b32-pb,int4-g32",
        "--quant",
        "int2-g64-asym",
        "--layers",
        "encoder.layer.0.*",
        "--texts",
        "4",
        "--json",
        "--plot",
        dir.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["schemes"], serde_json::json!(["w8a8-b32-pb", "int4-g32", "int2-g64-asym"]));
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 6);
    for layer in layers {
        let results = layer["results"].as_array().unwrap();
        let loss = |i: usize| results[i]["loss"].as_f64().unwrap();
        let snr = |i: usize| results[i]["weight_snr_db"].as_f64().unwrap();
        assert!(loss(0) < loss(1) && loss(1) < loss(2), "{layer}");
        assert!(snr(0) > snr(1) && snr(1) > snr(2), "{layer}");
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    // One bar per layer and scheme in both bar charts.
    assert_eq!(count_class(&read("sensitivity.svg"), "bar"), 18);
    assert_eq!(count_class(&read("weight_snr.svg"), "bar"), 18);
    // The weight histogram carries the int4 grid (16 levels) and the int2 grid (4); int8's 255 are left off.
    let weights = read("weights.svg");
    assert!(count_class(&weights, "bin") > 10);
    let lines = count_class(&weights, "overlay");
    assert!((4..=20).contains(&lines), "{lines} grid lines");
    for scheme in ["w8a8-b32-pb", "int4-g32", "int2-g64-asym"] {
        assert!(count_class(&read(&format!("errors_{scheme}.svg")), "bin") > 10);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_analysis_requests_fail_cleanly() {
    let model = minilm();
    let err = fails(&["inspect", "--model", &model, "--quant", "int3"]);
    assert!(err.contains("unknown scheme"), "{err}");
    let err = fails(&["inspect", "--model", &model, "--layers", "no.such.layer", "--weights-only"]);
    assert!(err.contains("no layer matches"), "{err}");
    let empty = std::env::temp_dir().join(format!("runner-empty-calibration-{}", std::process::id()));
    std::fs::write(&empty, "\n \n").unwrap();
    let err = fails(&["inspect", "--model", &model, "--calibration", empty.to_str().unwrap(), "--weights-only"]);
    assert!(err.contains("no non-empty line"), "{err}");
    let out = std::env::temp_dir().join(format!("runner-auto-{}", std::process::id()));
    let err = fails(&[
        "quantize",
        "--model",
        &model,
        "--auto",
        "--target",
        "ppl<=+2%",
        "--candidates",
        "int4-g32",
        "--texts",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("does not fit this model"), "{err}");
    // --auto without --target, and a malformed target, are usage errors (exit 2).
    let usage = common::runner(&["quantize", "--model", &model, "--auto", "--out", out.to_str().unwrap()]);
    assert_eq!(usage.status.code(), Some(2));
    let usage = common::runner(&["quantize", "--auto", "--target", "cosine>=2", "--out", out.to_str().unwrap()]);
    assert_eq!(usage.status.code(), Some(2));
    std::fs::remove_file(&empty).unwrap();
}
