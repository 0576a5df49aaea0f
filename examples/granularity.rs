//! Per-tensor vs per-channel vs per-group scales on a weight whose rows have very different magnitudes, as real
//! layers do: finer granularity costs a few more scales and buys a lot of accuracy.
//!
//! `cargo run --example granularity`

use candle_core::{Device, Tensor};
use qlayers::{metrics::ErrorStats, Bits, Granularity, LinearScheme, QTensor};

fn main() -> anyhow::Result<()> {
    let (rows, cols) = (128, 512);
    // Row r is scaled by 2^(r mod 8 - 4): magnitudes spread over two orders.
    let row_scale: Vec<f32> = (0..rows).map(|r| 2f32.powi(r as i32 % 8 - 4)).collect();
    let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu)?.broadcast_mul(&Tensor::from_vec(
        row_scale,
        (rows, 1),
        &Device::Cpu,
    )?)?;
    println!("{:<6} {:<22} {:>8} {:>10} {:>10} {:>14}", "bits", "granularity", "scales", "MSE", "SNR (dB)", "bytes");
    for bits in [Bits::B8, Bits::B4] {
        for (name, g) in [
            ("per tensor", Granularity::PerTensor),
            ("per channel (dim 0)", Granularity::PerChannel { dim: 0 }),
            ("per group of 128", Granularity::PerGroup { size: 128 }),
            ("per group of 32", Granularity::PerGroup { size: 32 }),
        ] {
            let q = QTensor::quantize(&w, LinearScheme::symmetric(bits, g))?;
            let stats = ErrorStats::between(&w, &q.dequantize(&Device::Cpu)?)?;
            println!(
                "{:<6} {:<22} {:>8} {:>10.3e} {:>10.2} {:>14}",
                bits.count(),
                name,
                q.scales().len(),
                stats.mse,
                stats.snr_db,
                q.storage_bytes()
            );
        }
    }
    println!("(f32 weight: {} bytes)", rows * cols * 4);
    Ok(())
}
