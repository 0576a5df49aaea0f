//! Our quantized weights as ggml blocks (`qlayers::quant::ggml`): for every scheme a ggml format holds exactly, the
//! blocks dequantize with candle's own code to the same bits as our layer's weights, and candle's `QMatMul` on them
//! gives our layer's outputs within the error of the two engines' activation quantization; the other schemes have
//! no ggml form. Random shapes with M = 1, odd N and several blocks.

mod common;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use qlayers::quant::ggml::{ggml_form, to_ggml};
use qlayers::{Bits, Codebook, LayerScheme, QLinear, QTensor};
use rand::{Rng, SeedableRng};

/// `n` x `k` uniform values in `[-1, 1)` and `m` x `k` inputs, from `seed`.
fn operands(n: usize, k: usize, m: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut values = |count: usize| (0..count).map(|_| rng.random_range(-1f32..1.0)).collect::<Vec<f32>>();
    (values(n * k), values(m * k))
}

/// The weights a layer of `scheme` multiplies by, quantized from `w`: weight-only layers keep their parameters in
/// f16; the W8A8 ones here get f16 scales too (per channel, a scale a ggml block can hold).
fn held_weights(w: &[f32], n: usize, k: usize, scheme: LayerScheme) -> QTensor {
    let weight = Tensor::from_slice(w, (n, k), &Device::Cpu).unwrap();
    let (weight_scheme, _) = scheme.weight_scheme(k).unwrap().unwrap();
    let q = QTensor::quantize(&weight, weight_scheme).unwrap();
    if scheme.half_params() {
        return q.with_f16_params();
    }
    let scales = q.scales().iter().map(|&s| half::f16::from_f32(s).to_f32()).collect();
    QTensor::from_parts(q.shape().to_vec(), *q.scheme(), scales, q.zero_points().to_vec(), q.packed_codes().to_vec())
        .unwrap()
}

#[test]
fn exact_schemes_become_ggml_blocks_with_the_same_weights_and_products() {
    let cases = [
        (LayerScheme::Weight { bits: Bits::B8, group: 32, symmetric: true }, GgmlDType::Q8_0),
        (LayerScheme::Weight { bits: Bits::B4, group: 32, symmetric: true }, GgmlDType::Q4_0),
        (LayerScheme::Weight { bits: Bits::B4, group: 32, symmetric: false }, GgmlDType::Q4_1),
        (LayerScheme::w8a8(), GgmlDType::Q8_0),
        (LayerScheme::w8a8_per_row(), GgmlDType::Q8_0),
        (LayerScheme::W8A8 { act_block: 32, weight_per_block: true }, GgmlDType::Q8_0),
    ];
    let mut seed = 0;
    for (scheme, dtype) in cases {
        for (n, k, m) in [(1, 32, 1), (7, 96, 1), (33, 160, 3), (9, 64, 1), (64, 256, 17), (5, 2048, 2)] {
            seed += 1;
            let (w, x) = operands(n, k, m, seed);
            let held = held_weights(&w, n, k, scheme);
            if dtype == GgmlDType::Q4_1 && (k / 32) % 2 == 1 {
                // candle's Q4_1 dot product pairs its blocks: an odd count has no form.
                assert_eq!(ggml_form(&held), None, "{scheme} {n}x{k}");
                continue;
            }
            assert_eq!(ggml_form(&held), Some(dtype), "{scheme} {n}x{k}");
            let blocks = to_ggml(&held, &Device::Cpu).unwrap().expect("an exact form");
            assert_eq!(blocks.dtype(), dtype);
            // candle's own dequantization gives our layer's weights, bit for bit.
            let theirs = blocks.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let weights = held.dequantize_f32();
            let differ = weights.iter().zip(&theirs).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{scheme} {n}x{k}: {differ} weights differ");
            // candle's quantized matmul against our layer, within the two activation quantizations' reach.
            let (_, block) = scheme.weight_scheme(k).unwrap().unwrap();
            let layer = QLinear::from_qtensor(&held, None, scheme, block).unwrap();
            let ours = layer.forward_f32(&x, m).unwrap();
            let input = Tensor::from_slice(&x, (m, k), &Device::Cpu).unwrap();
            let theirs = QMatMul::from_qtensor(blocks).unwrap().forward(&input).unwrap();
            let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let act_block = match scheme {
                LayerScheme::W8A8 { act_block, .. } => act_block.min(k),
                _ => 32,
            };
            for row in 0..m {
                for col in 0..n {
                    let (a, b) = (ours[row * n + col], theirs[row * n + col]);
                    let limit = common::activation_bound(&weights[col * k..][..k], &x[row * k..][..k], act_block);
                    assert!((a - b).abs() <= limit, "{scheme} {m}x{k}x{n} ({row}, {col}): {a} vs {b}, bound {limit}");
                }
            }
        }
    }
}

#[test]
fn other_schemes_have_no_ggml_form() {
    let (n, k) = (8, 128);
    let (w, _) = operands(n, k, 1, 99);
    let weight = Tensor::from_slice(&w, (n, k), &Device::Cpu).unwrap();
    let inexact = [
        LayerScheme::Weight { bits: Bits::B4, group: 64, symmetric: true },
        LayerScheme::Weight { bits: Bits::B8, group: 16, symmetric: true },
        LayerScheme::Weight { bits: Bits::B2, group: 32, symmetric: false },
        LayerScheme::Codebook { codebook: Codebook::Nf4, group: 32 },
        LayerScheme::Codebook { codebook: Codebook::KMeans, group: 32 },
        // f32 per-channel scales: a ggml block's f16 cannot hold them.
        LayerScheme::w8a8(),
    ];
    for scheme in inexact {
        let (weight_scheme, _) = scheme.weight_scheme(k).unwrap().unwrap();
        let q = QTensor::quantize(&weight, weight_scheme).unwrap();
        assert_eq!(ggml_form(&q), None, "{scheme}");
        assert!(to_ggml(&q, &Device::Cpu).unwrap().is_none(), "{scheme}");
    }
    // A last dimension that is not a whole number of blocks.
    assert_eq!(ggml_form(&held_weights(&w[..n * 48], n, 48, LayerScheme::w8a8())), None);
}
