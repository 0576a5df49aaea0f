//! 2-bit codes packed four to a byte, lowest bits first, and unpacked again.
//!
//! `cargo run --example packing`

use candle_core::{Device, Tensor};
use qlayers::{pack, Bits, Granularity, LinearScheme, QTensor};

fn main() -> anyhow::Result<()> {
    let codes = [1u8, 0, 3, 2, 2, 1];
    let packed = pack::pack(&codes, Bits::B2)?;
    println!("codes  {codes:?}");
    println!("packed {packed:?} = {:?}", packed.iter().map(|b| format!("{b:08b}")).collect::<Vec<_>>());
    println!("back   {:?}", pack::unpack(&packed, Bits::B2, codes.len())?);

    let x = Tensor::randn(0f32, 1.0, (4, 64), &Device::Cpu)?;
    let q = QTensor::quantize(&x, LinearScheme::asymmetric_unsigned(Bits::B2, Granularity::PerGroup { size: 32 }))?;
    println!(
        "a 4 x 64 tensor at 2 bits: {} code bytes (f32: {}), first codes {:?}",
        q.packed_codes().len(),
        4 * 64 * 4,
        &q.codes()[..8]
    );
    Ok(())
}
