//! x86-64 kernel levels.

pub(crate) mod avx2;
pub(crate) mod avx512;
