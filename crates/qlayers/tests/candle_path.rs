//! Layers on candle's own kernels (`QLinear::on_candle`), the path every layer takes on a device other than the
//! CPU, checked here on the CPU: ggml blocks through candle's quantized matmul where a format holds the scheme
//! exactly, within the activation quantizations' reach of our CPU layer; the other schemes as f16 weights, within
//! f16's rounding of the exact product; smoothing, bias, batched shapes and bad input on both. Random shapes with
//! M = 1 and odd N.

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Module, Tensor};
use qlayers::{Bits, Codebook, LayerPath, LayerScheme, QLinear, QTensor};
use rand::{Rng, SeedableRng};

/// `count` uniform values in `[lo, hi)` from `rng`.
fn uniform(rng: &mut rand::rngs::StdRng, count: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..count).map(|_| rng.random_range(lo..hi)).collect()
}

/// `w` (`[n, k]`) quantized per `scheme` as a layer of it holds its weights: f16 parameters for weight-only
/// schemes.
fn quantized(w: &[f32], n: usize, k: usize, scheme: LayerScheme) -> QTensor {
    let weight = Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap();
    let (weight_scheme, _) = scheme.weight_scheme(k).unwrap().unwrap();
    let q = QTensor::quantize(&weight, weight_scheme).unwrap();
    if scheme.half_params() {
        q.with_f16_params()
    } else {
        q
    }
}

/// Rounding both operands to f16 moves `x . w` by at most about two f16 half-ulps of each product.
fn f16_bound(w: &[f32], x: &[f32]) -> f32 {
    1.1e-3 * w.iter().zip(x).map(|(w, x)| (w * x).abs()).sum::<f32>() + 1e-6
}

/// `x . w` in f64.
fn dot(w: &[f32], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64).sum::<f64>() as f32
}

const SHAPES: [(usize, usize, usize); 5] = [(1, 64, 1), (7, 128, 1), (33, 192, 3), (9, 256, 5), (64, 512, 2)];

#[test]
fn exact_schemes_run_as_ggml_blocks_near_our_cpu_layer() {
    let cases = [
        (LayerScheme::Weight { bits: Bits::B8, group: 32, symmetric: true }, GgmlDType::Q8_0),
        (LayerScheme::Weight { bits: Bits::B4, group: 32, symmetric: true }, GgmlDType::Q4_0),
        (LayerScheme::Weight { bits: Bits::B4, group: 32, symmetric: false }, GgmlDType::Q4_1),
        // A W8A8 layer's per-channel scales, rounded to f16, fit Q8_0.
        (LayerScheme::w8a8_per_row(), GgmlDType::Q8_0),
        (LayerScheme::w8a8(), GgmlDType::Q8_0),
        (LayerScheme::W8A8 { act_block: 32, weight_per_block: true }, GgmlDType::Q8_0),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (scheme, dtype) in cases {
        for (n, k, m) in SHAPES {
            let (w, x, b) = (
                uniform(&mut rng, n * k, -1.0, 1.0),
                uniform(&mut rng, m * k, -1.0, 1.0),
                uniform(&mut rng, n, -1.0, 1.0),
            );
            let bias = Tensor::from_slice(&b, n, &Device::Cpu).unwrap();
            let q = quantized(&w, n, k, scheme);
            let layer = QLinear::on_candle(&q, Some(&bias), scheme, &Device::Cpu).unwrap();
            assert_eq!(layer.path(), LayerPath::GgmlBlocks(dtype), "{scheme}");
            let (_, block) = scheme.weight_scheme(k).unwrap().unwrap();
            let cpu = QLinear::from_qtensor(&q, Some(&bias), scheme, block).unwrap();
            assert!(matches!(cpu.path(), LayerPath::Kernels(_)));
            let (ours, theirs) = (cpu.forward_f32(&x, m).unwrap(), layer.forward_f32(&x, m).unwrap());
            // The blocks' weights: the CPU layer's for weight-only schemes (f16 parameters); a W8A8 layer's f32
            // scales round to f16 in them, which moves each weight by less than f16's rounding.
            let weights = q.with_f16_params().dequantize_f32();
            let act_block = match scheme {
                LayerScheme::W8A8 { act_block, .. } => act_block.min(k),
                _ => 32,
            };
            for row in 0..m {
                for col in 0..n {
                    let (wr, xr) = (&weights[col * k..][..k], &x[row * k..][..k]);
                    let limit = common::activation_bound(wr, xr, act_block) + f16_bound(wr, xr);
                    let (a, t) = (ours[row * n + col], theirs[row * n + col]);
                    assert!((a - t).abs() <= limit, "{scheme} {m}x{k}x{n} ({row}, {col}): {a} vs {t}, bound {limit}");
                }
            }
        }
    }
}

#[test]
fn other_schemes_run_as_f16_weights_near_the_exact_product() {
    let schemes = [
        LayerScheme::W8A8 { act_block: 64, weight_per_block: true },
        LayerScheme::Weight { bits: Bits::B4, group: 64, symmetric: true },
        LayerScheme::Weight { bits: Bits::B2, group: 32, symmetric: false },
        LayerScheme::Codebook { codebook: Codebook::Nf4, group: 32 },
        LayerScheme::Codebook { codebook: Codebook::KMeans, group: 32 },
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for scheme in schemes {
        // Blocks of 64 over K = 64 are one scale per row, which Q8_0 holds: longer rows only.
        for (n, k, m) in SHAPES.into_iter().filter(|&(_, k, _)| k > 64) {
            let (w, x) = (uniform(&mut rng, n * k, -1.0, 1.0), uniform(&mut rng, m * k, -1.0, 1.0));
            let q = quantized(&w, n, k, scheme);
            let layer = QLinear::on_candle(&q, None, scheme, &Device::Cpu).unwrap();
            assert_eq!(layer.path(), LayerPath::DequantizedF16, "{scheme}");
            assert_eq!(layer.storage_bytes(), 2 * n * k, "{scheme}: f16 weights");
            let theirs = layer.forward_f32(&x, m).unwrap();
            // The CPU layer's weights, exactly.
            let weights = q.dequantize_f32();
            for row in 0..m {
                for col in 0..n {
                    let (wr, xr) = (&weights[col * k..][..k], &x[row * k..][..k]);
                    let (exact, t) = (dot(wr, xr), theirs[row * n + col]);
                    let limit = f16_bound(wr, xr);
                    assert!((exact - t).abs() <= limit, "{scheme} {m}x{k}x{n} ({row}, {col}): {exact} vs {t}");
                }
            }
        }
    }
}

#[test]
fn smoothing_and_batched_inputs_follow_the_cpu_layer() {
    let scheme = LayerScheme::w8a8_per_row();
    let (n, k) = (24, 96);
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let (w, x) = (uniform(&mut rng, n * k, -1.0, 1.0), uniform(&mut rng, 6 * k, -1.0, 1.0));
    let scale = uniform(&mut rng, k, 0.25, 4.0);
    let q = quantized(&w, n, k, scheme);
    let cpu = QLinear::from_qtensor(&q, None, scheme, k).unwrap().with_input_scale(scale.clone()).unwrap();
    let layer = QLinear::on_candle(&q, None, scheme, &Device::Cpu).unwrap().with_input_scale(scale.clone()).unwrap();
    assert_eq!(layer.input_scale(), Some(scale.as_slice()));
    let (ours, theirs) = (cpu.forward_f32(&x, 6).unwrap(), layer.forward_f32(&x, 6).unwrap());
    let weights = q.with_f16_params().dequantize_f32();
    for row in 0..6 {
        let scaled: Vec<f32> = x[row * k..][..k].iter().zip(&scale).map(|(x, s)| x * s).collect();
        for col in 0..n {
            let wr = &weights[col * k..][..k];
            let limit = common::activation_bound(wr, &scaled, k) + f16_bound(wr, &scaled);
            let (a, t) = (ours[row * n + col], theirs[row * n + col]);
            assert!((a - t).abs() <= limit, "({row}, {col}): {a} vs {t}, bound {limit}");
        }
    }
    // A [2, 3, k] f16 input gives the rows' results, in f16.
    let batched = Tensor::from_slice(&x, (2, 3, k), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
    let y = layer.forward(&batched).unwrap();
    assert_eq!((y.dims(), y.dtype()), (&[2, 3, n][..], DType::F16));
    let rows = Tensor::from_slice(&x, (6, k), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
    let expected = layer.forward(&rows).unwrap().flatten_all().unwrap().to_vec1::<half::f16>().unwrap();
    assert_eq!(y.flatten_all().unwrap().to_vec1::<half::f16>().unwrap(), expected);
}

#[test]
fn bad_input_and_float_schemes_are_errors() {
    let scheme = LayerScheme::Weight { bits: Bits::B8, group: 32, symmetric: true };
    let q = quantized(&[0.5; 4 * 64], 4, 64, scheme);
    let layer = QLinear::on_candle(&q, None, scheme, &Device::Cpu).unwrap();
    assert!(layer.forward_f32(&[0.0; 63], 1).is_err(), "input not a whole row");
    assert!(layer.forward(&Tensor::zeros((2, 63), DType::F32, &Device::Cpu).unwrap()).is_err());
    assert!(layer.clone().with_input_scale(vec![1.0; 63]).is_err(), "an input scale per feature");
    assert!(layer.with_input_scale(vec![-1.0; 64]).is_err(), "positive factors");
    let bias = Tensor::zeros(5, DType::F32, &Device::Cpu).unwrap();
    assert!(QLinear::on_candle(&q, Some(&bias), scheme, &Device::Cpu).is_err(), "a bias per output");
    assert!(QLinear::on_candle(&q, None, LayerScheme::F32, &Device::Cpu).is_err(), "f32 has no codes");
    // On the CPU the device-aware constructor keeps the kernels.
    let cpu = QLinear::from_qtensor_on(&q, None, scheme, 32, &Device::Cpu).unwrap();
    assert!(matches!(cpu.path(), LayerPath::Kernels(_)) && cpu.device().is_cpu());
}
