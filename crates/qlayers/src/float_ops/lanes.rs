//! A few f32 vector operations, one implementation per instruction set, so that the attention kernel is written
//! once. Multiply-adds are fused at every level (the portable one through `f32::mul_add`), so every level computes
//! the same bits.

/// A vector of `N` f32 lanes.
///
/// # Safety
/// For every method: the caller runs inside a function compiled with the level's target features (on a CPU that
/// has them), and every pointer it passes is valid for `N` floats.
pub trait F32Lanes: Copy {
    /// Lanes per vector.
    const N: usize;
    /// All zeros.
    unsafe fn zero() -> Self;
    /// `N` values from `src` (unaligned).
    unsafe fn load(src: *const f32) -> Self;
    /// `v` in every lane.
    unsafe fn splat(v: f32) -> Self;
    /// `self + a * b`, rounded once (a fused multiply-add).
    unsafe fn add_mul(self, a: Self, b: Self) -> Self;
    /// Writes the lanes to `dst` (unaligned).
    unsafe fn store(self, dst: *mut f32);

    /// `a * b`, as a plain multiply rounds it: `-0 + a * b` rounded once (adding `-0` changes no value, not even
    /// the sign of a zero).
    #[inline(always)]
    unsafe fn exact_product(a: Self, b: Self) -> Self {
        Self::splat(-0.0).add_mul(a, b)
    }
}

/// The vector level of the float kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Plain Rust for the target's baseline.
    Portable,
    /// AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// The float level that goes with the integer kernels' level ([`crate::kernels::selected_isa`], which reads
/// `QLAYERS_ISA`), so that one variable forces both; decided once.
pub fn level() -> Level {
    use crate::kernels::{selected_isa, Isa};
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| match selected_isa() {
        // VNNI implies AVX-512F, and the AVX2 level implies FMA.
        #[cfg(target_arch = "x86_64")]
        Ok(Isa::Avx512Vnni) => Level::Avx512,
        #[cfg(target_arch = "x86_64")]
        Ok(Isa::Avx2) => Level::Avx2,
        _ => Level::Portable,
    })
}

/// Folds `values` with `step` in 16 interleaved lanes, then merges the lanes in order with `merge`: the compiler
/// vectorizes it, and the same values always give the same result, at every level and whatever surrounds them.
#[inline(always)]
pub fn fold_lanes(values: &[f32], init: f32, step: impl Fn(f32, f32) -> f32, merge: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = step(*a, v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = step(*a, v);
    }
    acc.into_iter().fold(init, merge)
}

/// Eight lanes in plain Rust: the level every target has.
#[derive(Clone, Copy)]
pub struct Portable([f32; 8]);

impl F32Lanes for Portable {
    const N: usize = 8;
    unsafe fn zero() -> Self {
        Self([0.0; 8])
    }
    unsafe fn load(src: *const f32) -> Self {
        Self(std::ptr::read_unaligned(src.cast()))
    }
    unsafe fn splat(v: f32) -> Self {
        Self([v; 8])
    }
    unsafe fn add_mul(self, a: Self, b: Self) -> Self {
        Self(std::array::from_fn(|i| a.0[i].mul_add(b.0[i], self.0[i])))
    }
    unsafe fn store(self, dst: *mut f32) {
        std::ptr::write_unaligned(dst.cast(), self.0)
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::F32Lanes;

    /// Eight lanes of AVX2 (callers run inside `#[target_feature(enable = "avx2")]`).
    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    impl F32Lanes for Avx2 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Self(_mm256_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(src: *const f32) -> Self {
            Self(_mm256_loadu_ps(src))
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Self(_mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn add_mul(self, a: Self, b: Self) -> Self {
            Self(_mm256_fmadd_ps(a.0, b.0, self.0))
        }
        #[inline(always)]
        unsafe fn store(self, dst: *mut f32) {
            _mm256_storeu_ps(dst, self.0)
        }
    }

    /// Sixteen lanes of AVX-512F (callers run inside `#[target_feature(enable = "avx512f")]`).
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl F32Lanes for Avx512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            Self(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(src: *const f32) -> Self {
            Self(_mm512_loadu_ps(src))
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Self(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn add_mul(self, a: Self, b: Self) -> Self {
            Self(_mm512_fmadd_ps(a.0, b.0, self.0))
        }
        #[inline(always)]
        unsafe fn store(self, dst: *mut f32) {
            _mm512_storeu_ps(dst, self.0)
        }
    }
}
