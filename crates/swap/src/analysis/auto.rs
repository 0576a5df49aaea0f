//! An automatic mixed-precision plan: the fewest bytes whose quality meets a target.
//!
//! Each layer's candidates are the schemes measured by [`super::sensitivity`] (smoothed candidates excepted: plans
//! do not carry smoothing), with their bytes and the loss of the whole model when that layer alone is quantized. Assuming losses add up, the cheapest assignment within a loss
//! budget is a multiple-choice knapsack, solved by Lagrangian relaxation: for a price `lambda` on loss, each layer
//! independently takes the scheme minimising `bytes + lambda * loss`, and a bisection finds the smallest price whose
//! total loss fits the budget. The plan is then evaluated for real; when interactions between layers make it miss
//! the target, the budget shrinks and the search runs again.

use std::str::FromStr;

use anyhow::{bail, Context, Result};
use qlayers::LayerScheme;
use serde::Serialize;

use super::probe::{Evaluation, Probe, Quality};
use super::sensitivity::LayerSensitivity;
use crate::arch::Task;
use crate::plan::{Plan, Rule};

/// What an automatic plan must reach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Target {
    /// BERT: mean cosine to the float embeddings at least this (`cosine>=0.999`).
    CosineAtLeast(f64),
    /// Llama: perplexity at most this fraction above the float model's (`ppl<=+2%`).
    PerplexityWithin(f64),
    /// A reranker: mean absolute difference of its raw scores from the float model's at most this
    /// (`score-error<=0.01`).
    ScoreErrorAtMost(f64),
}

impl Target {
    /// The largest sum of single-layer [`Quality::loss`]es the search allows: `1 - C` of mean cosine,
    /// `ln(1 + P)` nats of KL divergence (the log of the perplexity ratio it approximates), or the score error.
    pub fn budget(&self) -> f64 {
        match *self {
            Self::CosineAtLeast(c) => 1.0 - c,
            Self::PerplexityWithin(f) => f.ln_1p(),
            Self::ScoreErrorAtMost(e) => e,
        }
    }

    /// Checks that the target fits the model's task: a cosine for an embedder, a perplexity for a generator, a
    /// score error for a reranker.
    pub fn check_fits(&self, task: Task) -> Result<()> {
        let fits = match task {
            Task::Embedding => matches!(self, Self::CosineAtLeast(_)),
            Task::Generation => matches!(self, Self::PerplexityWithin(_)),
            Task::Reranking => matches!(self, Self::ScoreErrorAtMost(_)),
        };
        if !fits {
            bail!(
                "target {self} does not fit this model: embedders take cosine>=C, generators ppl<=+P%, rerankers \
                 score-error<=E"
            );
        }
        Ok(())
    }

    /// Whether `quality` meets the target, `float` being the float model's.
    pub fn met(&self, quality: &Quality, float: &Quality) -> bool {
        match (*self, quality, float) {
            (Self::CosineAtLeast(c), Quality::Embeddings { cosine_mean, .. }, _) => *cosine_mean >= c,
            (
                Self::PerplexityWithin(f),
                Quality::Tokens { perplexity, .. },
                Quality::Tokens { perplexity: base, .. },
            ) => *perplexity <= base * (1.0 + f),
            (Self::ScoreErrorAtMost(e), Quality::Scores { mean_error, .. }, _) => *mean_error <= e,
            _ => false,
        }
    }
}

/// Parses `cosine>=0.999`, `ppl<=+2%` (also `ppl<=2%`, `ppl<=0.02`) or `score-error<=0.01`.
impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
        let bad = || anyhow::anyhow!("unknown target {text:?}: expected cosine>=0.999, ppl<=+2% or score-error<=0.01");
        if let Some(value) = compact.strip_prefix("score-error<=") {
            let e: f64 = value.parse().map_err(|_| bad())?;
            if !(e > 0.0 && e.is_finite()) {
                bail!("a score-error target must be positive, got {e}");
            }
            return Ok(Self::ScoreErrorAtMost(e));
        }
        if let Some(value) = compact.strip_prefix("cosine>=") {
            let c: f64 = value.parse().map_err(|_| bad())?;
            if !(0.0..1.0).contains(&c) {
                bail!("a cosine target must be in [0, 1), got {c}");
            }
            return Ok(Self::CosineAtLeast(c));
        }
        if let Some(value) = compact.strip_prefix("ppl<=") {
            let value = value.trim_start_matches('+');
            let fraction = match value.strip_suffix('%') {
                Some(percent) => percent.parse::<f64>().map_err(|_| bad())? / 100.0,
                None => value.parse().map_err(|_| bad())?,
            };
            if !(fraction > 0.0 && fraction.is_finite()) {
                bail!("a perplexity target must allow a positive increase, got {value}");
            }
            return Ok(Self::PerplexityWithin(fraction));
        }
        Err(bad())
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CosineAtLeast(c) => write!(f, "cosine>={c}"),
            Self::PerplexityWithin(p) => write!(f, "ppl<=+{}%", p * 100.0),
            Self::ScoreErrorAtMost(e) => write!(f, "score-error<={e}"),
        }
    }
}

/// The plan found and how it did.
#[derive(Debug, Clone, Serialize)]
pub struct AutoPlan {
    /// The plan: the most common scheme as default, one rule per other layer.
    pub plan: Plan,
    /// Sum of the chosen schemes' single-layer losses.
    pub predicted_loss: f64,
    /// The plan evaluated on the probe.
    pub evaluation: Evaluation,
    /// Searches run (1 unless a plan missed the target and the budget shrank).
    pub rounds: usize,
}

/// Shrink factor of the budget after a plan misses the target.
const SHRINK: f64 = 0.7;
/// Searches before giving up.
const MAX_ROUNDS: usize = 10;

/// The cheapest plan over the measured candidates of `table` that meets `target` on `probe`.
pub fn auto_plan(probe: &Probe, table: &[LayerSensitivity], target: Target) -> Result<AutoPlan> {
    let float = probe.float().quality;
    target.check_fits(probe.task())?;
    if let Some(missing) = probe.layers().iter().find(|l| !table.iter().any(|t| t.layer.name == l.name)) {
        bail!("the sensitivity table has no row for layer {}: measure every layer", missing.name);
    }
    let candidates: Vec<Vec<(LayerScheme, f64, f64)>> = table
        .iter()
        .map(|layer| {
            layer
                .results
                .iter()
                .filter(|r| r.candidate.smoothing.is_none())
                .map(|r| {
                    let loss = r.loss.with_context(|| format!("{} has no measured loss", layer.layer.name))?;
                    Ok((r.candidate.scheme, r.bytes as f64, loss.max(0.0)))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    if candidates.iter().any(Vec::is_empty) {
        bail!("every layer needs at least one candidate scheme");
    }
    let mut budget = target.budget();
    for round in 1..=MAX_ROUNDS {
        let choice = cheapest_within(&candidates, budget);
        let predicted_loss: f64 = choice.iter().zip(&candidates).map(|(&c, layer)| layer[c].2).sum();
        let names = table.iter().map(|l| l.layer.name.as_str());
        let plan = plan_of(names.zip(choice.iter().zip(&candidates).map(|(&c, layer)| layer[c].0)));
        let evaluation = probe.evaluate(&plan)?;
        if target.met(&evaluation.quality, &float) {
            return Ok(AutoPlan { plan, predicted_loss, evaluation, rounds: round });
        }
        if predicted_loss == 0.0 {
            break;
        }
        budget = predicted_loss.min(budget) * SHRINK;
    }
    bail!("no plan over the candidate schemes meets {target}: add more accurate candidates (f32 keeps a layer exact)")
}

/// The index of each layer's chosen candidate: the fewest total bytes whose summed loss is at most `budget` (or the
/// least-loss choice everywhere when even that exceeds it).
fn cheapest_within(candidates: &[Vec<(LayerScheme, f64, f64)>], budget: f64) -> Vec<usize> {
    let pick = |lambda: f64| -> Vec<usize> {
        candidates
            .iter()
            .map(|layer| {
                let cost = |&(_, bytes, loss): &(LayerScheme, f64, f64)| bytes + lambda * loss;
                // Lowest cost; ties go to the lower loss, then to the earlier candidate.
                (0..layer.len())
                    .min_by(|&a, &b| {
                        cost(&layer[a]).total_cmp(&cost(&layer[b])).then(layer[a].2.total_cmp(&layer[b].2))
                    })
                    .unwrap_or(0)
            })
            .collect()
    };
    let loss_of = |choice: &[usize]| -> f64 { choice.iter().zip(candidates).map(|(&c, l)| l[c].2).sum() };
    if loss_of(&pick(0.0)) <= budget {
        return pick(0.0);
    }
    // Bisect the price on a log scale between "bytes only" and "loss only".
    let (mut low, mut high) = (1e-3f64, 1e18f64);
    if loss_of(&pick(high)) > budget {
        return pick(high);
    }
    for _ in 0..200 {
        let mid = (low * high).sqrt();
        if loss_of(&pick(mid)) <= budget {
            high = mid;
        } else {
            low = mid;
        }
    }
    let mut choice = pick(high);
    let slack = budget - loss_of(&choice);
    spend_slack(candidates, &mut choice, slack);
    choice
}

/// The Lagrangian choice can leave budget unspent (the next price step costs more than the slack): moves layers to
/// cheaper candidates that still fit, the most bytes saved per unit of loss added first.
fn spend_slack(candidates: &[Vec<(LayerScheme, f64, f64)>], choice: &mut [usize], mut slack: f64) {
    loop {
        let mut best: Option<(f64, usize, usize, f64)> = None;
        for (layer, options) in candidates.iter().enumerate() {
            let (_, bytes, loss) = options[choice[layer]];
            for (c, &(_, cheaper, more)) in options.iter().enumerate() {
                let (saved, added) = (bytes - cheaper, (more - loss).max(0.0));
                if saved > 0.0 && added <= slack {
                    let ratio = saved / added.max(f64::MIN_POSITIVE);
                    if best.is_none_or(|(r, ..)| ratio > r) {
                        best = Some((ratio, layer, c, added));
                    }
                }
            }
        }
        let Some((_, layer, c, added)) = best else { return };
        choice[layer] = c;
        slack -= added;
    }
}

/// A plan giving each named layer its scheme: the most common scheme as the default, a rule for each other layer.
fn plan_of<'a>(layers: impl Iterator<Item = (&'a str, LayerScheme)>) -> Plan {
    let layers: Vec<(&str, LayerScheme)> = layers.collect();
    let mut counts: Vec<(LayerScheme, usize)> = Vec::new();
    for &(_, scheme) in &layers {
        match counts.iter_mut().find(|(s, _)| *s == scheme) {
            Some((_, n)) => *n += 1,
            None => counts.push((scheme, 1)),
        }
    }
    let default = counts.iter().max_by_key(|(_, n)| *n).map_or(LayerScheme::F32, |(s, _)| *s);
    let mut plan = Plan::uniform(default);
    for (name, scheme) in layers.into_iter().filter(|(_, s)| *s != default) {
        plan.rules.push(Rule { pattern: name.to_string(), scheme: scheme.to_string() });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme(name: &str) -> LayerScheme {
        name.parse().unwrap()
    }

    #[test]
    fn targets_parse() {
        assert_eq!("cosine>=0.999".parse::<Target>().unwrap(), Target::CosineAtLeast(0.999));
        assert_eq!("ppl<=+2%".parse::<Target>().unwrap(), Target::PerplexityWithin(0.02));
        assert_eq!("ppl <= 0.5%".parse::<Target>().unwrap(), Target::PerplexityWithin(0.005));
        for bad in ["cosine>=1.5", "ppl<=-2%", "ppl<=abc", "accuracy>=1", ""] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_knapsack_spends_its_budget_where_bytes_are_cheapest() {
        // Two layers with int8 (exact-ish) or int4; int4 on layer 0 costs little loss, on layer 1 much.
        let int8 = scheme("int8-g32");
        let int4 = scheme("int4-g32");
        let candidates =
            vec![vec![(int8, 100.0, 0.001), (int4, 50.0, 0.002)], vec![(int8, 100.0, 0.001), (int4, 50.0, 0.05)]];
        assert_eq!(cheapest_within(&candidates, 1.0), vec![1, 1]);
        assert_eq!(cheapest_within(&candidates, 0.01), vec![1, 0]);
        assert_eq!(cheapest_within(&candidates, 0.002), vec![0, 0]);
        // Slack the price search leaves is spent: three layers whose int4 adds 0.004 each, a budget for two.
        let three = vec![vec![(int8, 100.0, 0.0), (int4, 50.0, 0.004)]; 3];
        let choice = cheapest_within(&three, 0.009);
        assert_eq!(choice.iter().filter(|&&c| c == 1).count(), 2, "{choice:?}");
        // Unreachable budgets fall back to the least loss everywhere.
        assert_eq!(cheapest_within(&candidates, 0.0), vec![0, 0]);
    }

    #[test]
    fn plans_take_the_most_common_scheme_as_default() {
        let plan =
            plan_of([("a", scheme("int4-g32")), ("b", scheme("int8-g32")), ("c", scheme("int4-g32"))].into_iter());
        assert_eq!(plan.default, "int4-g32");
        assert_eq!(plan.scheme_for("b").unwrap(), scheme("int8-g32"));
        assert_eq!(plan.scheme_for("c").unwrap(), scheme("int4-g32"));
        assert_eq!(plan.rules.len(), 1);
    }
}
