//! Non-linear (NF4) vs linear 4-bit quantization of normally distributed weights, with the same block size: NF4
//! puts its 16 levels where a normal distribution puts its values.
//!
//! `cargo run --example nf4_vs_int4`

use candle_core::{Device, Tensor};
use qlayers::{metrics::ErrorStats, Bits, Granularity, LinearScheme, QTensor, Scheme};

fn main() -> anyhow::Result<()> {
    let w = (Tensor::randn(0f32, 1.0, (256, 1024), &Device::Cpu)? * 0.02)?;
    let group = Granularity::PerGroup { size: 64 };
    for (name, scheme) in [
        ("NF4, absmax per 64", Scheme::Nf4 { block_size: 64 }),
        ("int4 symmetric, per 64", LinearScheme::symmetric(Bits::B4, group).into()),
        ("int4 asymmetric, per 64", LinearScheme::asymmetric_unsigned(Bits::B4, group).into()),
    ] {
        let q = QTensor::quantize(&w, scheme)?;
        println!("{name:<26} {}", ErrorStats::between(&w, &q.dequantize(&Device::Cpu)?)?);
    }
    Ok(())
}
