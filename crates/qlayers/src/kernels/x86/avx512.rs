//! AVX-512 VNNI level: `vpdpbusd` multiplies unsigned by signed bytes and adds four products into each i32 lane,
//! without saturation, so every code width goes straight in.

use std::arch::x86_64::*;

use crate::kernels::simd::Int8Simd;

/// The AVX-512 VNNI level's vector primitives.
pub(crate) struct Avx512Vnni;

impl Int8Simd for Avx512Vnni {
    const LANES: usize = 16;
    const WIDE_XOR: u8 = 0;
    const WIDE_OFFSET: i32 = 0;
    type I = __m512i;
    type F = __m512;

    #[inline(always)]
    unsafe fn zero_i() -> Self::I {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn zero_f() -> Self::F {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load_bytes(p: *const u8) -> Self::I {
        _mm512_loadu_si512(p as *const __m512i)
    }
    #[inline(always)]
    unsafe fn broadcast4(p: *const i8) -> Self::I {
        _mm512_set1_epi32(std::ptr::read_unaligned(p as *const i32))
    }
    #[inline(always)]
    unsafe fn bit_field<const SHIFT: i32, const WIDTH: u32>(v: Self::I) -> Self::I {
        let mask = _mm512_set1_epi8(((1u32 << WIDTH) - 1) as i8);
        let shifted = match SHIFT {
            0 => v,
            2 => _mm512_srli_epi16::<2>(v),
            4 => _mm512_srli_epi16::<4>(v),
            6 => _mm512_srli_epi16::<6>(v),
            _ => unreachable!("bit fields start at 0, 2, 4 or 6"),
        };
        _mm512_and_si512(shifted, mask)
    }
    #[inline(always)]
    unsafe fn load_table16(p: *const u8) -> Self::I {
        _mm512_broadcast_i32x4(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn lookup16(table: Self::I, idx: Self::I) -> Self::I {
        _mm512_shuffle_epi8(table, idx)
    }
    #[inline(always)]
    unsafe fn dot_wide(acc: Self::I, w: Self::I, x: Self::I) -> Self::I {
        _mm512_dpbusd_epi32(acc, w, x)
    }
    #[inline(always)]
    unsafe fn dot_narrow(acc: Self::I, w: Self::I, x: Self::I) -> Self::I {
        _mm512_dpbusd_epi32(acc, w, x)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> Self::I {
        _mm512_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> Self::F {
        _mm512_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load_i16(p: *const i16) -> Self::I {
        _mm512_cvtepi16_epi32(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> Self::F {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self::F {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: Self::F) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add_i(a: Self::I, b: Self::I) -> Self::I {
        _mm512_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sub_mul_i(a: Self::I, b: Self::I, c: Self::I) -> Self::I {
        _mm512_sub_epi32(a, _mm512_mullo_epi32(b, c))
    }
    #[inline(always)]
    unsafe fn to_f(v: Self::I) -> Self::F {
        _mm512_cvtepi32_ps(v)
    }
    #[inline(always)]
    unsafe fn mul_f(a: Self::F, b: Self::F) -> Self::F {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma_f(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn abs_bits_max(acc: Self::I, p: *const f32) -> Self::I {
        _mm512_max_epu32(acc, _mm512_and_si512(_mm512_loadu_si512(p as *const __m512i), _mm512_set1_epi32(0x7fff_ffff)))
    }
    #[inline(always)]
    unsafe fn max_lane(v: Self::I) -> u32 {
        _mm512_reduce_max_epu32(v)
    }
    #[inline(always)]
    unsafe fn clamp_f(v: Self::F, limit: f32) -> Self::F {
        _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-limit)), _mm512_set1_ps(limit))
    }
    #[inline(always)]
    unsafe fn quantize_store(v: Self::F, out: *mut i8, sums: Self::I) -> Self::I {
        // The conversion rounds to nearest even (the default rounding mode, which Rust never changes).
        let codes = _mm512_cvtps_epi32(v);
        _mm_storeu_si128(out as *mut __m128i, _mm512_cvtepi32_epi8(codes));
        _mm512_add_epi32(sums, codes)
    }
    #[inline(always)]
    unsafe fn sum_lanes(v: Self::I) -> i32 {
        _mm512_reduce_add_epi32(v)
    }
}
