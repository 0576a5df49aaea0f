//! 16-entry codebooks of 4-bit weight schemes: NF4's fixed levels, or levels learned per tensor by k-means.
//!
//! A codebook's levels lie in `[-1, 1]` and are stored as 8-bit integers `L_i = round(127 * level_i)`: a weight in a
//! group of absmax `a` decodes to `a / 127 * L[code]`, which the kernels compute exactly as an 8-bit code times the
//! group's scale `a / 127`.

use super::nf4::NF4_LEVELS;

/// Where the 16 levels of a [`crate::Scheme::Codebook`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codebook {
    /// The NormalFloat-4 levels of QLoRA ([`NF4_LEVELS`]), rounded to multiples of 1/127: each moves by at most
    /// 1/254 of the group's absmax.
    Nf4,
    /// 16 levels learned per tensor by Lloyd's algorithm on the group-normalized values (see [`kmeans_levels`]).
    KMeans,
}

/// Index of the level held at exactly 0 (in NF4 and in every learned codebook), so that zeros stay exact.
pub const ZERO_LEVEL: usize = 7;

/// Most Lloyd iterations [`kmeans_levels`] runs.
pub const KMEANS_ITERATIONS: usize = 50;

/// `round(127 * level)` for each level (ties away from zero, clamped to `[-127, 127]`).
pub fn round_levels(levels: &[f32; 16]) -> [i8; 16] {
    levels.map(|l| (127.0 * l).round().clamp(-127.0, 127.0) as i8)
}

/// NF4's levels as 8-bit integers.
pub fn nf4_levels() -> [i8; 16] {
    round_levels(&NF4_LEVELS)
}

/// 16 ascending levels for `normalized` values (each in `[-1, 1]`), by Lloyd's algorithm (1-D k-means) from the
/// NF4 levels, minimizing the squared error of every value to its nearest level:
///
/// - the values are sorted once, so each cluster is a contiguous run between the midpoints of its level's
///   neighbours (a value on a midpoint belongs to the lower level, as the encoder rounds);
/// - each iteration moves every level to the mean of its cluster, except level [`ZERO_LEVEL`], held at 0 so that
///   zeros (all-zero groups, pruned weights) stay exact;
/// - a cluster left empty keeps its level where it is (it still splits the line, and may win values back as its
///   neighbours move); the levels stay ascending, since each mean lies strictly between its neighbours' midpoints;
/// - it stops when no value changes cluster, or after [`KMEANS_ITERATIONS`] iterations.
///
/// Deterministic: the same values give the same levels. Cost: one sort, then `O(n)` per iteration.
pub fn kmeans_levels(normalized: &[f32]) -> [f32; 16] {
    let mut sorted = normalized.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let mut levels = NF4_LEVELS.map(f64::from);
    let mut ends = [0usize; 16];
    for _ in 0..KMEANS_ITERATIONS {
        let next: [usize; 16] = std::array::from_fn(|j| match levels.get(j + 1) {
            Some(up) => sorted.partition_point(|&v| f64::from(v) <= (levels[j] + up) * 0.5),
            None => sorted.len(),
        });
        if next == ends {
            break;
        }
        ends = next;
        for j in (0..16).filter(|&j| j != ZERO_LEVEL) {
            let cluster = &sorted[if j == 0 { 0 } else { ends[j - 1] }..ends[j]];
            if !cluster.is_empty() {
                levels[j] = cluster.iter().map(|&v| f64::from(v)).sum::<f64>() / cluster.len() as f64;
            }
        }
    }
    levels.map(|l| l as f32)
}

/// The code of the level nearest to `t` among ascending `levels` (ties to the lower level).
pub fn nearest_code(levels: &[i8; 16], t: f32) -> u8 {
    levels.windows(2).take_while(|pair| t > (f32::from(pair[0]) + f32::from(pair[1])) * 0.5).count() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nf4_levels_move_by_at_most_half_a_step() {
        for (l, exact) in nf4_levels().iter().zip(NF4_LEVELS) {
            assert!((f32::from(*l) / 127.0 - exact).abs() <= 0.5 / 127.0 + 1e-7);
        }
        assert_eq!(nf4_levels()[ZERO_LEVEL], 0);
        assert_eq!((nf4_levels()[0], nf4_levels()[15]), (-127, 127));
    }

    #[test]
    fn kmeans_fits_the_values_keeps_zero_and_handles_empty_clusters() {
        // Three distinct values: most clusters are empty, the fitted ones land on the values.
        let values: Vec<f32> = (0..300).map(|i| [-0.5f32, 0.0, 0.75][i % 3]).collect();
        let levels = kmeans_levels(&values);
        assert!(levels.windows(2).all(|w| w[0] < w[1]), "{levels:?}");
        assert_eq!(levels[ZERO_LEVEL], 0.0);
        for v in [-0.5, 0.75] {
            assert!(levels.contains(&v), "{v} in {levels:?}");
        }
        // Deterministic, and a no-op on no data.
        assert_eq!(kmeans_levels(&values), levels);
        assert_eq!(kmeans_levels(&[]), NF4_LEVELS);
    }

    #[test]
    fn nearest_code_rounds_to_the_nearest_level_ties_down() {
        let levels = nf4_levels();
        for (code, &l) in levels.iter().enumerate() {
            assert_eq!(nearest_code(&levels, f32::from(l)), code as u8);
        }
        let mid = (f32::from(levels[3]) + f32::from(levels[4])) * 0.5;
        assert_eq!(nearest_code(&levels, mid), 3);
        assert_eq!(nearest_code(&levels, -200.0), 0);
        assert_eq!(nearest_code(&levels, 200.0), 15);
    }
}
