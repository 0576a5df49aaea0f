//! Criterion benchmarks of the int8 kernels of `qlayers` against candle's f32 matmul and its Q8_0 / Q4_0
//! `QMatMul`, at the shapes of BERT-like (W8A8, M = 4096) and Llama-like (weight-only int8 and int4, M = 1 and
//! M = 256) layers.
//!
//! `cargo bench --bench kernels` (all of it takes about 6 minutes on 2 cores); pass a filter to run a part,
//! for example `cargo bench --bench kernels -- int4/1x`.
//!
//! `f32/MxKxN` groups time the f32 GEMM of `qlayers` (`FloatWeights`) against candle's f32 matmul.
//!
//! Groups are named `scheme/MxKxN`, with functions `qlayers`, `candle_f32`, `candle_q8_0` and `candle_q4_0`
//! (W8A8 groups, `w8a8` with 64-value activation blocks and `w8a8-row` with one scale per row, have all four, `int8` groups the Q8_0 baseline, `int4` groups the Q4_0 one). Throughput is
//! `2 M N K` operations per call, so criterion's "elem/s" reads as ops/s.
//!
//! For M = 1 (decoding), each call takes the next of a ring of weight matrices that together exceed 64 MB, so
//! that the weights come from DRAM (the last-level cache here is 36 MB), as they do when a model runs; every
//! contender gets a ring in its own format. `QLAYERS_ISA` forces the kernel level.

use std::hint::black_box;
use std::time::Duration;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use qlayers::kernels::{selected_isa, FloatWeights, Isa, PackedWeights, ISA_ENV};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;
use common::{cases, f32_cases, RandomWeights, Scheme};

/// Weights of M = 1 cases are cycled through a ring of matrices at least this large in all.
const RING_BYTES: usize = 64 << 20;
/// At most this many matrices in a ring, and at most `RING_CAP_BYTES` of them.
const RING_MAX: usize = 512;
const RING_CAP_BYTES: usize = 512 << 20;

/// The candle quantized formats `scheme` is compared with.
fn ggml_baselines(scheme: Scheme) -> &'static [(&'static str, GgmlDType)] {
    match scheme {
        Scheme::W8A8 | Scheme::W8A8Row => &[("candle_q8_0", GgmlDType::Q8_0), ("candle_q4_0", GgmlDType::Q4_0)],
        Scheme::Int8 => &[("candle_q8_0", GgmlDType::Q8_0)],
        Scheme::Int4 => &[("candle_q4_0", GgmlDType::Q4_0)],
    }
}

/// How many matrices of `bytes` each a ring needs: more than [`RING_BYTES`] in all for M = 1, else one.
fn ring_len(m: usize, bytes: usize) -> usize {
    if m > 1 {
        return 1;
    }
    let len = if bytes >= RING_BYTES { 1 } else { RING_BYTES.div_ceil(bytes) + 1 };
    len.min(RING_MAX).min((RING_CAP_BYTES / bytes).max(1))
}

/// Builds a ring of `len(bytes of the first)` values with `make`.
fn ring<T>(m: usize, make: impl Fn() -> T, bytes: impl Fn(&T) -> usize) -> Vec<T> {
    let first = make();
    let len = ring_len(m, bytes(&first));
    let mut ring = Vec::with_capacity(len);
    ring.push(first);
    ring.extend((1..len).map(|_| make()));
    ring
}

/// Random symmetric codes of an `[n, k]` weight in `scheme`, packed for `isa`, in a ring.
fn qlayers_ring(isa: Isa, scheme: Scheme, m: usize, k: usize, n: usize) -> Vec<PackedWeights> {
    let weights = RandomWeights::new(scheme, n, k, &mut StdRng::seed_from_u64((n * k) as u64));
    ring(m, || weights.pack(isa), PackedWeights::storage_bytes)
}

fn f32_weight(k: usize, n: usize) -> Tensor {
    Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu).expect("randn")
}

/// Runs `call(i)` on the next ring entry at every iteration, after calling every entry once (candle repacks some
/// formats lazily, at the first call).
fn bench_ring<T>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    build: impl Fn() -> Vec<T>,
    call: impl Fn(&T),
) {
    let mut data: Option<Vec<T>> = None;
    let mut next = 0usize;
    group.bench_function(id, |b| {
        // Built at the first run, so that benchmarks a filter leaves out build nothing.
        let ring = data.get_or_insert_with(|| {
            let ring = build();
            ring.iter().for_each(&call);
            ring
        });
        b.iter(|| {
            call(&ring[next % ring.len()]);
            next = next.wrapping_add(1);
        })
    });
}

/// The benchmark group `name/MxKxN` (10 flat samples, 1 s of warm-up, 2.5 s of measurement, `2 M N K`
/// operations a call) and its random input, as values and as a tensor.
fn shape_group<'c>(
    c: &'c mut Criterion,
    name: &str,
    m: usize,
    k: usize,
    n: usize,
) -> (BenchmarkGroup<'c, criterion::measurement::WallTime>, Vec<f32>, Tensor) {
    let mut group = c.benchmark_group(format!("{name}/{m}x{k}x{n}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_millis(2500))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements((2 * m * n * k) as u64));
    let mut rng = StdRng::seed_from_u64((m * k) as u64);
    let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1f32..1.0)).collect();
    let x_tensor = Tensor::from_slice(&x, (m, k), &Device::Cpu).expect("input tensor");
    (group, x, x_tensor)
}

/// candle's f32 matmul of `x` by a random `[n, k]` weight (a ring of them at M = 1), as `candle_f32`.
fn bench_candle_f32(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    m: usize,
    k: usize,
    n: usize,
    x: &Tensor,
) {
    bench_ring(
        group,
        "candle_f32",
        || {
            let w = f32_weight(k, n);
            ring(m, || w.copy().expect("copy"), |w| w.elem_count() * 4)
        },
        |w| {
            black_box(x.matmul(&w.t().expect("t")).expect("f32 matmul"));
        },
    );
}

fn kernels(c: &mut Criterion) {
    let isa = if std::env::var_os(ISA_ENV).is_some() { selected_isa().expect(ISA_ENV) } else { Isa::best() };
    eprintln!("qlayers kernel level: {isa} (supported: {:?})", Isa::supported());
    for (scheme, m, k, n) in cases() {
        let (mut group, x, x_tensor) = shape_group(c, scheme.name(), m, k, n);
        bench_ring(
            &mut group,
            "qlayers",
            || qlayers_ring(isa, scheme, m, k, n),
            |w| {
                black_box(w.matmul(black_box(&x), m, None).expect("qlayers matmul"));
            },
        );
        bench_candle_f32(&mut group, m, k, n, &x_tensor);
        for &(id, dtype) in ggml_baselines(scheme) {
            bench_ring(
                &mut group,
                id,
                || {
                    let w = f32_weight(k, n);
                    let qmm = |w: &Tensor| QMatMul::from_qtensor(QTensor::quantize(w, dtype).expect("quantize"));
                    let bytes = QTensor::quantize(&w, dtype).expect("quantize").storage_size_in_bytes();
                    let len = ring_len(m, bytes);
                    (0..len).map(|_| qmm(&w).expect("QMatMul")).collect()
                },
                |w: &QMatMul| {
                    black_box(w.forward(&x_tensor).expect("QMatMul forward"));
                },
            );
        }
        group.finish();
    }
    for (m, k, n) in f32_cases() {
        let (mut group, x, x_tensor) = shape_group(c, "f32", m, k, n);
        bench_ring(
            &mut group,
            "qlayers",
            || {
                let w = f32_weight(k, n).flatten_all().and_then(|w| w.to_vec1::<f32>()).expect("weight values");
                ring(m, || FloatWeights::new(isa, &w, n, k).expect("pack"), FloatWeights::storage_bytes)
            },
            |w| {
                black_box(w.matmul(black_box(&x), m, None).expect("qlayers f32 matmul"));
            },
        );
        bench_candle_f32(&mut group, m, k, n, &x_tensor);
        group.finish();
    }
}

// The group function the macro defines is public and has no doc comment of its own.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::kernels);
}
use group::benches;
criterion_main!(benches);
