//! Quantize a tensor to int8, look at its scale, zero point and codes, and dequantize it back.
//!
//! `cargo run --example quantize_tensor`

use candle_core::{Device, Tensor};
use qlayers::{metrics::ErrorStats, Bits, Granularity, LinearScheme, QTensor};

fn main() -> anyhow::Result<()> {
    let x = Tensor::new(&[-1.8f32, -0.5, 0.0, 0.25, 0.9, 2.6], &Device::Cpu)?;
    for scheme in [
        LinearScheme::symmetric(Bits::B8, Granularity::PerTensor),
        LinearScheme::asymmetric_unsigned(Bits::B8, Granularity::PerTensor),
    ] {
        let q = QTensor::quantize(&x, scheme)?;
        let x_hat = q.dequantize(&Device::Cpu)?;
        println!("{} int8", if scheme.symmetric { "symmetric" } else { "asymmetric uint8" });
        println!("  scale      {:.6}", q.scales()[0]);
        println!("  zero point {}", q.zero_points()[0]);
        println!("  codes      {:?}", q.codes());
        println!("  x          {:?}", x.to_vec1::<f32>()?);
        println!("  x_hat      {:?}", x_hat.to_vec1::<f32>()?);
        println!("  {}", ErrorStats::between(&x, &x_hat)?);
    }
    Ok(())
}
