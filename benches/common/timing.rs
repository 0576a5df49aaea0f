//! The timer of the report examples (`kernel_report`, `attention_report`): a median over samples that fill a
//! time budget.

use std::time::{Duration, Instant};

use anyhow::Result;

/// The median time of one call of `call(i)`, where `i` counts calls across the whole measurement (so rings keep
/// turning). Every ring entry is called once first (candle repacks some formats lazily, on the first call).
pub fn measure(ring: usize, budget: Duration, mut call: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let mut next = 0usize;
    let start = Instant::now();
    let warm_calls = ring.max(2);
    for _ in 0..warm_calls {
        call(next)?;
        next += 1;
    }
    let per_call = start.elapsed().as_secs_f64() / warm_calls as f64;
    // A sample takes at least 5 ms (and one turn of the ring); between 5 and 50 samples fill the budget.
    let calls = ((5e-3 / per_call).ceil() as usize).max(ring).max(1);
    let samples = ((budget.as_secs_f64() / (calls as f64 * per_call)) as usize).clamp(5, 50);
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..calls {
            call(next)?;
            next += 1;
        }
        times.push(t.elapsed().as_secs_f64() / calls as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
