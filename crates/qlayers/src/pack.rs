//! Bit packing of 2- and 4-bit codes: consecutive values, lowest bits first, a short tail zero-filled.
//!
//! `[1, 0, 3, 2]` at 2 bits packs to `0b10_11_00_01 = 177`. 8-bit codes are stored as they are.

use crate::error::{QuantError, Result};
use crate::quant::Bits;

/// Number of bytes that `len` codes of `bits` take when packed.
pub fn packed_len(len: usize, bits: Bits) -> usize {
    len.div_ceil(bits.per_byte())
}

/// Packs `values` (each below `2^bits`) into bytes; errors on a value that does not fit.
pub fn pack(values: &[u8], bits: Bits) -> Result<Vec<u8>> {
    let limit = 1u16 << bits.count();
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| u16::from(**v) >= limit) {
        return Err(QuantError::CodeOutOfRange { index, value, bits: bits.count() });
    }
    Ok(pack_unchecked(values, bits))
}

/// Packs values already known to fit in `bits`; higher bits of a value would spill into its neighbour.
pub(crate) fn pack_unchecked(values: &[u8], bits: Bits) -> Vec<u8> {
    let b = bits.count();
    if b == 8 {
        return values.to_vec();
    }
    values
        .chunks(bits.per_byte())
        .map(|chunk| chunk.iter().enumerate().fold(0u8, |byte, (i, &v)| byte | (v << (i as u32 * b))))
        .collect()
}

/// Unpacks the first `len` codes of `packed`; errors if `packed` holds fewer than `len` codes.
pub fn unpack(packed: &[u8], bits: Bits, len: usize) -> Result<Vec<u8>> {
    let expected = packed_len(len, bits);
    if packed.len() < expected {
        return Err(QuantError::PackedTooShort { len, bits: bits.count(), expected, got: packed.len() });
    }
    let b = bits.count();
    if b == 8 {
        return Ok(packed[..len].to_vec());
    }
    let per_byte = bits.per_byte();
    let mask = ((1u16 << b) - 1) as u8;
    Ok((0..len).map(|i| (packed[i / per_byte] >> ((i % per_byte) as u32 * b)) & mask).collect())
}
