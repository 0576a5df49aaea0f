//! The NormalFloat-4 codebook (Dettmers et al., QLoRA, 2023): 16 values at the quantiles of a standard normal,
//! normalised to `[-1, 1]`, with an exact zero.

/// The 16 NF4 levels, ascending; code `i` stands for `NF4_LEVELS[i] * absmax`.
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// The code of the level nearest to `normalized` (a value in `[-1, 1]`); ties go to the lower level.
pub fn nearest_level(normalized: f32) -> u8 {
    // Midpoints between consecutive levels split the line into 16 cells.
    let cell = NF4_LEVELS.windows(2).take_while(|pair| normalized > (pair[0] + pair[1]) * 0.5).count();
    cell as u8
}
