//! Property tests: error bounds of every scheme, and lossless packing.

use proptest::prelude::*;
use qlayers::nf4::NF4_LEVELS;
use qlayers::{pack, Bits, Codebook, Granularity, LinearScheme, QTensor, Scheme};

/// A random 2-D tensor with a last dimension that 4, 8 and 16 divide, and values over several magnitudes.
fn matrix() -> impl Strategy<Value = (Vec<usize>, Vec<f32>)> {
    (1usize..6, 1usize..5, -3i32..3).prop_flat_map(|(rows, col_blocks, exp)| {
        let shape = vec![rows, col_blocks * 16];
        let magnitude = 10f32.powi(exp);
        (Just(shape), prop::collection::vec(-1f32..1f32, rows * col_blocks * 16))
            .prop_map(move |(shape, v)| (shape, v.into_iter().map(|x| x * magnitude).collect()))
    })
}

fn bits() -> impl Strategy<Value = Bits> {
    prop_oneof![Just(Bits::B2), Just(Bits::B4), Just(Bits::B8)]
}

fn granularity() -> impl Strategy<Value = Granularity> {
    prop_oneof![
        Just(Granularity::PerTensor),
        Just(Granularity::PerChannel { dim: 0 }),
        Just(Granularity::PerChannel { dim: 1 }),
        Just(Granularity::PerGroup { size: 4 }),
        Just(Granularity::PerGroup { size: 16 }),
    ]
}

fn linear_scheme() -> impl Strategy<Value = LinearScheme> {
    (bits(), granularity(), 0..3).prop_map(|(bits, g, kind)| match kind {
        0 => LinearScheme::symmetric(bits, g),
        1 => LinearScheme::asymmetric(bits, g),
        _ => LinearScheme::asymmetric_unsigned(bits, g),
    })
}

/// Index of the parameter slot of element `i` of a `shape` tensor.
fn slot(i: usize, shape: &[usize], g: Granularity) -> usize {
    match g {
        Granularity::PerTensor => 0,
        Granularity::PerChannel { dim: 0 } => i / shape[1],
        Granularity::PerChannel { .. } => i % shape[1],
        Granularity::PerGroup { size } => i / size,
    }
}

/// Half a quantization step plus the rounding of the f32 arithmetic: `x * (1 / scale)` and `(q - z) * scale` each
/// round once, by up to an epsilon of the values involved (with 255 steps, that is up to 1.5e-5 of a step).
fn half_step(scale: f32, x: f32, x_hat: f32) -> f32 {
    scale * 0.5 + 2.0 * f32::EPSILON * (x.abs() + x_hat.abs()) + f32::MIN_POSITIVE
}

proptest! {
    #[test]
    fn round_trip_error_is_at_most_half_a_step((shape, x) in matrix(), scheme in linear_scheme()) {
        let q = QTensor::quantize_f32(&x, &shape, scheme).unwrap();
        let (qmin, qmax) = scheme.range.bounds(scheme.bits);
        let (codes, x_hat) = (q.codes(), q.dequantize_f32());
        for i in 0..x.len() {
            let c = slot(i, &shape, scheme.granularity);
            let (scale, zp) = (q.scales()[c], q.zero_points()[c]);
            prop_assert!((qmin..=qmax).contains(&codes[i]));
            let unclamped = (x[i] / scale).round() as i64 + i64::from(zp);
            if unclamped > i64::from(qmin) && unclamped < i64::from(qmax) {
                let err = (x[i] - x_hat[i]).abs();
                prop_assert!(err <= half_step(scale, x[i], x_hat[i]), "err {err} > scale/2 = {} at {i}", scale / 2.0);
            }
        }
    }

    #[test]
    fn symmetric_codes_never_clamp((shape, x) in matrix(), bits in bits(), g in granularity()) {
        // Symmetric scales put max|x| exactly on qmax, so every value is inside the clamp range.
        let q = QTensor::quantize_f32(&x, &shape, LinearScheme::symmetric(bits, g)).unwrap();
        let x_hat = q.dequantize_f32();
        for i in 0..x.len() {
            let scale = q.scales()[slot(i, &shape, g)];
            prop_assert!((x[i] - x_hat[i]).abs() <= half_step(scale, x[i], x_hat[i]));
        }
    }

    #[test]
    fn nf4_error_is_at_most_half_the_widest_level_gap((shape, x) in matrix()) {
        let q = QTensor::quantize_f32(&x, &shape, Scheme::Nf4 { block_size: 16 }).unwrap();
        let widest = NF4_LEVELS.windows(2).map(|w| w[1] - w[0]).fold(0f32, f32::max);
        let x_hat = q.dequantize_f32();
        for i in 0..x.len() {
            let absmax = q.scales()[i / 16];
            prop_assert!((x[i] - x_hat[i]).abs() <= absmax * widest * 0.5 * (1.0 + 1e-5));
        }
    }

    #[test]
    fn codebook_error_is_at_most_half_the_widest_gap(
        (shape, x) in matrix(), codebook in prop_oneof![Just(Codebook::Nf4), Just(Codebook::KMeans)],
    ) {
        // Every value lies within [-absmax, absmax] = [-127, 127] steps: its nearest level is at most half the widest
        // gap between levels away, or as far as the outermost level is from the end.
        let q = QTensor::quantize_f32(&x, &shape, Scheme::Codebook { codebook, group_size: 16 }).unwrap();
        let levels = q.levels().unwrap().map(f32::from);
        let widest = levels.windows(2).map(|w| (w[1] - w[0]) * 0.5).fold(127.0 - levels[15], f32::max).max(levels[0] + 127.0);
        let x_hat = q.dequantize_f32();
        for i in 0..x.len() {
            let scale = q.scales()[i / 16];
            prop_assert_eq!(x_hat[i], scale * levels[q.codes()[i] as usize]);
            prop_assert!((x[i] - x_hat[i]).abs() <= scale * widest * (1.0 + 1e-5) + f32::MIN_POSITIVE);
        }
        let rebuilt = QTensor::from_codebook_parts(
            q.shape().to_vec(), codebook, 16, *q.levels().unwrap(), q.scales().to_vec(), q.packed_codes().to_vec(),
        ).unwrap();
        prop_assert_eq!(rebuilt, q);
    }

    #[test]
    fn min_max_error_is_at_most_half_a_step((shape, x) in matrix(), bits in bits(), size in prop_oneof![Just(4usize), Just(16)]) {
        let q = QTensor::quantize_f32(&x, &shape, Scheme::MinMax { bits, group_size: size }).unwrap();
        let x_hat = q.dequantize_f32();
        for i in 0..x.len() {
            let (scale, min) = (q.scales()[i / size], q.mins()[i / size]);
            prop_assert!(x_hat[i] >= min && q.codes()[i] < 1 << bits.count());
            prop_assert!((x[i] - x_hat[i]).abs() <= half_step(scale, x[i] - min, x_hat[i] - min) + f32::EPSILON * min.abs());
        }
        let rebuilt = QTensor::from_min_max_parts(
            q.shape().to_vec(), bits, size, q.scales().to_vec(), q.mins().to_vec(), q.packed_codes().to_vec(),
        ).unwrap();
        prop_assert_eq!(rebuilt, q);
    }

    #[test]
    fn values_on_a_min_max_grid_requantize_without_loss(
        (shape, x) in matrix(), bits in bits(), size in prop_oneof![Just(4usize), Just(16)],
    ) {
        // What a Q4_1 GGUF weight is: codes times a scale plus a minimum, per group.
        let once = QTensor::quantize_f32(&x, &shape, Scheme::MinMax { bits, group_size: size }).unwrap();
        let grid = once.dequantize_f32();
        let twice = QTensor::quantize_f32(&grid, &shape, Scheme::MinMax { bits, group_size: size }).unwrap();
        prop_assert_eq!(twice.codes(), once.codes());
        prop_assert_eq!(twice.mins(), once.mins());
        // Equal up to the f32 rounding of the scale, relative to the group's range.
        for (i, (a, b)) in twice.dequantize_f32().iter().zip(&grid).enumerate() {
            let (min, scale) = (once.mins()[i / size], once.scales()[i / size]);
            let range = min.abs() + scale * ((1 << bits.count()) - 1) as f32;
            prop_assert!((a - b).abs() <= 4.0 * f32::EPSILON * range + f32::MIN_POSITIVE, "{a} vs {b}");
        }
    }

    #[test]
    fn pack_unpack_round_trips(bits in bits(), raw in prop::collection::vec(any::<u8>(), 0..200)) {
        let mask = ((1u16 << bits.count()) - 1) as u8;
        let values: Vec<u8> = raw.iter().map(|v| v & mask).collect();
        let packed = pack::pack(&values, bits).unwrap();
        prop_assert_eq!(packed.len(), pack::packed_len(values.len(), bits));
        prop_assert_eq!(pack::unpack(&packed, bits, values.len()).unwrap(), values);
    }

    #[test]
    fn packed_codes_rebuild_the_same_tensor((shape, x) in matrix(), scheme in linear_scheme()) {
        let q = QTensor::quantize_f32(&x, &shape, scheme).unwrap();
        let rebuilt = QTensor::from_parts(
            q.shape().to_vec(), *q.scheme(), q.scales().to_vec(), q.zero_points().to_vec(), q.packed_codes().to_vec(),
        ).unwrap();
        prop_assert_eq!(rebuilt, q);
    }
}

#[test]
fn documented_packing_example() {
    assert_eq!(pack::pack(&[1, 0, 3, 2], Bits::B2).unwrap(), vec![177]);
    assert_eq!(pack::pack(&[1, 2, 3], Bits::B4).unwrap(), vec![0x21, 0x03]);
}

#[test]
fn four_bit_signed_codes_sign_extend() {
    let x = [-1.0f32, -0.6, 0.0, 0.6, 1.0, -0.9, 0.3, 0.1];
    let q = QTensor::quantize_f32(&x, &[8], LinearScheme::symmetric(Bits::B4, Granularity::PerTensor)).unwrap();
    assert_eq!(q.codes(), vec![-7, -4, 0, 4, 7, -6, 2, 1]);
    assert_eq!(q.packed_codes().len(), 4);
}

/// A case proptest found: -0.0056697717 sits almost exactly half-way between two int8 steps of the column whose
/// absmax is 0.007385242, so its error is scale/2 up to the f32 rounding that `half_step` allows.
#[test]
fn a_value_half_way_between_two_steps() {
    let mut x = vec![0f32; 3 * 32];
    x[28] = -0.007_385_242;
    x[92] = -0.005_669_771_7;
    let scheme = LinearScheme::symmetric(Bits::B8, Granularity::PerChannel { dim: 1 });
    let q = QTensor::quantize_f32(&x, &[3, 32], scheme).unwrap();
    let x_hat = q.dequantize_f32();
    let scale = q.scales()[28];
    assert!((x[92] - x_hat[92]).abs() > scale * 0.5 * (1.0 + 1e-5), "no longer the boundary case");
    assert!((x[92] - x_hat[92]).abs() <= half_step(scale, x[92], x_hat[92]));
}
