//! QLinear and QConv2d against candle_nn's Linear and Conv2d on the same weights.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear};
use qlayers::{Activation, Bits, Codebook, Granularity, LayerScheme, LinearScheme, QConv2d, QLinear, QTensor, Scheme};

/// `||a - b|| / ||b||`.
fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
    diff / b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt()
}

/// Normal values (Box-Muller over a seeded generator), so every run tests the same tensors.
fn randn(shape: &[usize], std: f64, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * std) as f32
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn all_schemes() -> Vec<LayerScheme> {
    let mut schemes = vec![
        LayerScheme::w8a8(),
        LayerScheme::w8a8_per_row(),
        LayerScheme::W8A8 { act_block: 32, weight_per_block: true },
    ];
    for bits in [Bits::B8, Bits::B4, Bits::B2] {
        for symmetric in [true, false] {
            schemes.push(LayerScheme::Weight { bits, group: 32, symmetric });
        }
    }
    for codebook in [Codebook::Nf4, Codebook::KMeans] {
        schemes.push(LayerScheme::Codebook { codebook, group: 32 });
    }
    schemes
}

/// The mean squared difference of two equally long slices.
fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum::<f64>() / a.len() as f64
}

#[test]
fn qlinear_matches_candle_linear() {
    let (k, n) = (160, 96);
    let (w, b) = (randn(&[n, k], 0.05, 1), randn(&[n], 0.1, 2));
    let x = randn(&[2, 5, k], 1.0, 3);
    let reference = Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
    for scheme in all_schemes() {
        let layer = QLinear::new(&w, Some(&b), scheme).unwrap();
        let y = layer.forward(&x).unwrap();
        assert_eq!(y.dims(), reference.dims());
        let err = relative_error(&y, &reference);
        println!("{scheme}: relative error {err:.5}");
        let limit = match scheme {
            LayerScheme::Weight { bits: Bits::B4, .. } | LayerScheme::Codebook { .. } => 0.15,
            LayerScheme::Weight { bits: Bits::B2, .. } => 0.8,
            _ => 0.01,
        };
        assert!(err < limit, "{scheme}: relative error {err}");
    }
}

#[test]
fn a_pair_of_layers_chunk_by_chunk_equals_the_two_layers_in_turn() {
    // 400 rows of a 1536-wide intermediate: several 1 MB chunks, the last one short; M = 1 and 7 in one chunk.
    let (k, inner, n) = (64, 1536, 24);
    let (w1, b1) = (randn(&[inner, k], 0.1, 11), randn(&[inner], 0.1, 12));
    let (w2, b2) = (randn(&[n, inner], 0.05, 13), randn(&[n], 0.1, 14));
    let schemes = [LayerScheme::w8a8(), LayerScheme::w8a8_per_row(), LayerScheme::weight(Bits::B4), LayerScheme::F32];
    for scheme in schemes {
        let first = QLinear::new(&w1, Some(&b1), scheme).unwrap();
        let second = QLinear::new(&w2, Some(&b2), scheme).unwrap();
        for m in [1, 7, 400] {
            let x = randn(&[m, k], 1.0, 15 + m as u64).flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (mut hidden, mut want) = (Vec::new(), Vec::new());
            first.forward_into(&x, m, Some(Activation::GeluErf), &mut hidden).unwrap();
            second.forward_into(&hidden, m, None, &mut want).unwrap();
            let (mut inner_buf, mut got) = (Vec::new(), vec![f32::NAN; 3]);
            QLinear::forward_pair_into(&first, Some(Activation::GeluErf), &second, &x, m, &mut inner_buf, &mut got)
                .unwrap();
            assert_eq!(got.len(), m * n);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{scheme} m={m}");
            if m == 400 {
                assert!(inner_buf.len() < m * inner, "{scheme}: the intermediate was not chunked");
            }
        }
        // Layers that do not chain, or input of the wrong length, are errors.
        let (mut inner_buf, mut out) = (Vec::new(), Vec::new());
        let err = QLinear::forward_pair_into(&second, None, &first, &[0.0; 1536], 1, &mut inner_buf, &mut out);
        assert!(err.unwrap_err().to_string().contains("second layer's inputs"), "{scheme}");
        let err = QLinear::forward_pair_into(&first, None, &second, &[0.0; 65], 1, &mut inner_buf, &mut out);
        assert!(err.is_err(), "{scheme}");
    }
}

#[test]
fn static_layers_need_their_step() {
    let (w, b) = (randn(&[48, 64], 0.05, 21), randn(&[48], 0.1, 22));
    let x = randn(&[3, 64], 1.0, 23);
    let largest = x.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let reference = Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
    let error_at = |step: f32| {
        let layer = QLinear::new(&w, Some(&b), LayerScheme::W8A8Static).unwrap().with_activation_step(step).unwrap();
        assert_eq!(layer.activation_step(), Some(step));
        relative_error(&layer.forward(&x).unwrap(), &reference)
    };
    // A step that covers the input: as accurate as dynamic per-row W8A8; one that clamps a few values: not.
    let dynamic = QLinear::new(&w, Some(&b), LayerScheme::w8a8_per_row()).unwrap();
    let dynamic_error = relative_error(&dynamic.forward(&x).unwrap(), &reference);
    let (covering, clamping) = (error_at(largest / 127.0), error_at(0.75 * largest / 127.0));
    println!("static {covering:.5}, clamping {clamping:.5}, dynamic per row {dynamic_error:.5}");
    assert!(covering < 1.5 * dynamic_error && clamping > 2.0 * covering, "{covering} {clamping} {dynamic_error}");
    assert!(dynamic.clone().with_activation_step(0.1).unwrap_err().to_string().contains("w8a8-static"));
    assert!(QLinear::new(&w, None, LayerScheme::W8A8Static).unwrap().with_activation_step(-1.0).is_err());
}

#[test]
fn codebook_layers_match_candle_linear() {
    let (k, n) = (576, 192);
    let (w, b) = (randn(&[n, k], 0.02, 61), randn(&[n], 0.1, 62));
    let x = randn(&[1, 3, k], 1.0, 63);
    let reference = Linear::new(w.clone(), Some(b.clone())).forward(&x).unwrap();
    for name in ["int4-g64", "nf4-g64", "kmeans-g64"] {
        let layer = QLinear::new(&w, Some(&b), name.parse().unwrap()).unwrap();
        let err = relative_error(&layer.forward(&x).unwrap(), &reference);
        println!("{name}: relative error vs candle_nn::Linear {err:.5}");
        assert!(err < 0.15, "{name}: relative error {err}");
    }
}

#[test]
fn nf4_beats_int4_and_kmeans_is_no_worse_on_gaussian_weights() {
    let (n, k) = (256, 1024);
    let w: Vec<f32> = randn(&[n, k], 0.02, 64).flatten_all().unwrap().to_vec1().unwrap();
    let weight_mse = |name: &str| {
        let scheme: LayerScheme = name.parse().unwrap();
        mse(&scheme.round_trip(&w, n, k).unwrap(), &w)
    };
    let (int4, nf4, kmeans) = (weight_mse("int4-g64"), weight_mse("nf4-g64"), weight_mse("kmeans-g64"));
    let power = mse(&w, &vec![0.0; w.len()]);
    let snr = |e: f64| 10.0 * (power / e).log10();
    println!("weight MSE on N(0, 0.02^2), groups of 64: int4 {int4:.3e} ({:.2} dB), nf4 {nf4:.3e} ({:.2} dB), kmeans {kmeans:.3e} ({:.2} dB)", snr(int4), snr(nf4), snr(kmeans));
    assert!(nf4 < int4, "nf4 {nf4} vs int4 {int4}");
    assert!(kmeans <= nf4, "kmeans {kmeans} vs nf4 {nf4}");
}

#[test]
fn round_trip_is_the_weight_the_layer_multiplies() {
    // Unit rows quantize exactly (one code of 127 per row), so the layer's output on them is its weight's columns,
    // up to the f32 rounding of the scales' product and the minimums' sum: far below f16's rounding of the scales,
    // which the round trip must include.
    let (n, k) = (24, 128);
    let w = randn(&[n, k], 0.05, 65);
    let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let eye = Tensor::eye(k, DType::F32, &Device::Cpu).unwrap();
    let mut schemes = all_schemes();
    schemes.extend(["f32", "nf4-g64", "kmeans-g128", "int4-g64"].map(|s| s.parse::<LayerScheme>().unwrap()));
    for scheme in schemes {
        let round_trip = scheme.round_trip(&values, n, k).unwrap();
        let columns = QLinear::new(&w, None, scheme).unwrap().forward(&eye).unwrap().t().unwrap();
        let columns: Vec<f32> = columns.flatten_all().unwrap().to_vec1().unwrap();
        for (i, (a, b)) in columns.iter().zip(&round_trip).enumerate() {
            assert!((a - b).abs() <= 1e-6 * absmax, "{scheme}: element {i}: layer {a} vs round trip {b}");
        }
    }
    assert!(LayerScheme::w8a8().round_trip(&values[1..], n, k).unwrap_err().to_string().contains("number of values"));
    assert!(LayerScheme::F32.round_trip(&values[1..], n, k).unwrap_err().to_string().contains("number of values"));
}

#[test]
fn f32_layer_matches_candle_linear() {
    // Our f32 GEMM and candle's sum in different orders, so they agree to rounding, not bit for bit (the kernel
    // harness checks every level bit for bit against the scalar formula).
    let (w, b) = (randn(&[70, 300], 0.1, 4), randn(&[70], 0.1, 5));
    let x = randn(&[2, 3, 300], 1.0, 6);
    let layer = QLinear::new(&w, Some(&b), LayerScheme::F32).unwrap();
    let reference = Linear::new(w, Some(b)).forward(&x).unwrap();
    let y = layer.forward(&x).unwrap();
    assert_eq!(y.dims(), [2, 3, 70]);
    assert!(relative_error(&y, &reference) < 1e-6, "{}", relative_error(&y, &reference));
    // Packed weights are padded to whole panels (16 or 32 columns, by level).
    assert!((4 * (80 * 300 + 70)..=4 * (96 * 300 + 70)).contains(&layer.storage_bytes()));
    let rows: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(layer.forward_f32(&rows, 6).unwrap(), y.flatten_all().unwrap().to_vec1::<f32>().unwrap());
}

#[test]
fn qlinear_takes_other_dtypes_and_strided_input() {
    let w = randn(&[16, 32], 0.1, 7);
    let layer = QLinear::new(&w, None, LayerScheme::w8a8()).unwrap();
    let x = randn(&[32, 4], 1.0, 8).t().unwrap(); // not contiguous
    let y = layer.forward(&x).unwrap();
    let reference = x.matmul(&w.t().unwrap()).unwrap();
    assert!(relative_error(&y, &reference) < 0.01);
    let y16 = layer.forward(&x.to_dtype(DType::F16).unwrap()).unwrap();
    assert_eq!(y16.dtype(), DType::F16);
}

#[test]
fn qlinear_bad_input_is_an_error() {
    let w = randn(&[16, 32], 0.1, 9);
    let layer = QLinear::new(&w, None, LayerScheme::w8a8()).unwrap();
    let err = layer.forward(&randn(&[2, 31], 1.0, 10)).unwrap_err().to_string();
    assert!(err.contains("in_features"), "{err}");
    let nan = Tensor::from_vec(vec![f32::NAN; 32], (1, 32), &Device::Cpu).unwrap();
    assert!(layer.forward(&nan).unwrap_err().to_string().contains("non-finite"));
    let err = QLinear::new(&w, None, LayerScheme::Weight { bits: Bits::B4, group: 24, symmetric: true }).unwrap_err();
    assert!(err.to_string().contains("multiple of 16"), "{err}");
    let err = QLinear::new(&w, Some(&randn(&[15], 0.1, 11)), LayerScheme::w8a8()).unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
    // An all-zero weight quantizes and multiplies to zeros.
    let zeros =
        QLinear::new(&Tensor::zeros((16, 32), DType::F32, &Device::Cpu).unwrap(), None, LayerScheme::w8a8()).unwrap();
    let y = zeros.forward(&randn(&[3, 32], 1.0, 12)).unwrap();
    assert!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|&v| v == 0.0));
    for scheme in ["nf4-g16", "kmeans-g16"] {
        let zero = Tensor::zeros((16, 32), DType::F32, &Device::Cpu).unwrap();
        let zeros = QLinear::new(&zero, None, scheme.parse().unwrap()).unwrap();
        let y = zeros.forward(&randn(&[3, 32], 1.0, 12)).unwrap();
        assert!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().all(|&v| v == 0.0), "{scheme}");
        let mut nan = vec![0.1f32; 16 * 32];
        nan[100] = f32::NAN;
        let nan = Tensor::from_vec(nan, (16, 32), &Device::Cpu).unwrap();
        let err = QLinear::new(&nan, None, scheme.parse().unwrap()).unwrap_err().to_string();
        assert!(err.contains("non-finite value (NaN) at flat index 100"), "{scheme}: {err}");
    }
    let err = QLinear::new(&w, None, "nf4-g24".parse().unwrap()).unwrap_err();
    assert!(err.to_string().contains("multiple of 16"), "{err}");
}

#[test]
fn memory_is_within_ten_percent_of_the_quantized_bytes() {
    let w = randn(&[384, 384], 0.05, 13);
    for (scheme, weight_scheme) in [
        (LayerScheme::w8a8(), LinearScheme::symmetric(Bits::B8, Granularity::PerChannel { dim: 0 }).into()),
        (LayerScheme::weight(Bits::B4), LinearScheme::symmetric(Bits::B4, Granularity::PerGroup { size: 32 }).into()),
        (
            LayerScheme::Weight { bits: Bits::B4, group: 32, symmetric: false },
            Scheme::MinMax { bits: Bits::B4, group_size: 32 },
        ),
        (LayerScheme::weight(Bits::B2), LinearScheme::symmetric(Bits::B2, Granularity::PerGroup { size: 32 }).into()),
        (
            LayerScheme::Codebook { codebook: Codebook::KMeans, group: 64 },
            Scheme::Codebook { codebook: Codebook::KMeans, group_size: 64 },
        ),
    ] {
        let layer = QLinear::new(&w, None, scheme).unwrap();
        let quantized = QTensor::quantize(&w, weight_scheme).unwrap().storage_bytes();
        let ratio = layer.storage_bytes() as f64 / quantized as f64;
        assert!(ratio <= 1.10, "{scheme}: {} bytes vs {quantized} quantized ({ratio:.3})", layer.storage_bytes());
        assert!(layer.storage_bytes() < 384 * 384 * 4 / 3, "{scheme} keeps no f32 weights");
    }
}

#[test]
fn from_qtensor_equals_quantizing_in_the_layer() {
    let w = randn(&[40, 64], 0.1, 14);
    let x = randn(&[3, 64], 1.0, 15);
    let q = QTensor::quantize(&w, LinearScheme::symmetric(Bits::B4, Granularity::PerGroup { size: 32 })).unwrap();
    let a = QLinear::from_qtensor(&q, None, LayerScheme::weight(Bits::B4), 32).unwrap();
    let b = QLinear::new(&w, None, LayerScheme::weight(Bits::B4)).unwrap();
    assert_eq!(a.forward(&x).unwrap().to_vec2::<f32>().unwrap(), b.forward(&x).unwrap().to_vec2::<f32>().unwrap());
}

#[test]
fn qconv2d_matches_candle_conv2d() {
    let configs = [
        (Conv2dConfig::default(), 3),
        (Conv2dConfig { padding: 1, stride: 2, ..Default::default() }, 3),
        (Conv2dConfig { padding: 2, dilation: 2, ..Default::default() }, 3),
        (Conv2dConfig { padding: 1, groups: 2, ..Default::default() }, 3),
        (Conv2dConfig::default(), 1),
    ];
    for (i, (config, ksize)) in configs.into_iter().enumerate() {
        let (cin, cout) = (8, 12);
        let w = randn(&[cout, cin / config.groups, ksize, ksize], 0.1, 20 + i as u64);
        let b = randn(&[cout], 0.1, 30 + i as u64);
        let x = randn(&[2, cin, 9, 11], 1.0, 40 + i as u64);
        let reference = Conv2d::new(w.clone(), Some(b.clone()), config).forward(&x).unwrap();
        for scheme in [
            LayerScheme::w8a8(),
            LayerScheme::w8a8_per_row(),
            LayerScheme::W8A8 { act_block: 16, weight_per_block: false },
            LayerScheme::F32,
        ] {
            let layer = QConv2d::new(&w, Some(&b), config, scheme).unwrap();
            let y = layer.forward(&x).unwrap();
            assert_eq!(y.dims(), reference.dims(), "{config:?}");
            let err = relative_error(&y, &reference);
            let Conv2dConfig { padding, stride, dilation, groups, .. } = config;
            println!(
                "conv {ksize}x{ksize} padding {padding} stride {stride} dilation {dilation} groups {groups}, {scheme}: \
                 relative error vs candle_nn::Conv2d {err:.5}"
            );
            assert!(err < 0.01, "{config:?} {scheme}: relative error {err}");
            if scheme != LayerScheme::F32 {
                // candle's convolution on the same quantized weights in f16 (the path of GPU devices) follows the
                // integer kernels within their activation quantization.
                let candle = QConv2d::on_candle(&w, Some(&b), config, scheme).unwrap();
                assert_eq!(candle.storage_bytes(), 2 * w.elem_count() + 4 * cout, "f16 weights, f32 bias");
                let z = candle.forward(&x).unwrap();
                let (to_kernels, to_float) = (relative_error(&z, &y), relative_error(&z, &reference));
                assert!(to_kernels < 0.01 && to_float < 0.01, "{config:?} {scheme}: {to_kernels} / {to_float}");
            }
        }
    }
}

#[test]
fn qconv2d_bad_input_is_an_error() {
    let w = randn(&[4, 3, 3, 3], 0.1, 50);
    let layer = QConv2d::new(&w, None, Conv2dConfig::default(), LayerScheme::w8a8()).unwrap();
    assert!(layer.forward(&randn(&[1, 2, 8, 8], 1.0, 51)).unwrap_err().to_string().contains("in_channels"));
    assert!(layer
        .forward(&randn(&[1, 3, 2, 8], 1.0, 52))
        .unwrap_err()
        .to_string()
        .contains("smaller than the dilated kernel"));
    let bad = Conv2dConfig { groups: 3, ..Default::default() };
    assert!(QConv2d::new(&w, None, bad, LayerScheme::w8a8()).is_err());
}

#[test]
fn scheme_names_round_trip() {
    for name in [
        "f32",
        "w8a8-b64",
        "w8a8-b32-pb",
        "w8a8-row",
        "w8a8-static",
        "int8-g32",
        "int4-g32",
        "int4-g128-asym",
        "int2-g64",
        "nf4-g64",
        "nf4-g32",
        "kmeans-g64",
        "kmeans-g128",
    ] {
        let scheme: LayerScheme = name.parse().unwrap();
        assert_eq!(scheme.to_string(), name);
    }
    assert_eq!("int8".parse::<LayerScheme>().unwrap(), LayerScheme::w8a8());
    assert_eq!("w8a8-row".parse::<LayerScheme>().unwrap(), LayerScheme::w8a8_per_row());
    assert_eq!("w8a8-b32768".parse::<LayerScheme>().unwrap().to_string(), "w8a8-row");
    assert_eq!("int4".parse::<LayerScheme>().unwrap(), LayerScheme::weight(Bits::B4));
    assert_eq!("FP32".parse::<LayerScheme>().unwrap(), LayerScheme::F32);
    assert_eq!("nf4".parse::<LayerScheme>().unwrap(), LayerScheme::Codebook { codebook: Codebook::Nf4, group: 64 });
    assert_eq!("KMeans".parse::<LayerScheme>().unwrap().to_string(), "kmeans-g64");
    for bad in ["int3", "int4-x", "w8a8-b", "int4-g0", "", "nf5", "nf4-g64-asym", "kmeans-x", "nf4-g0"] {
        assert!(bad.parse::<LayerScheme>().unwrap_err().to_string().contains("scheme"), "{bad}");
    }
}
