//! Comparing embeddings with a reference: cosine similarity and nearest-neighbour overlap.

/// Cosine similarity of two vectors (in f64).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b)).max(f64::MIN_POSITIVE)
}

/// How close a set of embeddings is to a reference set of the same texts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Mean cosine between each embedding and its reference.
    pub cosine_mean: f64,
    /// Smallest such cosine.
    pub cosine_min: f64,
    /// Mean over texts of the share of its 10 nearest neighbours (by cosine, among the other texts) that are also
    /// among the reference's 10 nearest.
    pub top10_overlap: f64,
}

impl Agreement {
    /// Compares `ours` with `reference` (same texts, same order).
    pub fn between(ours: &[Vec<f32>], reference: &[Vec<f32>]) -> Self {
        assert_eq!(ours.len(), reference.len(), "the two sets must embed the same texts");
        let cosines: Vec<f64> = ours.iter().zip(reference).map(|(a, b)| cosine(a, b)).collect();
        let k = 10.min(ours.len().saturating_sub(1));
        let overlap = if k == 0 {
            1.0
        } else {
            let hits: usize = (0..ours.len())
                .map(|i| {
                    let theirs = nearest(reference, i, k);
                    nearest(ours, i, k).iter().filter(|j| theirs.contains(j)).count()
                })
                .sum();
            hits as f64 / (k * ours.len()) as f64
        };
        Self {
            cosine_mean: cosines.iter().sum::<f64>() / cosines.len().max(1) as f64,
            cosine_min: cosines.iter().copied().fold(1.0, f64::min),
            top10_overlap: overlap,
        }
    }
}

/// The `k` texts nearest to text `i` by cosine, nearest first.
fn nearest(set: &[Vec<f32>], i: usize, k: usize) -> Vec<usize> {
    let mut others: Vec<(f64, usize)> =
        (0..set.len()).filter(|&j| j != i).map(|j| (cosine(&set[i], &set[j]), j)).collect();
    others.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    others.into_iter().take(k).map(|(_, j)| j).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sets_agree_fully() {
        let set: Vec<Vec<f32>> = (0..20).map(|i| vec![(i as f32).sin(), (i as f32).cos(), 0.5]).collect();
        let a = Agreement::between(&set, &set);
        assert!((a.cosine_mean - 1.0).abs() < 1e-12 && (a.cosine_min - 1.0).abs() < 1e-12);
        assert_eq!(a.top10_overlap, 1.0);
        let flipped: Vec<Vec<f32>> = set.iter().map(|v| v.iter().map(|x| -x).collect()).collect();
        assert!(Agreement::between(&flipped, &set).cosine_mean < -0.99);
    }
}
