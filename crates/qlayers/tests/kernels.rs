//! One harness for every kernel level: each is checked bit for bit against a scalar model of the integer formula,
//! on random shapes that include M = 1, odd K and N, and sizes that are not multiples of the tiles, for every code
//! width and for 4-bit codes looked up in random tables.

use qlayers::kernels::{FloatWeights, Isa, PackedWeights, WeightCodes};
use qlayers::{Activation, Bits};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A random integer weight matrix with its parameters.
struct Case {
    n: usize,
    k: usize,
    bits: Bits,
    block: usize,
    per_block: bool,
    codes: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
    /// Per-block float minimums, or empty.
    mins: Vec<f32>,
    /// Per-block scales and minimums kept in f16.
    half_params: bool,
    /// The 8-bit code of each 4-bit code, or `None`.
    lookup: Option<[u8; 16]>,
    bias: Option<Vec<f32>>,
}

/// Shapes `(m, k, n)`: M = 1, odd K and N, sizes that are not multiples of the tiles.
const SHAPES: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (1, 17, 33),
    (1, 384, 100),
    (2, 31, 5),
    (3, 64, 47),
    (5, 129, 31),
    (9, 100, 17),
    (17, 48, 64),
    (33, 3, 15),
    (64, 256, 96),
];

impl Case {
    fn random(rng: &mut StdRng, n: usize, k: usize, bits: Bits, block: usize, per_block: bool) -> Self {
        let levels = 1u32 << bits.count();
        let blocks = k.div_ceil(block.min(k));
        let params = if per_block { n * blocks } else { n };
        Case {
            n,
            k,
            bits,
            block,
            per_block,
            codes: (0..n * k).map(|_| rng.random_range(0..levels) as u8).collect(),
            // Stored scales carry a sign (llama.cpp's Q4_0 divides by the signed extreme).
            scales: (0..params)
                .map(|_| rng.random_range(0.001f32..0.1) * if rng.random_bool(0.3) { -1.0 } else { 1.0 })
                .collect(),
            zero_points: (0..params).map(|_| rng.random_range(0..levels) as i32).collect(),
            mins: Vec::new(),
            half_params: false,
            lookup: None,
            bias: rng.random_bool(0.5).then(|| (0..n).map(|_| rng.random_range(-1f32..1.0)).collect()),
        }
    }

    fn codes(&self) -> WeightCodes<'_> {
        WeightCodes {
            n: self.n,
            k: self.k,
            bits: self.bits,
            block: self.block,
            per_block: self.per_block,
            codes: &self.codes,
            scales: &self.scales,
            zero_points: &self.zero_points,
            mins: &self.mins,
            half_params: self.half_params,
            lookup: self.lookup.as_ref(),
        }
    }

    /// The code the kernels multiply for stored code `code`: itself, or its entry in the lookup table.
    fn code(&self, code: u8) -> i64 {
        i64::from(self.lookup.map_or(code, |table| table[usize::from(code)]))
    }

    /// A per-block scale or minimum as the kernels see it: rounded to f16 when the parameters are kept in f16.
    fn param(&self, v: f32) -> f32 {
        if self.half_params && self.per_block {
            half::f16::from_f32(v).to_f32()
        } else {
            v
        }
    }

    /// 4-bit codes looked up in a random table of 8-bit codes (with both extremes, 0 and 255), with random 8-bit
    /// zero points.
    fn with_lookup(mut self, rng: &mut StdRng) -> Self {
        let mut table: [u8; 16] = std::array::from_fn(|_| rng.random());
        table[rng.random_range(0..8)] = 0;
        table[rng.random_range(8..16)] = 255;
        self.lookup = Some(table);
        self.zero_points.iter_mut().for_each(|z| *z = rng.random_range(0..256));
        self
    }

    /// Min-max weights (`code * scale + min`, as int4 asymmetric layers hold): zero points 0, random minimums.
    fn with_mins(mut self, rng: &mut StdRng) -> Self {
        self.zero_points.iter_mut().for_each(|z| *z = 0);
        self.mins = (0..self.scales.len()).map(|_| rng.random_range(-0.5f32..0.1)).collect();
        self
    }

    /// The formula in plain scalar code: activations per row and block to `[-127, 127]`, exact integer dots,
    /// then the float steps in the kernels' order (fused multiply-adds, minimums after each block's dot product,
    /// per-column scales applied at the end).
    fn expected(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.expected_from(x, m, |row, part| {
            let absmax = row[part.clone()].iter().fold(0f32, |a, v| a.max(v.abs()));
            let inv = if absmax > 0.0 { 127.0 / absmax } else { 0.0 };
            let codes = part.map(|i| (row[i] * inv).round_ties_even().clamp(-127.0, 127.0) as i32).collect();
            (codes, absmax / 127.0)
        })
    }

    /// The formula with static activations: every block's scale is `step`, codes
    /// `round(clamp(x * f_j, -127, 127))` with `f_j = input_scale_j / step` (or `1 / step`).
    fn expected_static(&self, x: &[f32], m: usize, step: f32, input_scale: Option<&[f32]>) -> Vec<f32> {
        let factors: Vec<f32> = match input_scale {
            Some(scale) => scale.iter().map(|s| s / step).collect(),
            None => vec![1.0 / step; self.k],
        };
        self.expected_from(x, m, |row, part| {
            let codes = part.map(|i| (row[i] * factors[i]).clamp(-127.0, 127.0).round_ties_even() as i32).collect();
            (codes, step)
        })
    }

    /// The integer formula on activation codes from `quantize(row, block's range)` (codes and the block's scale).
    #[allow(clippy::needless_range_loop)] // the scalar model indexes like the formula it checks
    fn expected_from(
        &self,
        x: &[f32],
        m: usize,
        quantize: impl Fn(&[f32], std::ops::Range<usize>) -> (Vec<i32>, f32),
    ) -> Vec<f32> {
        let block = self.block.min(self.k);
        let blocks = self.k.div_ceil(block);
        let mut y = vec![0f32; m * self.n];
        for r in 0..m {
            let row = &x[r * self.k..(r + 1) * self.k];
            let (mut q, mut sx, mut sums) = (vec![0i32; self.k], vec![0f32; blocks], vec![0i32; blocks]);
            for g in 0..blocks {
                let part = g * block..((g + 1) * block).min(self.k);
                let (codes, scale) = quantize(row, part.clone());
                q[part].copy_from_slice(&codes);
                sums[g] = codes.iter().sum();
                sx[g] = scale;
            }
            for c in 0..self.n {
                let mut acc = 0f32;
                for g in 0..blocks {
                    let p = if self.per_block { c * blocks + g } else { c };
                    let dot: i64 = (g * block..((g + 1) * block).min(self.k))
                        .map(|i| {
                            (self.code(self.codes[c * self.k + i]) - i64::from(self.zero_points[p])) * i64::from(q[i])
                        })
                        .sum();
                    let scale = if self.per_block { sx[g] * self.param(self.scales[p]) } else { sx[g] };
                    acc = ((dot as i32) as f32).mul_add(scale, acc);
                    if !self.mins.is_empty() {
                        acc = (sx[g] * sums[g] as f32).mul_add(self.param(self.mins[p]), acc);
                    }
                }
                let final_scale = if self.per_block { 1.0 } else { self.scales[c] };
                let bias = self.bias.as_ref().map_or(0.0, |b| b[c]);
                y[r * self.n + c] = acc.mul_add(final_scale, bias);
            }
        }
        y
    }
}

fn random_input(rng: &mut StdRng, m: usize, k: usize) -> Vec<f32> {
    (0..m * k).map(|_| rng.random_range(-3f32..3.0)).collect()
}

fn assert_bit_identical(ours: &[f32], expected: &[f32], what: &str) {
    assert_eq!(ours.len(), expected.len(), "{what}: length");
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        assert!(a.to_bits() == b.to_bits(), "{what}: element {i}: {a} vs expected {b}");
    }
}

#[test]
fn every_level_matches_the_scalar_formula_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut checked = 0;
    for &(m, k, n) in &SHAPES {
        for bits in [Bits::B8, Bits::B4, Bits::B2] {
            for (block, per_block, symmetric, mins, half_params) in [
                (16, true, false, false, false),
                (32, false, true, false, true),
                (64, true, true, false, false),
                (k, false, false, false, false),
                (k, true, false, false, false),
                (32, true, false, true, false),
                (k, true, false, true, false),
                (16, true, true, false, true),
                (32, true, false, true, true),
            ] {
                let mut case = Case::random(&mut rng, n, k, bits, block, per_block);
                if mins {
                    case = case.with_mins(&mut rng);
                }
                case.half_params = half_params;
                if symmetric {
                    // One zero point for every column and block, as symmetric weights have.
                    let mid = 1 << (bits.count() - 1);
                    case.zero_points.iter_mut().for_each(|z| *z = mid);
                }
                let x = random_input(&mut rng, m, k);
                let expected = case.expected(&x, m);
                for isa in Isa::supported() {
                    let w = PackedWeights::new(isa, &case.codes()).unwrap();
                    let y = w.matmul(&x, m, case.bias.as_deref()).unwrap();
                    assert_eq!(w.half_params(), half_params && per_block);
                    let what = format!(
                        "{isa} m={m} k={k} n={n} bits={} block={block} per_block={per_block} mins={mins} half={half_params}",
                        bits.count()
                    );
                    assert_bit_identical(&y, &expected, &what);
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= SHAPES.len() * 3 * 9, "ran {checked} comparisons");
}

#[test]
fn every_level_matches_the_scalar_formula_with_lookup_tables() {
    let mut rng = StdRng::seed_from_u64(23);
    let mut checked = 0;
    for &(m, k, n) in &SHAPES {
        for (block, per_block, codebook_form, mins, half_params) in [
            // The codebook layers' form: per-block f16 scales, every zero point 128.
            (64, true, true, false, true),
            (k, true, true, false, true),
            (16, true, false, false, false),
            (32, false, false, false, false),
            (k, false, false, false, false),
            (32, true, false, true, true),
        ] {
            let mut case = Case::random(&mut rng, n, k, Bits::B4, block, per_block).with_lookup(&mut rng);
            if mins {
                case = case.with_mins(&mut rng);
            }
            if codebook_form {
                case.zero_points.iter_mut().for_each(|z| *z = 128);
            }
            case.half_params = half_params;
            let x = random_input(&mut rng, m, k);
            let expected = case.expected(&x, m);
            for isa in Isa::supported() {
                let w = PackedWeights::new(isa, &case.codes()).unwrap();
                let y = w.matmul(&x, m, case.bias.as_deref()).unwrap();
                let what = format!(
                    "{isa} lookup m={m} k={k} n={n} block={block} per_block={per_block} mins={mins} half={half_params}"
                );
                assert_bit_identical(&y, &expected, &what);
                checked += 1;
            }
        }
    }
    assert!(checked >= SHAPES.len() * 6, "ran {checked} comparisons");
}

#[test]
fn extreme_codes_do_not_saturate() {
    // 8-bit codes at 0 and 255 against activations at +-127 drive vpmaddubsw pairs to their limits.
    let (m, k, n) = (4, 64, 16);
    let codes: Vec<u8> = (0..n * k).map(|i| if (i / 3) % 2 == 0 { 255 } else { 0 }).collect();
    let case = Case {
        n,
        k,
        bits: Bits::B8,
        block: k,
        per_block: false,
        codes,
        scales: vec![1.0; n],
        zero_points: vec![0; n],
        mins: Vec::new(),
        half_params: false,
        lookup: None,
        bias: None,
    };
    let x: Vec<f32> =
        (0..m * k).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 } * if i % 5 == 0 { -1.0 } else { 1.0 }).collect();
    let expected = case.expected(&x, m);
    for isa in Isa::supported() {
        let w = PackedWeights::new(isa, &case.codes()).unwrap();
        assert_bit_identical(&w.matmul(&x, m, None).unwrap(), &expected, &format!("{isa} extremes"));
    }
}

#[test]
fn f16_parameters_halve_their_bytes_and_fall_back_to_f32_out_of_range() {
    let mut rng = StdRng::seed_from_u64(17);
    let mut case = Case::random(&mut rng, 40, 96, Bits::B4, 32, true).with_mins(&mut rng);
    let full = PackedWeights::new(Isa::Reference, &case.codes()).unwrap();
    let x = random_input(&mut rng, 3, 96);
    assert_bit_identical(&full.matmul(&x, 3, case.bias.as_deref()).unwrap(), &case.expected(&x, 3), "f32 parameters");
    case.half_params = true;
    let half = PackedWeights::new(Isa::Reference, &case.codes()).unwrap();
    assert!(half.half_params() && !full.half_params());
    // 40 rows x 3 blocks of scales and minimums, padded to 48 rows: 4 bytes saved on each.
    assert_eq!(full.storage_bytes() - half.storage_bytes(), 2 * 48 * 3 * 2);
    // A scale beyond f16's range keeps the f32 parameters, and the results follow the f32 formula.
    case.scales[5] = 1e6;
    let fallback = PackedWeights::new(Isa::Reference, &case.codes()).unwrap();
    assert!(!fallback.half_params());
    case.half_params = false;
    assert_bit_identical(&fallback.matmul(&x, 3, case.bias.as_deref()).unwrap(), &case.expected(&x, 3), "fallback");
}

#[test]
fn a_row_does_not_depend_on_its_batch() {
    let mut rng = StdRng::seed_from_u64(11);
    let (m, k, n) = (37, 96, 70);
    let case = Case::random(&mut rng, n, k, Bits::B8, 32, false);
    let x = random_input(&mut rng, m, k);
    for isa in Isa::supported() {
        let w = PackedWeights::new(isa, &case.codes()).unwrap();
        let batch = w.matmul(&x, m, case.bias.as_deref()).unwrap();
        for r in [0, 7, 36] {
            let alone = w.matmul(&x[r * k..(r + 1) * k], 1, case.bias.as_deref()).unwrap();
            assert_bit_identical(&alone, &batch[r * n..(r + 1) * n], &format!("{isa} row {r}"));
        }
    }
}

#[test]
fn zero_rows_and_bad_input() {
    let mut rng = StdRng::seed_from_u64(3);
    let case = Case::random(&mut rng, 8, 32, Bits::B4, 16, true);
    let w = PackedWeights::new(Isa::Reference, &case.codes()).unwrap();
    // An all-zero row gives exactly the bias.
    let y = w.matmul(&[0.0; 32], 1, Some(&[0.5; 8])).unwrap();
    assert!(y.iter().all(|&v| v == 0.5));
    assert!(w.matmul(&[], 0, None).unwrap().is_empty());
    let mut x = vec![1.0; 64];
    x[40] = f32::NAN;
    assert!(w.matmul(&x, 2, None).unwrap_err().to_string().contains("non-finite value (NaN) at flat index 40"));
    x[40] = f32::INFINITY;
    assert!(w.matmul(&x, 2, None).unwrap_err().to_string().contains("non-finite"));
    assert!(w.matmul(&x[..63], 2, None).unwrap_err().to_string().contains("shape mismatch"));
    assert!(w.matmul(&[1.0; 32], 1, Some(&[0.0; 7])).unwrap_err().to_string().contains("bias"));
    let mut bad = case.codes();
    let codes = vec![16u8; 8 * 32];
    bad.codes = &codes;
    assert!(PackedWeights::new(Isa::Reference, &bad).unwrap_err().to_string().contains("does not fit in 4 bits"));
    let odd_block = WeightCodes { block: 24, ..case.codes() };
    assert!(PackedWeights::new(Isa::Reference, &odd_block).unwrap_err().to_string().contains("multiple of 16"));
    let mins = vec![f32::NAN; 16];
    let nan_mins = WeightCodes { mins: &mins, ..case.codes() };
    assert!(PackedWeights::new(Isa::Reference, &nan_mins).unwrap_err().to_string().contains("minimums"));
    let per_column = Case::random(&mut rng, 8, 32, Bits::B4, 16, false);
    let mins = vec![0.0; 8];
    let per_column_mins = WeightCodes { mins: &mins, ..per_column.codes() };
    assert!(PackedWeights::new(Isa::Reference, &per_column_mins).unwrap_err().to_string().contains("per-block"));
    // A table takes 4-bit codes, and 8-bit zero points.
    let table = [7u8; 16];
    let eight = Case::random(&mut rng, 8, 32, Bits::B8, 16, true);
    let eight_lookup = WeightCodes { lookup: Some(&table), ..eight.codes() };
    assert!(PackedWeights::new(Isa::Reference, &eight_lookup).unwrap_err().to_string().contains("4-bit codes"));
    let zero_points = vec![256; 16];
    let bad_zero = WeightCodes { lookup: Some(&table), zero_points: &zero_points, ..case.codes() };
    assert!(PackedWeights::new(Isa::Reference, &bad_zero).unwrap_err().to_string().contains("[0, 255]"));
}

#[test]
fn long_inputs_quantized_chunk_by_chunk_match_the_scalar_formula() {
    // Weights of 1024 x 256 and 520 rows: large enough that the driver quantizes the input chunk by chunk inside
    // the multiplication (32-row chunks, more than four per thread for up to four threads); the last chunk is
    // short.
    let (m, k, n) = (520, 1024, 256);
    let mut rng = StdRng::seed_from_u64(21);
    for (bits, block, per_block) in [(Bits::B8, 64, false), (Bits::B8, k, false), (Bits::B4, 32, true)] {
        let mut case = Case::random(&mut rng, n, k, bits, block, per_block);
        let mid = 1 << (bits.count() - 1);
        case.zero_points.iter_mut().for_each(|z| *z = mid);
        let mut x = random_input(&mut rng, m, k);
        let expected = case.expected(&x, m);
        for isa in Isa::supported() {
            let w = PackedWeights::new(isa, &case.codes()).unwrap();
            let y = w.matmul(&x, m, case.bias.as_deref()).unwrap();
            assert_bit_identical(&y, &expected, &format!("{isa} bits={} block={block}", bits.count()));
        }
        // A bad value in the last chunk fails the whole call, whichever thread meets it.
        x[(m - 1) * k + 5] = f32::NAN;
        for isa in Isa::supported() {
            let w = PackedWeights::new(isa, &case.codes()).unwrap();
            let err = w.matmul(&x, m, None).unwrap_err().to_string();
            assert!(err.contains(&format!("at flat index {}", (m - 1) * k + 5)), "{isa}: {err}");
        }
    }
}

#[test]
fn every_level_scales_inputs_inside_the_quantizer_as_a_scaled_copy_would() {
    // SmoothQuant's per-channel input scale: the matmul of `x` with the scale equals the scalar formula on the
    // scaled copy `x * scale`, bit for bit, in the one-pass and the streamed (520 x 1024 x 256) paths.
    let mut rng = StdRng::seed_from_u64(23);
    let shapes = SHAPES.iter().copied().chain([(520, 1024, 256)]);
    for (m, k, n) in shapes {
        for (bits, block, per_block) in [(Bits::B8, 64, true), (Bits::B8, k, false), (Bits::B4, 32, true)] {
            let mut case = Case::random(&mut rng, n, k, bits, block, per_block);
            let mid = 1 << (bits.count() - 1);
            case.zero_points.iter_mut().for_each(|z| *z = mid);
            let x = random_input(&mut rng, m, k);
            let scale: Vec<f32> = (0..k).map(|_| rng.random_range(0.01f32..20.0)).collect();
            let scaled: Vec<f32> = x.chunks(k).flat_map(|row| row.iter().zip(&scale).map(|(v, s)| v * s)).collect();
            let expected = case.expected(&scaled, m);
            for isa in Isa::supported() {
                let w = PackedWeights::new(isa, &case.codes()).unwrap().with_input_scale(scale.clone()).unwrap();
                assert_eq!(w.input_scale(), Some(&scale[..]));
                let y = w.matmul(&x, m, case.bias.as_deref()).unwrap();
                let what = format!("{isa} m={m} k={k} n={n} bits={} block={block}", bits.count());
                assert_bit_identical(&y, &expected, &what);
            }
        }
    }
    let case = Case::random(&mut rng, 4, 8, Bits::B8, 8, false);
    let w = PackedWeights::new(Isa::Reference, &case.codes()).unwrap();
    let err = w.clone().with_input_scale(vec![1.0; 7]).unwrap_err().to_string();
    assert!(err.contains("input scale"), "{err}");
    let err = w.with_input_scale(vec![1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]).unwrap_err().to_string();
    assert!(err.contains("positive"), "{err}");
}

#[test]
fn every_level_quantizes_static_activations_as_the_scalar_formula() {
    // Static W8A8: one calibrated step, values beyond it clamped. The step is set so that about a third of the
    // inputs clamp; with and without an input scale, in the one-pass and the streamed (520 x 1024 x 256) paths,
    // per row and per block of 64.
    let mut rng = StdRng::seed_from_u64(29);
    let shapes = SHAPES.iter().copied().chain([(520, 1024, 256)]);
    let mut checked = 0;
    for (m, k, n) in shapes {
        for (block, smoothed) in [(k, false), (k, true), (64, true)] {
            let mut case = Case::random(&mut rng, n, k, Bits::B8, block, false);
            case.zero_points.iter_mut().for_each(|z| *z = 128);
            let x = random_input(&mut rng, m, k);
            let scale: Option<Vec<f32>> = smoothed.then(|| (0..k).map(|_| rng.random_range(0.25f32..4.0)).collect());
            let step = 2.0 / 127.0;
            let expected = case.expected_static(&x, m, step, scale.as_deref());
            assert!(expected.iter().all(|v| v.is_finite()));
            for isa in Isa::supported() {
                let mut w = PackedWeights::new(isa, &case.codes()).unwrap().with_activation_step(step).unwrap();
                if let Some(scale) = &scale {
                    w = w.with_input_scale(scale.clone()).unwrap();
                }
                assert_eq!(w.activation_step(), Some(step));
                let y = w.matmul(&x, m, case.bias.as_deref()).unwrap();
                let what = format!("{isa} m={m} k={k} n={n} block={block} smoothed={smoothed}");
                assert_bit_identical(&y, &expected, &what);
                checked += 1;
            }
        }
    }
    assert!(checked >= (SHAPES.len() + 1) * 3, "ran {checked} comparisons");
    // Clamping matters: the dynamic formula on the same input differs.
    let case = Case::random(&mut rng, 8, 64, Bits::B8, 64, false);
    let x = random_input(&mut rng, 3, 64);
    assert_ne!(case.expected_static(&x, 3, 2.0 / 127.0, None), case.expected(&x, 3));
    // Bad steps and non-finite input (in a whole and in a partial vector) are errors.
    let w = PackedWeights::new(Isa::best(), &case.codes()).unwrap();
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let err = w.clone().with_activation_step(bad).unwrap_err().to_string();
        assert!(err.contains("activation step"), "{err}");
    }
    let case = Case::random(&mut rng, 5, 37, Bits::B8, 37, false);
    for isa in Isa::supported() {
        let w = PackedWeights::new(isa, &case.codes()).unwrap().with_activation_step(0.05).unwrap();
        for at in [3, 36, 37 + 20] {
            let mut x = random_input(&mut rng, 2, 37);
            x[at] = f32::NAN;
            let err = w.matmul(&x, 2, None).unwrap_err().to_string();
            assert!(err.contains(&format!("at flat index {at}")), "{isa}: {err}");
        }
    }
}

#[test]
fn every_level_finds_non_finite_input_in_whole_and_partial_vectors() {
    let mut rng = StdRng::seed_from_u64(11);
    // K = 37: blocks of 16 end in a 5-value block; one block of 37 ends in a partial vector at every level.
    for block in [16, 37] {
        let case = Case::random(&mut rng, 5, 37, Bits::B8, block, false);
        for isa in Isa::supported() {
            let w = PackedWeights::new(isa, &case.codes()).unwrap();
            for (at, bad) in [(3, f32::NAN), (36, f32::NAN), (37 + 20, f32::INFINITY), (2 * 37 - 1, f32::NEG_INFINITY)]
            {
                let mut x = random_input(&mut rng, 2, 37);
                x[at] = bad;
                let err = w.matmul(&x, 2, None).unwrap_err().to_string();
                assert!(err.contains(&format!("at flat index {at}")), "{isa} block={block}: {err}");
            }
            // All-zero rows and blocks are no error: their codes and scales are 0, and a zero row gives the bias.
            let mut x = random_input(&mut rng, 2, 37);
            x[16..32].fill(0.0);
            x[37..].fill(0.0);
            let y = w.matmul(&x, 2, case.bias.as_deref()).unwrap();
            let bias = case.bias.clone().unwrap_or(vec![0.0; 5]);
            assert_eq!(y[5..], bias[..], "{isa}");
            assert_bit_identical(&y, &case.expected(&x, 2), &format!("{isa} zero blocks, block={block}"));
        }
    }
}

#[test]
fn thread_count_does_not_change_results() {
    let mut rng = StdRng::seed_from_u64(5);
    let (m, k, n) = (50, 200, 130);
    let case = Case::random(&mut rng, n, k, Bits::B8, 64, false);
    let x = random_input(&mut rng, m, k);
    let w = PackedWeights::new(Isa::best(), &case.codes()).unwrap();
    qlayers::threads::set_num_threads(1);
    let one = w.matmul(&x, m, None).unwrap();
    qlayers::threads::set_num_threads(2);
    let two = w.matmul(&x, m, None).unwrap();
    assert_bit_identical(&one, &two, "1 vs 2 threads");
}

/// The scalar model of the f32 kernels: one chain of fused multiply-adds over K in order, from zero, then the bias.
fn expected_f32(w: &[f32], n: usize, k: usize, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    for r in 0..m {
        for c in 0..n {
            let dot = (0..k).fold(0f32, |acc, j| x[r * k + j].mul_add(w[c * k + j], acc));
            y[r * n + c] = dot + bias.map_or(0.0, |b| b[c]);
        }
    }
    y
}

#[test]
fn every_level_matches_the_scalar_f32_formula_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(17);
    // Beyond the shared shapes: long K, K over several chunks at every level (a chunk holds up to 8192 values),
    // and rows over several row chunks.
    let extra = [(7, 1000, 65), (13, 129, 97), (200, 256, 40), (1, 1536, 33), (3, 8300, 20), (1, 16500, 17)];
    let mut checked = 0;
    for &(m, k, n) in SHAPES.iter().chain(&extra) {
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1f32..1.0)).collect();
        let bias: Option<Vec<f32>> =
            rng.random_bool(0.5).then(|| (0..n).map(|_| rng.random_range(-1f32..1.0)).collect());
        let x = random_input(&mut rng, m, k);
        let expected = expected_f32(&w, n, k, &x, m, bias.as_deref());
        for isa in Isa::supported() {
            let packed = FloatWeights::new(isa, &w, n, k).unwrap();
            let y = packed.matmul(&x, m, bias.as_deref()).unwrap();
            assert_bit_identical(&y, &expected, &format!("f32 {isa} m={m} k={k} n={n}"));
            checked += 1;
        }
    }
    assert!(checked >= SHAPES.len() + 4, "ran {checked} comparisons");
}

#[test]
fn an_f32_row_does_not_depend_on_its_batch_or_the_thread_count() {
    let mut rng = StdRng::seed_from_u64(19);
    let (m, k, n) = (37, 300, 70);
    let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1f32..1.0)).collect();
    let x = random_input(&mut rng, m, k);
    for isa in Isa::supported() {
        let packed = FloatWeights::new(isa, &w, n, k).unwrap();
        let batch = packed.matmul(&x, m, None).unwrap();
        for r in [0, 7, 36] {
            let alone = packed.matmul(&x[r * k..(r + 1) * k], 1, None).unwrap();
            assert_bit_identical(&alone, &batch[r * n..(r + 1) * n], &format!("f32 {isa} row {r}"));
        }
        qlayers::threads::set_num_threads(1);
        let one = packed.matmul(&x, m, None).unwrap();
        qlayers::threads::set_num_threads(2);
        assert_bit_identical(&one, &batch, &format!("f32 {isa} 1 vs 2 threads"));
    }
}

#[test]
fn every_level_applies_the_activation_epilogue_as_a_separate_pass_would() {
    let mut rng = StdRng::seed_from_u64(23);
    for &(m, k, n) in &[(1, 64, 33), (7, 300, 70), (13, 1000, 65)] {
        let x = random_input(&mut rng, m, k);
        let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-0.1f32..0.1)).collect();
        let case = Case::random(&mut rng, n, k, Bits::B8, 64, false);
        for activation in [Activation::GeluErf, Activation::GeluTanh, Activation::Relu, Activation::Silu] {
            let mut float_expected = expected_f32(&w, n, k, &x, m, None);
            activation.apply_all(&mut float_expected);
            let mut int_expected = case.expected(&x, m);
            activation.apply_all(&mut int_expected);
            for isa in Isa::supported() {
                let what = format!("{isa} m={m} k={k} n={n} {activation:?}");
                let mut out = vec![f32::NAN; m * n];
                FloatWeights::new(isa, &w, n, k).unwrap().matmul_into(&x, m, None, Some(activation), &mut out).unwrap();
                assert_bit_identical(&out, &float_expected, &format!("f32 {what}"));
                let packed = PackedWeights::new(isa, &case.codes()).unwrap();
                packed.matmul_into(&x, m, case.bias.as_deref(), Some(activation), &mut out).unwrap();
                assert_bit_identical(&out, &int_expected, &format!("int8 {what}"));
            }
        }
    }
}

#[test]
fn f32_weights_reject_bad_shapes() {
    assert!(FloatWeights::new(Isa::Reference, &[1.0; 5], 2, 3).unwrap_err().to_string().contains("shape mismatch"));
    assert!(FloatWeights::new(Isa::Reference, &[], 0, 3).is_err());
    let packed = FloatWeights::new(Isa::Reference, &[1.0; 6], 2, 3).unwrap();
    assert!(packed.matmul(&[1.0; 5], 2, None).unwrap_err().to_string().contains("shape mismatch"));
    assert!(packed.matmul(&[1.0; 3], 1, Some(&[0.0; 3])).unwrap_err().to_string().contains("shape mismatch"));
    assert!(packed.matmul(&[], 0, None).unwrap().is_empty());
    let mut short = vec![0.0; 3];
    assert!(packed
        .matmul_into(&[1.0; 6], 2, None, None, &mut short)
        .unwrap_err()
        .to_string()
        .contains("shape mismatch"));
    // Non-finite input propagates, as in any f32 matmul.
    assert!(packed.matmul(&[f32::NAN, 0.0, 0.0], 1, None).unwrap()[0].is_nan());
}

#[test]
fn the_environment_forces_the_level() {
    let selected = qlayers::kernels::selected_isa().unwrap();
    match std::env::var(qlayers::kernels::ISA_ENV) {
        Ok(name) => assert_eq!(selected, Isa::from_name(&name).unwrap()),
        Err(_) => assert_eq!(selected, Isa::best()),
    }
    assert!(Isa::from_name("sse9").unwrap_err().to_string().contains("expected reference, avx2 or avx512vnni"));
}
