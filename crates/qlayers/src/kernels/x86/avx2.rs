//! AVX2 level: `vpmaddubsw` multiplies unsigned by signed bytes into saturating i16 pairs. 4- and 2-bit codes
//! (at most 15) never saturate. 8-bit codes are packed as signed bytes (`code ^ 0x80`) and multiplied with the
//! sign trick, `|w| * sign(x, w)`, whose pairs stay within `2 * 128 * 127 < 2^15`: exact, with an offset of 128.
//! 4-bit codes looked up in a table become 8-bit codes in that form: the table holds them XORed alike.

use std::arch::x86_64::*;

use crate::kernels::simd::Int8Simd;

/// The AVX2 level's vector primitives.
pub(crate) struct Avx2;

impl Int8Simd for Avx2 {
    const LANES: usize = 8;
    const WIDE_XOR: u8 = 0x80;
    const WIDE_OFFSET: i32 = 128;
    type I = __m256i;
    type F = __m256;

    #[inline(always)]
    unsafe fn zero_i() -> Self::I {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn zero_f() -> Self::F {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn load_bytes(p: *const u8) -> Self::I {
        _mm256_loadu_si256(p as *const __m256i)
    }
    #[inline(always)]
    unsafe fn broadcast4(p: *const i8) -> Self::I {
        _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32))
    }
    #[inline(always)]
    unsafe fn bit_field<const SHIFT: i32, const WIDTH: u32>(v: Self::I) -> Self::I {
        let mask = _mm256_set1_epi8(((1u32 << WIDTH) - 1) as i8);
        _mm256_and_si256(_mm256_srli_epi16::<SHIFT>(v), mask)
    }
    #[inline(always)]
    unsafe fn load_table16(p: *const u8) -> Self::I {
        _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn lookup16(table: Self::I, idx: Self::I) -> Self::I {
        _mm256_shuffle_epi8(table, idx)
    }
    #[inline(always)]
    unsafe fn dot_wide(acc: Self::I, w: Self::I, x: Self::I) -> Self::I {
        let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn dot_narrow(acc: Self::I, w: Self::I, x: Self::I) -> Self::I {
        let pairs = _mm256_maddubs_epi16(w, x);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> Self::I {
        _mm256_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn splat_f(v: f32) -> Self::F {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn load_i16(p: *const i16) -> Self::I {
        _mm256_cvtepi16_epi32(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn load_f(p: *const f32) -> Self::F {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self::F {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn store_f(p: *mut f32, v: Self::F) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn add_i(a: Self::I, b: Self::I) -> Self::I {
        _mm256_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sub_mul_i(a: Self::I, b: Self::I, c: Self::I) -> Self::I {
        _mm256_sub_epi32(a, _mm256_mullo_epi32(b, c))
    }
    #[inline(always)]
    unsafe fn to_f(v: Self::I) -> Self::F {
        _mm256_cvtepi32_ps(v)
    }
    #[inline(always)]
    unsafe fn mul_f(a: Self::F, b: Self::F) -> Self::F {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma_f(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn abs_bits_max(acc: Self::I, p: *const f32) -> Self::I {
        _mm256_max_epu32(acc, _mm256_and_si256(_mm256_loadu_si256(p as *const __m256i), _mm256_set1_epi32(0x7fff_ffff)))
    }
    #[inline(always)]
    unsafe fn max_lane(v: Self::I) -> u32 {
        let m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
        let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
        _mm_cvtsi128_si32(m) as u32
    }
    #[inline(always)]
    unsafe fn clamp_f(v: Self::F, limit: f32) -> Self::F {
        _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-limit)), _mm256_set1_ps(limit))
    }
    #[inline(always)]
    unsafe fn quantize_store(v: Self::F, out: *mut i8, sums: Self::I) -> Self::I {
        // The conversion rounds to nearest even (the default rounding mode, which Rust never changes).
        let codes = _mm256_cvtps_epi32(v);
        // Codes fit a byte, so the saturating packs are exact: each 128-bit lane ends up with its four codes in
        // its low four bytes.
        let words = _mm256_packs_epi32(codes, codes);
        let bytes = _mm256_packs_epi16(words, words);
        let low = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256::<1>(bytes));
        _mm_storel_epi64(out as *mut __m128i, low);
        _mm256_add_epi32(sums, codes)
    }
    #[inline(always)]
    unsafe fn sum_lanes(v: Self::I) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}
