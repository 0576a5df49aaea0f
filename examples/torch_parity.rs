//! Conformance with PyTorch: checks every case of a quantization vectors file (codes, scales, zero points,
//! dequantized values, packed bytes) and prints `N passed, M failed`.
//!
//! ```text
//! cargo run --release --example torch_parity -- tests/fixtures/quant_vectors.json
//! ```

use anyhow::{bail, Context, Result};
use qlayers::{pack, Bits, CodeRange, Granularity, LinearScheme, QParams, QTensor};
use serde::Deserialize;

/// Relative tolerance for floats (scales and dequantized values).
const REL_TOL: f32 = 1e-6;

/// One case of the vectors file, tagged by its `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum Case {
    /// `torch.quantize_per_tensor` with an explicit scale and zero point.
    PerTensorExplicit {
        dtype: String,
        shape: Vec<usize>,
        x: Vec<f32>,
        scale: f64,
        zero_point: i32,
        q: Vec<i32>,
        dequant: Vec<f32>,
    },
    /// `torch.quantize_per_channel` with explicit scales and zero points.
    PerChannelExplicit {
        dtype: String,
        axis: usize,
        shape: Vec<usize>,
        x: Vec<f32>,
        scales: Vec<f64>,
        zero_points: Vec<i32>,
        q: Vec<i32>,
        dequant: Vec<f32>,
    },
    /// Asymmetric parameters over the whole tensor, signed codes.
    AsymmetricPerTensor {
        bits: u32,
        shape: Vec<usize>,
        x: Vec<f32>,
        scale: f32,
        zero_point: i32,
        q: Vec<i32>,
        dequant: Vec<f32>,
    },
    /// Symmetric parameters over the whole tensor.
    SymmetricPerTensor { bits: u32, shape: Vec<usize>, x: Vec<f32>, scale: f32, q: Vec<i32>, dequant: Vec<f32> },
    /// Symmetric parameters per index along `dim`.
    SymmetricPerChannel {
        bits: u32,
        dim: usize,
        shape: Vec<usize>,
        x: Vec<f32>,
        scales: Vec<f32>,
        q: Vec<i32>,
        dequant: Vec<f32>,
    },
    /// Symmetric parameters per group of consecutive values.
    SymmetricPerGroup {
        bits: u32,
        group_size: usize,
        shape: Vec<usize>,
        x: Vec<f32>,
        scales: Vec<f32>,
        q: Vec<i32>,
        dequant: Vec<f32>,
    },
    /// Asymmetric parameters per group, unsigned codes.
    AsymmetricPerGroupUnsigned {
        bits: u32,
        group_size: usize,
        shape: Vec<usize>,
        x: Vec<f32>,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        q: Vec<i32>,
        dequant: Vec<f32>,
    },
    /// 2- or 4-bit packing.
    Pack { bits: u32, values: Vec<u8>, packed: Vec<u8> },
}

/// The vectors file.
#[derive(Debug, Deserialize)]
struct VectorsFile {
    cases: Vec<Case>,
}

/// Outcome of a whole file: how many cases passed, and a description of each failure.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Cases whose every value matched.
    pub(crate) passed: usize,
    /// `case #i (kind): what differed`, one per failing case.
    pub(crate) failures: Vec<String>,
}

/// Checks every case of a vectors file given as JSON text.
pub(crate) fn check_json(text: &str) -> Result<Report> {
    let file: VectorsFile = serde_json::from_str(text).context("not a quantization vectors file")?;
    let mut report = Report::default();
    for (i, case) in file.cases.iter().enumerate() {
        match check_case(case) {
            Ok(()) => report.passed += 1,
            Err(err) => report.failures.push(format!("case #{i} ({}): {err:#}", kind_name(case))),
        }
    }
    Ok(report)
}

fn kind_name(case: &Case) -> &'static str {
    match case {
        Case::PerTensorExplicit { .. } => "per_tensor_explicit",
        Case::PerChannelExplicit { .. } => "per_channel_explicit",
        Case::AsymmetricPerTensor { .. } => "asymmetric_per_tensor",
        Case::SymmetricPerTensor { .. } => "symmetric_per_tensor",
        Case::SymmetricPerChannel { .. } => "symmetric_per_channel",
        Case::SymmetricPerGroup { .. } => "symmetric_per_group",
        Case::AsymmetricPerGroupUnsigned { .. } => "asymmetric_per_group_unsigned",
        Case::Pack { .. } => "pack",
    }
}

/// The code range of a PyTorch quantized dtype.
fn torch_range(dtype: &str) -> Result<CodeRange> {
    match dtype {
        "qint8" => Ok(CodeRange::Signed),
        "quint8" => Ok(CodeRange::Unsigned),
        other => bail!("unknown dtype {other}"),
    }
}

fn check_case(case: &Case) -> Result<()> {
    match case {
        Case::PerTensorExplicit { dtype, shape, x, scale, zero_point, q, dequant } => {
            let params = QParams::per_tensor(Bits::B8, torch_range(dtype)?, *scale as f32, *zero_point);
            check_tensor(&QTensor::quantize_f32_with(x, shape, &params)?, q, dequant)
        }
        Case::PerChannelExplicit { dtype, axis, shape, x, scales, zero_points, q, dequant } => {
            let params = QParams {
                bits: Bits::B8,
                range: torch_range(dtype)?,
                granularity: Granularity::PerChannel { dim: *axis },
                scales: scales.iter().map(|&s| s as f32).collect(),
                zero_points: zero_points.clone(),
            };
            check_tensor(&QTensor::quantize_f32_with(x, shape, &params)?, q, dequant)
        }
        Case::AsymmetricPerTensor { bits, shape, x, scale, zero_point, q, dequant } => {
            let scheme = LinearScheme::asymmetric(Bits::new(*bits)?, Granularity::PerTensor);
            let t = QTensor::quantize_f32(x, shape, scheme)?;
            check_params(&t, &[*scale], Some(&[*zero_point]))?;
            check_tensor(&t, q, dequant)
        }
        Case::SymmetricPerTensor { bits, shape, x, scale, q, dequant } => check_computed(
            x,
            shape,
            LinearScheme::symmetric(Bits::new(*bits)?, Granularity::PerTensor),
            &[*scale],
            None,
            q,
            dequant,
        ),
        Case::SymmetricPerChannel { bits, dim, shape, x, scales, q, dequant } => {
            let scheme = LinearScheme::symmetric(Bits::new(*bits)?, Granularity::PerChannel { dim: *dim });
            check_computed(x, shape, scheme, scales, None, q, dequant)
        }
        Case::SymmetricPerGroup { bits, group_size, shape, x, scales, q, dequant } => {
            let scheme = LinearScheme::symmetric(Bits::new(*bits)?, Granularity::PerGroup { size: *group_size });
            check_computed(x, shape, scheme, scales, None, q, dequant)
        }
        Case::AsymmetricPerGroupUnsigned { bits, group_size, shape, x, scales, zero_points, q, dequant } => {
            let scheme =
                LinearScheme::asymmetric_unsigned(Bits::new(*bits)?, Granularity::PerGroup { size: *group_size });
            check_computed(x, shape, scheme, scales, Some(zero_points), q, dequant)
        }
        Case::Pack { bits, values, packed } => {
            let bits = Bits::new(*bits)?;
            let ours = pack::pack(values, bits)?;
            if &ours != packed {
                bail!("packed bytes {ours:?}, expected {packed:?}");
            }
            let back = pack::unpack(&ours, bits, values.len())?;
            if &back != values {
                bail!("unpacked {back:?}, expected {values:?}");
            }
            Ok(())
        }
    }
}

/// Quantizes with computed parameters and checks parameters, codes and dequantized values.
fn check_computed(
    x: &[f32],
    shape: &[usize],
    scheme: LinearScheme,
    scales: &[f32],
    zero_points: Option<&[i32]>,
    q: &[i32],
    dequant: &[f32],
) -> Result<()> {
    let t = QTensor::quantize_f32(x, shape, scheme)?;
    check_params(&t, scales, zero_points)?;
    check_tensor(&t, q, dequant)
}

fn check_params(t: &QTensor, scales: &[f32], zero_points: Option<&[i32]>) -> Result<()> {
    check_floats("scale", t.scales(), scales)?;
    let expected_zps = zero_points.map(<[i32]>::to_vec).unwrap_or_else(|| vec![0; scales.len()]);
    check_ints("zero point", t.zero_points(), &expected_zps)
}

fn check_tensor(t: &QTensor, q: &[i32], dequant: &[f32]) -> Result<()> {
    check_ints("code", &t.codes(), q)?;
    check_floats("dequantized value", &t.dequantize_f32(), dequant)
}

fn check_ints(what: &str, ours: &[i32], expected: &[i32]) -> Result<()> {
    if ours.len() != expected.len() {
        bail!("{} {what}s, expected {}", ours.len(), expected.len());
    }
    let wrong: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != expected[i]).collect();
    if let Some(&i) = wrong.first() {
        bail!("{} {what}s differ; first at #{i}: {} vs expected {}", wrong.len(), ours[i], expected[i]);
    }
    Ok(())
}

fn check_floats(what: &str, ours: &[f32], expected: &[f32]) -> Result<()> {
    if ours.len() != expected.len() {
        bail!("{} {what}s, expected {}", ours.len(), expected.len());
    }
    let close = |a: f32, b: f32| (a - b).abs() <= REL_TOL * a.abs().max(b.abs()).max(f32::MIN_POSITIVE);
    let wrong: Vec<usize> = (0..ours.len()).filter(|&i| !close(ours[i], expected[i])).collect();
    if let Some(&i) = wrong.first() {
        bail!("{} {what}s differ; first at #{i}: {} vs expected {}", wrong.len(), ours[i], expected[i]);
    }
    Ok(())
}

fn main() -> Result<()> {
    let path = std::env::args().nth(1).context("usage: torch_parity FILE.json")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let report = check_json(&text).with_context(|| format!("in {path}"))?;
    for failure in &report.failures {
        println!("FAIL {failure}");
    }
    println!("{} passed, {} failed", report.passed, report.failures.len());
    if !report.failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
