//! Runs the `torch_parity` example's checker over the PyTorch vectors kept in `tests/fixtures`.

#[allow(dead_code)]
#[path = "../examples/torch_parity.rs"]
mod torch_parity;

const VECTORS: &str = include_str!("fixtures/quant_vectors.json");

#[test]
fn every_pytorch_case_passes() {
    let report = torch_parity::check_json(VECTORS).unwrap();
    assert!(report.failures.is_empty(), "failures: {:#?}", report.failures);
    assert_eq!(report.passed, 40);
}

#[test]
fn a_wrong_code_is_reported() {
    let mut file: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let q = &mut file["cases"][11]["q"][5];
    *q = serde_json::json!(q.as_i64().unwrap() + 1);
    let report = torch_parity::check_json(&file.to_string()).unwrap();
    assert_eq!(report.passed, 39);
    assert_eq!(report.failures.len(), 1);
    assert!(
        report.failures[0].starts_with("case #11 (symmetric_per_tensor): 1 codes differ; first at #5"),
        "{}",
        report.failures[0]
    );
}

#[test]
fn a_wrong_packed_byte_is_reported() {
    let mut file: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let case = file["cases"].as_array_mut().unwrap().iter_mut().find(|c| c["kind"] == "pack").unwrap();
    case["packed"][0] = serde_json::json!(case["packed"][0].as_u64().unwrap() ^ 1);
    let report = torch_parity::check_json(&file.to_string()).unwrap();
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
}
