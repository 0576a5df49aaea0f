//! Picking the next token from a decoder's logits: greedy, or sampled with a temperature and nucleus (top-p)
//! cut-off from a seeded generator, so that a seed reproduces a run.

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::models::llama::argmax;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token.
    Greedy,
    /// A draw from `softmax(logits / temperature)` restricted to the smallest set of most likely tokens whose
    /// probabilities add up to `top_p`.
    Random {
        /// Above 0; higher flattens the distribution.
        temperature: f32,
        /// In `(0, 1]`; 1 keeps every token.
        top_p: f32,
        /// Seed of the generator: the same seed, prompt and model give the same tokens.
        seed: u64,
    },
}

impl Sampling {
    /// The sampling `--temperature`, `--top-p` and `--seed` describe: greedy at temperature 0, else random with a
    /// fresh seed unless one is given.
    pub fn from_options(temperature: f32, top_p: f32, seed: Option<u64>) -> Result<Self> {
        if !temperature.is_finite() || temperature < 0.0 {
            bail!("temperature must be 0 (greedy) or positive, got {temperature}");
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            bail!("top-p must be in (0, 1], got {top_p}");
        }
        if temperature == 0.0 {
            return Ok(Self::Greedy);
        }
        Ok(Self::Random { temperature, top_p, seed: seed.unwrap_or_else(rand::random) })
    }
}

/// Draws tokens per a [`Sampling`].
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// A sampler whose generator starts from the sampling's seed.
    pub fn new(sampling: Sampling) -> Self {
        let seed = match sampling {
            Sampling::Greedy => 0,
            Sampling::Random { seed, .. } => seed,
        };
        Self { sampling, rng: StdRng::seed_from_u64(seed) }
    }

    /// The next token given `logits` (one per vocabulary entry).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let Sampling::Random { temperature, top_p, .. } = self.sampling else { return argmax(logits) };
        let nucleus = nucleus(logits, temperature, top_p);
        let total: f64 = nucleus.iter().map(|&(_, p)| p).sum();
        let mut draw = self.rng.random::<f64>() * total;
        for &(id, p) in &nucleus {
            draw -= p;
            if draw < 0.0 {
                return id;
            }
        }
        nucleus.last().map_or(0, |&(id, _)| id)
    }
}

/// The most likely tokens, most likely first, whose probabilities (at `temperature`, unnormalized within the
/// set) add up to at least `top_p`. Finds them by partial selection of a growing top-k rather than sorting the
/// whole vocabulary.
fn nucleus(logits: &[f32], temperature: f32, top_p: f32) -> Vec<(u32, f64)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weight = |l: f32| (f64::from(l - max) / f64::from(temperature)).exp();
    let total: f64 = logits.iter().map(|&l| weight(l)).sum();
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    let mut k = 64.min(ids.len());
    loop {
        if k < ids.len() {
            ids.select_nth_unstable_by(k - 1, by_logit);
        }
        let top = &mut ids[..k];
        top.sort_unstable_by(by_logit);
        let mut mass = 0.0;
        for (i, &id) in top.iter().enumerate() {
            mass += weight(logits[id as usize]) / total;
            if mass >= f64::from(top_p) || i + 1 == logits.len() {
                return top[..=i].iter().map(|&id| (id, weight(logits[id as usize]))).collect();
            }
        }
        k = (2 * k).min(ids.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert_eq!(Sampling::from_options(0.0, 1.0, None).unwrap(), Sampling::Greedy);
        assert!(Sampling::from_options(-1.0, 0.9, None).is_err());
        assert!(Sampling::from_options(f32::NAN, 0.9, None).is_err());
        assert!(Sampling::from_options(0.7, 0.0, None).is_err());
        assert!(Sampling::from_options(0.7, 1.5, None).is_err());
    }

    #[test]
    fn nucleus_keeps_the_fewest_most_likely_tokens() {
        // Probabilities at temperature 1 of logits ln([0.5, 0.3, 0.15, 0.05]).
        let logits: Vec<f32> = [0.05f32, 0.5, 0.15, 0.3].iter().map(|p| p.ln()).collect();
        let ids = |top_p| nucleus(&logits, 1.0, top_p).into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert_eq!(ids(0.5), vec![1]);
        assert_eq!(ids(0.7), vec![1, 3]);
        assert_eq!(ids(0.9), vec![1, 3, 2]);
        assert_eq!(ids(1.0), vec![1, 3, 2, 0]);
        // A large vocabulary with a flat tail needs more than the first top-k round.
        let flat = vec![0f32; 1000];
        assert_eq!(nucleus(&flat, 1.0, 0.5).len(), 500);
    }

    #[test]
    fn a_seed_reproduces_draws_and_the_draws_follow_the_distribution() {
        let logits: Vec<f32> = [0.6f32, 0.3, 0.1].iter().map(|p| p.ln()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(Sampling::Random { temperature: 1.0, top_p: 1.0, seed });
            (0..3000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let counts = draw(7).iter().fold([0usize; 3], |mut c, &id| {
            c[id as usize] += 1;
            c
        });
        for (count, p) in counts.iter().zip([0.6, 0.3, 0.1]) {
            assert!((*count as f64 / 3000.0 - p).abs() < 0.03, "{counts:?}");
        }
        // Greedy ignores the generator.
        assert_eq!(Sampler::new(Sampling::Greedy).sample(&logits), 0);
    }
}
