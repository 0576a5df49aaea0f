//! The portable kernel level: plain Rust over fixed-size arrays, which the compiler vectorizes for whatever target
//! it builds for. It is what non-x86 targets run and the baseline the SIMD levels are tested against.

use super::simd::Int8Simd;

/// Lanes of the portable vectors.
const LANES: usize = 16;

/// The portable level's vector primitives.
pub(crate) struct Reference;

impl Int8Simd for Reference {
    const LANES: usize = LANES;
    const WIDE_XOR: u8 = 0;
    const WIDE_OFFSET: i32 = 0;
    type I = [i32; LANES];
    type F = [f32; LANES];

    #[inline(always)]
    unsafe fn zero_i() -> Self::I {
        [0; LANES]
    }
    #[inline(always)]
    unsafe fn zero_f() -> Self::F {
        [0.0; LANES]
    }
    #[inline(always)]
    unsafe fn load_bytes(p: *const u8) -> Self::I {
        std::ptr::read_unaligned(p as *const [i32; LANES])
    }
    #[inline(always)]
    unsafe fn broadcast4(p: *const i8) -> Self::I {
        [std::ptr::read_unaligned(p as *const i32); LANES]
    }
    #[inline(always)]
    unsafe fn bit_field<const SHIFT: i32, const WIDTH: u32>(v: Self::I) -> Self::I {
        let mask = u32::from_ne_bytes([((1u32 << WIDTH) - 1) as u8; 4]);
        v.map(|lane| ((lane as u32 >> SHIFT) & mask) as i32)
    }
    #[inline(always)]
    unsafe fn load_table16(p: *const u8) -> Self::I {
        let table = std::ptr::read_unaligned(p as *const [u8; 16]);
        from_bytes(std::array::from_fn(|j| table[j % 16]))
    }
    #[inline(always)]
    unsafe fn lookup16(table: Self::I, idx: Self::I) -> Self::I {
        // As a byte shuffle does: each byte picks from the 16 table bytes of its own 128-bit lane.
        let (table, idx) = (to_bytes(table), to_bytes(idx));
        from_bytes(std::array::from_fn(|j| table[(j & !15) | usize::from(idx[j] & 15)]))
    }
    #[inline(always)]
    unsafe fn dot_wide(acc: Self::I, w: Self::I, x: Self::I) -> Self::I {
        dot_lanes(acc, w, x)
    }
    #[inline(always)]
    unsafe fn dot_narrow(acc: Self::I, w: Self::I, x: Self::I) -> Self::I {
        dot_lanes(acc, w, x)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> Self::I {
        [v; LANES]
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> Self::F {
        [v; LANES]
    }
    #[inline(always)]
    unsafe fn load_i16(p: *const i16) -> Self::I {
        std::ptr::read_unaligned(p as *const [i16; LANES]).map(i32::from)
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> Self::F {
        std::ptr::read_unaligned(p as *const [f32; LANES])
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self::F {
        std::ptr::read_unaligned(p as *const [u16; LANES]).map(|bits| half::f16::from_bits(bits).to_f32())
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: Self::F) {
        std::ptr::write_unaligned(p as *mut [f32; LANES], v)
    }
    #[inline(always)]
    unsafe fn add_i(a: Self::I, b: Self::I) -> Self::I {
        std::array::from_fn(|i| a[i].wrapping_add(b[i]))
    }
    #[inline(always)]
    unsafe fn sub_mul_i(a: Self::I, b: Self::I, c: Self::I) -> Self::I {
        std::array::from_fn(|i| a[i].wrapping_sub(b[i].wrapping_mul(c[i])))
    }
    #[inline(always)]
    unsafe fn to_f(v: Self::I) -> Self::F {
        v.map(|x| x as f32)
    }
    #[inline(always)]
    unsafe fn mul_f(a: Self::F, b: Self::F) -> Self::F {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    unsafe fn fma_f(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        std::array::from_fn(|i| a[i].mul_add(b[i], c[i]))
    }
    #[inline(always)]
    unsafe fn abs_bits_max(acc: Self::I, p: *const f32) -> Self::I {
        let x = std::ptr::read_unaligned(p as *const [f32; LANES]);
        std::array::from_fn(|i| (acc[i] as u32).max(x[i].to_bits() & 0x7fff_ffff) as i32)
    }
    #[inline(always)]
    unsafe fn max_lane(v: Self::I) -> u32 {
        v.into_iter().fold(0, |m, lane| m.max(lane as u32))
    }
    #[inline(always)]
    unsafe fn clamp_f(v: Self::F, limit: f32) -> Self::F {
        v.map(|x| x.max(-limit).min(limit))
    }
    #[inline(always)]
    unsafe fn quantize_store(v: Self::F, out: *mut i8, sums: Self::I) -> Self::I {
        // Adding 1.5 * 2^23 to a float below 2^22 in magnitude leaves the integer nearest to it (ties to even) in
        // the low mantissa bits: vectorizes everywhere, unlike `round_ties_even` without SSE4.1.
        const ROUNDER: f32 = 12_582_912.0;
        let codes: [i32; LANES] = std::array::from_fn(|i| (v[i] + ROUNDER).to_bits() as i32 - ROUNDER.to_bits() as i32);
        std::ptr::write_unaligned(out as *mut [i8; LANES], codes.map(|c| c as i8));
        std::array::from_fn(|i| sums[i].wrapping_add(codes[i]))
    }
    #[inline(always)]
    unsafe fn sum_lanes(v: Self::I) -> i32 {
        v.into_iter().fold(0, i32::wrapping_add)
    }
}

/// The bytes of a vector, in memory order.
#[inline(always)]
fn to_bytes(v: [i32; LANES]) -> [u8; 4 * LANES] {
    // SAFETY: both are plain data of the same size.
    unsafe { std::mem::transmute::<[i32; LANES], [u8; 4 * LANES]>(v) }
}

/// The vector whose bytes, in memory order, are `b`.
#[inline(always)]
fn from_bytes(b: [u8; 4 * LANES]) -> [i32; LANES] {
    // SAFETY: both are plain data of the same size.
    unsafe { std::mem::transmute::<[u8; 4 * LANES], [i32; LANES]>(b) }
}

/// `acc[l] += sum_j w[4l + j] (unsigned) * x[4l + j] (signed)`.
#[inline(always)]
fn dot_lanes(acc: [i32; LANES], w: [i32; LANES], x: [i32; LANES]) -> [i32; LANES] {
    std::array::from_fn(|l| {
        let (wb, xb) = (w[l].to_le_bytes(), x[l].to_le_bytes());
        let dot: i32 = (0..4).map(|j| i32::from(wb[j]) * i32::from(xb[j] as i8)).sum();
        acc[l].wrapping_add(dot)
    })
}
