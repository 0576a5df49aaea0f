//! Bad input gets a clear error naming the problem; all-zero input quantizes cleanly.

use candle_core::{Device, Tensor};
use qlayers::{pack, Bits, CodeRange, Codebook, Granularity, LinearScheme, QParams, QTensor, QuantError, Scheme};

fn sym8(g: Granularity) -> LinearScheme {
    LinearScheme::symmetric(Bits::B8, g)
}

fn err_text(r: qlayers::Result<QTensor>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn empty_tensor() {
    let x = Tensor::zeros((0, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let msg = err_text(QTensor::quantize(&x, sym8(Granularity::PerTensor)));
    assert!(msg.contains("empty tensor"), "{msg}");
}

#[test]
fn nan_and_inf() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let x = [0.5, 1.0, bad, 2.0];
        let err = QTensor::quantize_f32(&x, &[4], sym8(Granularity::PerTensor)).unwrap_err();
        assert!(matches!(err, QuantError::NonFinite { index: 2, .. }), "{err}");
        assert!(err.to_string().contains("non-finite"));
        let err = QTensor::quantize_f32(&x, &[4], Scheme::Nf4 { block_size: 4 }).unwrap_err();
        assert!(matches!(err, QuantError::NonFinite { index: 2, .. }), "{err}");
        for codebook in [Codebook::Nf4, Codebook::KMeans] {
            let err = QTensor::quantize_f32(&x, &[4], Scheme::Codebook { codebook, group_size: 4 }).unwrap_err();
            assert!(matches!(err, QuantError::NonFinite { index: 2, .. }), "{err}");
        }
    }
}

#[test]
fn group_size_must_divide_last_dim() {
    let x = vec![1.0; 2 * 48];
    for size in [0, 5, 32, 96] {
        let msg = err_text(QTensor::quantize_f32(&x, &[2, 48], sym8(Granularity::PerGroup { size })));
        assert!(msg.contains(&format!("group size {size} does not divide the last dimension (48)")), "{msg}");
    }
    let msg = err_text(QTensor::quantize_f32(&x, &[2, 48], Scheme::Nf4 { block_size: 64 }));
    assert!(msg.contains("group size 64"), "{msg}");
}

#[test]
fn unsupported_bits() {
    for bits in [0, 1, 3, 5, 16] {
        assert_eq!(
            Bits::new(bits).unwrap_err().to_string(),
            format!("unsupported bit width {bits}: expected 2, 4 or 8")
        );
    }
}

#[test]
fn bad_explicit_scales() {
    let x = [1.0f32, 2.0];
    for scale in [0.0, -0.1, f32::NAN, f32::INFINITY] {
        let params = QParams::per_tensor(Bits::B8, CodeRange::Signed, scale, 0);
        let msg = err_text(QTensor::quantize_f32_with(&x, &[2], &params));
        assert!(msg.contains("scales must be finite and strictly positive"), "{msg}");
    }
}

#[test]
fn bad_explicit_zero_point_and_counts() {
    let x = [1.0f32, 2.0];
    let params = QParams::per_tensor(Bits::B8, CodeRange::Unsigned, 0.1, -1);
    assert!(err_text(QTensor::quantize_f32_with(&x, &[2], &params)).contains("outside the code range [0, 255]"));
    let params = QParams {
        granularity: Granularity::PerChannel { dim: 0 },
        ..QParams::per_tensor(Bits::B8, CodeRange::Signed, 0.1, 0)
    };
    assert!(err_text(QTensor::quantize_f32_with(&x, &[2], &params)).contains("expected 2 scales"));
}

#[test]
fn bad_channel_dim_and_scheme() {
    let x = [1.0f32; 6];
    assert!(
        err_text(QTensor::quantize_f32(&x, &[2, 3], sym8(Granularity::PerChannel { dim: 2 }))).contains("out of range")
    );
    let bad = LinearScheme { range: CodeRange::Unsigned, ..sym8(Granularity::PerTensor) };
    assert!(err_text(QTensor::quantize_f32(&x, &[2, 3], bad)).contains("symmetric scheme needs signed codes"));
    assert!(
        err_text(QTensor::quantize_f32(&x, &[7], sym8(Granularity::PerTensor))).contains("number of values vs shape")
    );
}

#[test]
fn bad_packing_input() {
    assert!(pack::pack(&[1, 4], Bits::B2)
        .unwrap_err()
        .to_string()
        .contains("code 4 at index 1 does not fit in 2 bits"));
    assert!(pack::unpack(&[0u8; 2], Bits::B4, 5).unwrap_err().to_string().contains("too short"));
}

#[test]
fn all_zero_tensors_quantize_without_nan() {
    let x = vec![0f32; 4 * 64];
    let mut schemes: Vec<Scheme> = vec![Scheme::nf4()];
    for codebook in [Codebook::Nf4, Codebook::KMeans] {
        schemes.push(Scheme::Codebook { codebook, group_size: 32 });
    }
    for bits in [Bits::B2, Bits::B4, Bits::B8] {
        for g in [Granularity::PerTensor, Granularity::PerChannel { dim: 1 }, Granularity::PerGroup { size: 32 }] {
            schemes.push(LinearScheme::symmetric(bits, g).into());
            schemes.push(LinearScheme::asymmetric(bits, g).into());
            schemes.push(LinearScheme::asymmetric_unsigned(bits, g).into());
        }
    }
    for scheme in schemes {
        let q = QTensor::quantize_f32(&x, &[4, 64], scheme).unwrap();
        assert!(q.scales().iter().all(|s| s.is_finite() && *s > 0.0), "{scheme:?}");
        assert!(q.dequantize_f32().iter().all(|&v| v == 0.0), "{scheme:?}");
    }
}

#[test]
fn a_zero_group_inside_a_tensor_stays_zero() {
    let mut x = vec![0f32; 64];
    x[40..].iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 - 10.0);
    let q = QTensor::quantize_f32(
        &x,
        &[2, 32],
        LinearScheme::asymmetric_unsigned(Bits::B4, Granularity::PerGroup { size: 16 }),
    )
    .unwrap();
    assert!(q.dequantize_f32()[..32].iter().all(|&v| v == 0.0));
    // Codebooks hold an exact zero, learned ones included.
    for codebook in [Codebook::Nf4, Codebook::KMeans] {
        let q = QTensor::quantize_f32(&x, &[2, 32], Scheme::Codebook { codebook, group_size: 16 }).unwrap();
        assert!(q.dequantize_f32()[..40].iter().all(|&v| v == 0.0), "{codebook:?}");
    }
}

#[test]
fn bad_codebook_parts() {
    let (levels, scales, packed) = (qlayers::quant::codebook::nf4_levels(), vec![0.1; 2], vec![0u8; 16]);
    let rebuild = |levels: [i8; 16], scales: Vec<f32>, packed: Vec<u8>| {
        err_text(QTensor::from_codebook_parts(vec![2, 16], Codebook::Nf4, 16, levels, scales, packed))
    };
    let mut low = levels;
    low[0] = -128;
    assert!(rebuild(low, scales.clone(), packed.clone()).contains("-128"));
    assert!(rebuild(levels, vec![0.1, f32::NAN], packed.clone()).contains("scales must be finite"));
    assert!(rebuild(levels, vec![0.1], packed.clone()).contains("expected 2 scales"));
    assert!(rebuild(levels, scales.clone(), vec![0u8; 15]).contains("packed code bytes"));
    let scheme = Scheme::Codebook { codebook: Codebook::KMeans, group_size: 16 };
    let from_parts = QTensor::from_parts(vec![2, 16], scheme, scales, vec![], packed);
    assert!(err_text(from_parts).contains("from_codebook_parts"));
}
