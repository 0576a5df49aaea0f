//! Software prefetch, for the kernels and the model code's row loops.

/// Asks for the `bytes` at `p` (which may lie past the end of a buffer: a prefetch never faults) to be brought into
/// L1, a cache line at a time; does nothing where there is no prefetch instruction.
#[inline(always)]
pub fn prefetch(p: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..bytes).step_by(64) {
        // SAFETY: a prefetch is a hint; it reads nothing architecturally and never faults.
        unsafe { std::arch::x86_64::_mm_prefetch(p.wrapping_add(line).cast::<i8>(), std::arch::x86_64::_MM_HINT_T0) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}
