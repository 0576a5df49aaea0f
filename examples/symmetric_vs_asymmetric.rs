//! Symmetric vs asymmetric quantization on a skewed tensor (like the output of a ReLU): asymmetric spends its
//! codes on the range the values really cover.
//!
//! `cargo run --example symmetric_vs_asymmetric`

use candle_core::{Device, Tensor};
use qlayers::{metrics::ErrorStats, Bits, Granularity, LinearScheme, QTensor};

fn main() -> anyhow::Result<()> {
    // Mostly positive values: |N(0.5, 1)| shifted, so the negative half of a symmetric grid is wasted.
    let x = (Tensor::randn(0.5f32, 1.0, (64, 256), &Device::Cpu)?.abs()? - 0.2)?;
    println!("{:<6} {:<12} {:>10} {:>10} {:>12}", "bits", "mapping", "MSE", "SNR (dB)", "zero point");
    for bits in [Bits::B8, Bits::B4, Bits::B2] {
        for scheme in [
            LinearScheme::symmetric(bits, Granularity::PerTensor),
            LinearScheme::asymmetric(bits, Granularity::PerTensor),
        ] {
            let q = QTensor::quantize(&x, scheme)?;
            let stats = ErrorStats::between(&x, &q.dequantize(&Device::Cpu)?)?;
            let mapping = if scheme.symmetric { "symmetric" } else { "asymmetric" };
            println!(
                "{:<6} {:<12} {:>10.3e} {:>10.2} {:>12}",
                bits.count(),
                mapping,
                stats.mse,
                stats.snr_db,
                q.zero_points()[0]
            );
        }
    }
    Ok(())
}
