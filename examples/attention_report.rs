//! Times BERT self-attention on its own (`qlayers::float_ops::attention`, the kernel every encoder runs), at the
//! shapes of `runner bench`: 32 sequences of 128 tokens, MiniLM's 12 heads of 32 and bert-base's 12 heads of 64,
//! on one thread and on all of them. Prints GFLOPS (the two products, `4 * tokens * len * width` flops a batch).
//!
//! `cargo run --release --example attention_report`

use std::hint::black_box;
use std::time::Duration;

use anyhow::Result;
use qlayers::float_ops::{attention_into, AttentionOptions, QkvLayout};
use qlayers::kernels::selected_isa;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../benches/common/timing.rs"]
mod timing;
use timing::measure;

fn main() -> Result<()> {
    let (batch, len) = (32, 128);
    let all = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("- CPU: {} ({all} threads), kernel level `{}`", qlayers::kernels::cpu_name(), selected_isa()?);
    println!("- {batch} sequences x {len} tokens, median of the samples of 400 ms\n");
    println!("| heads x head size | threads | ms | GFLOPS |");
    println!("|---|---:|---:|---:|");
    let mut rng = StdRng::seed_from_u64(7);
    for (heads, d) in [(12, 32), (12, 64)] {
        let width = heads * d;
        let rows = batch * len;
        let qkv: Vec<f32> = (0..rows * 3 * width).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        let layout = QkvLayout { row_stride: 3 * width, q: 0, k: width, v: 2 * width };
        let starts: Vec<usize> = (0..batch).map(|b| b * len).collect();
        let lens = vec![len; batch];
        let mut out = vec![0f32; rows * width];
        let flops = 4.0 * (rows * len * width) as f64;
        for threads in [1, all] {
            let seconds = qlayers::threads::with_num_threads(Some(threads), || {
                measure(1, Duration::from_millis(400), |_| {
                    attention_into(&qkv, layout, heads, d, &starts, &lens, AttentionOptions::default(), &mut out);
                    black_box(&out);
                    Ok(())
                })
            })?;
            println!("| {heads} x {d} | {threads} | {:.2} | {:.1} |", seconds * 1e3, flops / seconds / 1e9);
        }
    }
    Ok(())
}
