//! The int8 kernels against candle, with the machine's int8 peak and DRAM bandwidth for scale, printed as
//! markdown ready to paste into `benches/README.md`.
//!
//! `cargo run --release --example kernel_report`
//!
//! Measures, in one process:
//! - the int8 peak: independent `vpdpbusd` (AVX-512 VNNI) on 12 accumulators per thread, on 1 and on all threads;
//! - the DRAM read bandwidth: a sum over a 512 MB buffer on 1 and 2 threads (best of 9);
//! - every benchmark shape (the same as `benches/kernels.rs`): the median time of `qlayers`, candle's f32 matmul
//!   and candle's `QMatMul` with Q8_0 and Q4_0. For M = 1 (decoding), each call takes the next of a ring of
//!   weight matrices that together exceed 64 MB, so the weights come from DRAM, as they do in a real model.
//!
//! - the f32 peak (independent FMAs on 12 accumulators of the level's widest vectors) and every f32 shape: the
//!   median time of the `qlayers` f32 GEMM and of candle's f32 matmul.
//!
//! Set `QLAYERS_ISA` to force a kernel level; `REPORT_BUDGET_MS` (default 400) is the time spent measuring one
//! kernel at one shape.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use qlayers::kernels::{selected_isa, FloatWeights, Isa, ISA_ENV};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../benches/common/mod.rs"]
mod common;
#[path = "../benches/common/timing.rs"]
mod timing;
use common::{cases, f32_cases, RandomWeights, Scheme};
use timing::measure;

/// Weights of M = 1 cases are cycled through a ring of matrices at least this large in all (`REPORT_RING_MB`
/// overrides it; 0 reuses one matrix, so that it stays in cache).
fn ring_bytes() -> usize {
    std::env::var("REPORT_RING_MB").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(64) << 20
}
/// At most this many matrices in a ring (and at most `RING_CAP_BYTES` of them).
const RING_MAX: usize = 512;
const RING_CAP_BYTES: usize = 512 << 20;

/// How many matrices of `bytes` each a ring needs: more than [`ring_bytes`] in all, one for M > 1.
fn ring_len(m: usize, bytes: usize) -> usize {
    let ring_bytes = ring_bytes();
    if m > 1 || ring_bytes == 0 {
        return 1;
    }
    let len = if bytes >= ring_bytes { 1 } else { ring_bytes.div_ceil(bytes) + 1 };
    len.min(RING_MAX).min((RING_CAP_BYTES / bytes).max(1))
}

/// Candle's times for one shape: f32, Q8_0, Q4_0 (seconds per call).
struct CandleTimes {
    f32: f64,
    q8_0: f64,
    q4_0: f64,
}

fn candle_times(m: usize, k: usize, n: usize, x: &Tensor, budget: Duration) -> Result<CandleTimes> {
    let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?;
    let f32_ring: Vec<Tensor> = {
        let len = ring_len(m, n * k * 4);
        let mut ring = vec![w.clone()];
        for _ in 1..len {
            ring.push(w.copy()?);
        }
        ring
    };
    let f32 = measure(f32_ring.len(), budget, |i| {
        black_box(x.matmul(&f32_ring[i % f32_ring.len()].t()?)?);
        Ok(())
    })?;
    drop(f32_ring);
    let quantized = |dtype: GgmlDType| -> Result<f64> {
        let first = QTensor::quantize(&w, dtype)?;
        let len = ring_len(m, first.storage_size_in_bytes());
        let mut ring = vec![QMatMul::from_qtensor(first)?];
        for _ in 1..len {
            ring.push(QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?);
        }
        measure(ring.len(), budget, |i| {
            black_box(ring[i % ring.len()].forward(x)?);
            Ok(())
        })
    };
    Ok(CandleTimes { f32, q8_0: quantized(GgmlDType::Q8_0)?, q4_0: quantized(GgmlDType::Q4_0)? })
}

/// Seconds per call of qlayers, and the bytes of one weight matrix.
fn qlayers_time(
    isa: Isa,
    scheme: Scheme,
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    budget: Duration,
) -> Result<(f64, usize)> {
    let mut rng = StdRng::seed_from_u64(0x5eed ^ (m * 31 + k * 7 + n) as u64);
    let weights = RandomWeights::new(scheme, n, k, &mut rng);
    let first = weights.pack(isa);
    let bytes = first.storage_bytes();
    let mut ring = vec![first];
    for _ in 1..ring_len(m, bytes) {
        ring.push(weights.pack(isa));
    }
    drop(weights);
    let t = measure(ring.len(), budget, |i| {
        black_box(ring[i % ring.len()].matmul(x, m, None)?);
        Ok(())
    })?;
    Ok((t, bytes))
}

/// Iterations of a peak measurement's loop.
#[cfg(target_arch = "x86_64")]
const PEAK_ITERS: u64 = 20_000_000;

/// The shortest of 5 wall times of `threads` threads each running `work` once.
#[cfg(target_arch = "x86_64")]
fn best_of_5(threads: usize, work: impl Fn() -> f32 + Sync) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| black_box(work()));
                }
            });
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Int8 multiply-adds per second of `threads` threads running independent `vpdpbusd`, or `None` without VNNI.
fn int8_peak_gops(threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni")) {
            return None;
        }
        // SAFETY: the CPU supports AVX-512 F and VNNI (checked above).
        let best = best_of_5(threads, || black_box(unsafe { x86::dpbusd_loop(black_box(PEAK_ITERS)) }) as f32);
        // 12 instructions per iteration, 64 multiply-adds each, 2 ops per multiply-add.
        Some((threads as u64 * PEAK_ITERS * 12 * 64 * 2) as f64 / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// f32 flops per second of `threads` threads running independent FMAs at the widest level `isa` has (AVX-512 or
/// AVX2), or `None` on the portable level.
fn f32_peak_gflops(isa: Isa, threads: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        let lanes = match isa {
            Isa::Avx512Vnni => 16,
            Isa::Avx2 => 8,
            Isa::Reference => return None,
        };
        let best = best_of_5(threads, || match lanes {
            // SAFETY: the CPU supports the level (`isa` is one it supports), hence its FMA.
            16 => black_box(unsafe { x86::fma512_loop(black_box(PEAK_ITERS)) }),
            // SAFETY: as above.
            _ => black_box(unsafe { x86::fma256_loop(black_box(PEAK_ITERS)) }),
        });
        // 12 instructions per iteration, `lanes` multiply-adds each, 2 flops per multiply-add.
        Some((threads as u64 * PEAK_ITERS * 12 * lanes * 2) as f64 / best / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, threads);
        None
    }
}

/// Seconds per call of the `qlayers` f32 GEMM and of candle's f32 matmul at one shape.
fn f32_times(isa: Isa, m: usize, k: usize, n: usize, budget: Duration) -> Result<(f64, f64)> {
    let mut rng = StdRng::seed_from_u64((m * k * n) as u64);
    let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1f32..1.0)).collect();
    let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)?;
    let len = ring_len(m, n * k * 4);
    let values = w.flatten_all()?.to_vec1::<f32>()?;
    let ours = {
        let ring: Vec<FloatWeights> =
            (0..len).map(|_| FloatWeights::new(isa, &values, n, k)).collect::<qlayers::Result<_>>()?;
        measure(ring.len(), budget, |i| {
            black_box(ring[i % ring.len()].matmul(&x, m, None)?);
            Ok(())
        })?
    };
    let candle = {
        let x = Tensor::from_slice(&x, (m, k), &Device::Cpu)?;
        let ring: Vec<Tensor> = (0..len).map(|_| w.copy()).collect::<candle_core::Result<_>>()?;
        measure(ring.len(), budget, |i| {
            black_box(x.matmul(&ring[i % ring.len()].t()?)?);
            Ok(())
        })?
    };
    Ok((ours, candle))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// `iters` rounds of 12 independent 512-bit FMAs.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512_loop(iters: u64) -> f32 {
        let (a, b) = (_mm512_set1_ps(black_box(0.999)), _mm512_set1_ps(black_box(0.001)));
        let mut acc = [_mm512_setzero_ps(); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    /// `iters` rounds of 12 independent 256-bit FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256_loop(iters: u64) -> f32 {
        let (a, b) = (_mm256_set1_ps(black_box(0.999)), _mm256_set1_ps(black_box(0.001)));
        let mut acc = [_mm256_setzero_ps(); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        acc.iter()
            .map(|&v| {
                _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                lanes.iter().sum::<f32>()
            })
            .sum()
    }

    /// `iters` rounds of 12 independent `vpdpbusd`.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn dpbusd_loop(iters: u64) -> i32 {
        let a = _mm512_set1_epi8(black_box(3));
        let b = _mm512_set1_epi8(black_box(-2));
        let mut acc = [_mm512_setzero_si512(); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_dpbusd_epi32(*v, a, b);
            }
        }
        let mut sum = _mm512_setzero_si512();
        for v in acc {
            sum = _mm512_add_epi32(sum, v);
        }
        _mm512_reduce_add_epi32(sum)
    }
}

/// Bytes per second of `threads` threads summing disjoint parts of `buf` (best of 9: the VM is shared).
fn read_bandwidth(buf: &[u64], threads: usize) -> f64 {
    fn sum(part: &[u64]) -> u64 {
        let mut acc = [0u64; 4];
        for c in part.chunks_exact(4) {
            acc[0] = acc[0].wrapping_add(c[0]);
            acc[1] = acc[1].wrapping_add(c[1]);
            acc[2] = acc[2].wrapping_add(c[2]);
            acc[3] = acc[3].wrapping_add(c[3]);
        }
        acc.iter().fold(0, |a, b| a.wrapping_add(*b))
    }
    let part = buf.len().div_ceil(threads).next_multiple_of(4);
    let mut best = f64::INFINITY;
    for _ in 0..9 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for chunk in buf.chunks(part) {
                s.spawn(move || black_box(sum(black_box(chunk))));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::mem::size_of_val(buf) as f64 / best
}

/// The shapes of the issue: `(scheme, m, k, n)`.
fn main() -> Result<()> {
    let budget =
        Duration::from_millis(std::env::var("REPORT_BUDGET_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(400));
    let isa = if std::env::var_os(ISA_ENV).is_some() { selected_isa()? } else { Isa::best() };
    let all_threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let started = Instant::now();

    println!("- CPU: {} ({all_threads} threads)", qlayers::kernels::cpu_name());
    println!(
        "- qlayers kernel level: `{isa}` (supported: {}); kernel threads: {}",
        Isa::supported().iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
        qlayers::threads::num_threads()
    );

    // Without RAYON_NUM_THREADS, candle 0.11.1's `get_num_threads()` parses /proc/cpuinfo at each call, tens of
    // microseconds: more than a small decoding matmul. qlayers must ask it once; this shows that it does.
    let t = Instant::now();
    for _ in 0..20 {
        black_box(qlayers::threads::num_threads());
    }
    println!(
        "- `qlayers::threads::num_threads()`: {:.1} µs per call (RAYON_NUM_THREADS {})",
        t.elapsed().as_secs_f64() / 20.0 * 1e6,
        std::env::var("RAYON_NUM_THREADS").map_or("unset".into(), |v| format!("= {v}"))
    );

    let peak_1 = int8_peak_gops(1);
    let peak_all = int8_peak_gops(all_threads);
    match (peak_1, peak_all) {
        (Some(one), Some(all)) => {
            println!("- int8 peak (`vpdpbusd`, 12 accumulators): {one:.0} GOPS on 1 thread, {all:.0} GOPS on {all_threads} threads")
        }
        _ => println!("- int8 peak: not measured (no AVX-512 VNNI)"),
    }

    let bandwidth = {
        let buf = vec![1u64; (512 << 20) / 8];
        let one = read_bandwidth(&buf, 1);
        let two = read_bandwidth(&buf, 2);
        println!(
            "- DRAM read bandwidth (512 MB): {:.1} GB/s on 1 thread, {:.1} GB/s on 2 threads",
            one / 1e9,
            two / 1e9
        );
        one.max(two)
    };
    println!();

    println!(
        "| scheme | M | K | N | qlayers ms | GOPS | x vs f32 | x vs Q8_0 | x vs Q4_0 | % of int8 peak / DRAM BW |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut raw = Vec::new();
    let mut candle: Option<((usize, usize, usize), CandleTimes)> = None;
    let filter = std::env::var("REPORT_FILTER").unwrap_or_default();
    for (scheme, m, k, n) in cases() {
        if !format!("{}/{m}x{k}x{n}", scheme.name()).contains(&filter) {
            continue;
        }
        let mut rng = StdRng::seed_from_u64((m * k * n) as u64);
        let x_vec: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1f32..1.0)).collect();
        if candle.as_ref().is_none_or(|(shape, _)| *shape != (m, k, n)) {
            let x = Tensor::from_slice(&x_vec, (m, k), &Device::Cpu)?;
            candle = Some(((m, k, n), candle_times(m, k, n, &x, budget)?));
        }
        let c = &candle.as_ref().expect("just measured").1;
        let (t, bytes) = qlayers_time(isa, scheme, m, k, n, &x_vec, budget)?;
        let ops = 2.0 * (m * n * k) as f64;
        let gops = ops / t / 1e9;
        let efficiency = if m == 1 {
            format!("{:.0}% BW", 100.0 * bytes as f64 / t / bandwidth)
        } else {
            peak_all.map_or("-".into(), |p| format!("{:.0}% peak", 100.0 * gops / p))
        };
        println!(
            "| {} | {m} | {k} | {n} | {} | {gops:.1} | {:.2} | {:.2} | {:.2} | {efficiency} |",
            scheme.name(),
            ms(t),
            c.f32 / t,
            c.q8_0 / t,
            c.q4_0 / t
        );
        raw.push((scheme, m, k, n, t, c.f32, c.q8_0, c.q4_0));
    }
    println!();
    println!("Milliseconds per call:");
    println!();
    println!("| scheme | M | K | N | qlayers | candle f32 | candle Q8_0 | candle Q4_0 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (scheme, m, k, n, t, f, q8, q4) in raw {
        println!("| {} | {m} | {k} | {n} | {} | {} | {} | {} |", scheme.name(), ms(t), ms(f), ms(q8), ms(q4));
    }
    println!();
    let f32_peak = f32_peak_gflops(isa, all_threads);
    match f32_peak {
        Some(peak) => println!("f32 GEMM (f32 peak at this level: {peak:.0} GFLOPS on {all_threads} threads):"),
        None => println!("f32 GEMM (f32 peak not measured on the portable level):"),
    }
    println!();
    println!("| M | K | N | qlayers ms | candle f32 ms | x vs candle | GFLOPS | % of f32 peak |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (m, k, n) in f32_cases() {
        if !format!("f32/{m}x{k}x{n}").contains(&filter) {
            continue;
        }
        let (ours, theirs) = f32_times(isa, m, k, n, budget)?;
        let gflops = 2.0 * (m * n * k) as f64 / ours / 1e9;
        let peak = f32_peak.map_or("-".into(), |p| format!("{:.0}%", 100.0 * gflops / p));
        println!("| {m} | {k} | {n} | {} | {} | {:.2} | {gflops:.1} | {peak} |", ms(ours), ms(theirs), theirs / ours);
    }
    eprintln!("\n(report took {:.0} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Milliseconds with 3 significant digits.
fn ms(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}
