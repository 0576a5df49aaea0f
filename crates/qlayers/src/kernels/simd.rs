//! The primitives a micro-kernel needs from an instruction set. The GEMM driver and the micro-kernel loop are written
//! once, generically over [`Int8Simd`]; each instruction set only implements these small operations.
//!
//! An integer vector holds `LANES` i32 lanes; as weights or activations it holds `4 * LANES` bytes, four
//! consecutive K values per lane.

/// Vector primitives of one instruction set. Every method is `#[inline(always)]` and `unsafe`.
///
/// # Safety
/// For every method: the caller runs inside a function compiled with the instruction set's target features (on a
/// CPU that has them), and every pointer it passes is valid for one vector of the access the method names.
pub(crate) trait Int8Simd {
    /// i32 lanes per vector.
    const LANES: usize;
    /// Value XORed into 8-bit weight codes when they are packed; their dot products then carry an offset of
    /// `WIDE_OFFSET` per weight (see [`Int8Simd::dot_wide`]).
    const WIDE_XOR: u8;
    /// Offset such that [`Int8Simd::dot_wide`] accumulates `sum((w - WIDE_OFFSET) * x)` for 8-bit codes `w`.
    const WIDE_OFFSET: i32;

    /// Vector of i32 lanes (or `4 * LANES` bytes).
    type I: Copy;
    /// Vector of f32 lanes.
    type F: Copy;

    /// All-zero integer vector.
    unsafe fn zero_i() -> Self::I;
    /// All-zero float vector.
    unsafe fn zero_f() -> Self::F;
    /// Loads `4 * LANES` weight bytes.
    unsafe fn load_bytes(p: *const u8) -> Self::I;
    /// Broadcasts 4 activation bytes to every lane.
    unsafe fn broadcast4(p: *const i8) -> Self::I;
    /// Bits `[shift, shift + width)` of every byte, as bytes (`shift` in 0..8).
    unsafe fn bit_field<const SHIFT: i32, const WIDTH: u32>(v: Self::I) -> Self::I;
    /// Loads a 16-byte table and repeats it in every 128-bit lane, for [`Int8Simd::lookup16`].
    unsafe fn load_table16(p: *const u8) -> Self::I;
    /// Every byte `i` of `idx` (each in 0..16) replaced by byte `i` of the table in `table` (from
    /// [`Int8Simd::load_table16`]): one byte shuffle.
    unsafe fn lookup16(table: Self::I, idx: Self::I) -> Self::I;
    /// `acc + sum over each lane's 4 bytes of (w - WIDE_OFFSET) * x` for 8-bit packed codes `w` (unsigned, XORed
    /// with `WIDE_XOR`) and signed activations `x` in `[-127, 127]`.
    unsafe fn dot_wide(acc: Self::I, w: Self::I, x: Self::I) -> Self::I;
    /// `acc + sum over each lane's 4 bytes of w * x` for codes `w` in `[0, 15]`.
    unsafe fn dot_narrow(acc: Self::I, w: Self::I, x: Self::I) -> Self::I;

    /// Integer vector with every lane `v`.
    unsafe fn splat_i(v: i32) -> Self::I;
    /// Float vector with every lane `v`.
    unsafe fn splat_f(v: f32) -> Self::F;
    /// Loads `LANES` i16 values widened to i32.
    unsafe fn load_i16(p: *const i16) -> Self::I;
    /// Loads `LANES` f32 values.
    unsafe fn load_f(p: *const f32) -> Self::F;
    /// Loads `LANES` IEEE half-precision values (their bits), widened to f32 exactly.
    unsafe fn load_f16(p: *const u16) -> Self::F;
    /// Stores `LANES` f32 values.
    unsafe fn store_f(p: *mut f32, v: Self::F);
    /// Lane-wise `a + b` on i32 (wrapping).
    unsafe fn add_i(a: Self::I, b: Self::I) -> Self::I;
    /// Lane-wise `a - b * c` on i32 (wrapping).
    unsafe fn sub_mul_i(a: Self::I, b: Self::I, c: Self::I) -> Self::I;
    /// Lane-wise i32 to f32 conversion (round to nearest even).
    unsafe fn to_f(v: Self::I) -> Self::F;
    /// Lane-wise `a * b`.
    unsafe fn mul_f(a: Self::F, b: Self::F) -> Self::F;
    /// Lane-wise `a * b + c`, rounded once.
    unsafe fn fma_f(a: Self::F, b: Self::F, c: Self::F) -> Self::F;

    /// Lane-wise `max(acc, bits of |x|)` over the `LANES` floats at `p`, comparing bit patterns as unsigned
    /// integers: for non-negative floats that order is the numeric one, and NaN and the infinities sort above every
    /// finite value, so the maximum also finds them.
    unsafe fn abs_bits_max(acc: Self::I, p: *const f32) -> Self::I;
    /// The largest lane of `v`, as an unsigned integer.
    unsafe fn max_lane(v: Self::I) -> u32;
    /// Lane-wise `min(max(v, -limit), limit)` for a positive `limit` (a NaN lane may come out as either bound or
    /// NaN: callers find NaN in their input first).
    unsafe fn clamp_f(v: Self::F, limit: f32) -> Self::F;
    /// Quantizes the `LANES` floats of `v` (already scaled): codes `round_half_even(v)`, which the caller keeps
    /// within `[-127, 127]`, stored as `LANES` bytes at `out`; returns `sums` plus the codes.
    unsafe fn quantize_store(v: Self::F, out: *mut i8, sums: Self::I) -> Self::I;
    /// The sum of the lanes of `v` (wrapping).
    unsafe fn sum_lanes(v: Self::I) -> i32;
}
