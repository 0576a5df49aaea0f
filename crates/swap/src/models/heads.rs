//! Task heads on an encoder's hidden states: the sequence classifier of cross-encoder rerankers.

use anyhow::{Context, Result};
use qlayers::QLinear;

use crate::loader::{Bias, QuantLoader};

/// Where a `*ForSequenceClassification` head's two layers are: a dense layer with tanh on the first token, then
/// the projection to the labels.
#[derive(Debug, Clone, Copy)]
pub struct ClassifierNames {
    /// The dense layer (`hidden -> hidden`, then tanh).
    pub dense: &'static str,
    /// The projection to the labels.
    pub out: &'static str,
}

impl ClassifierNames {
    /// BERT: the pooler, then `classifier`.
    pub const BERT: Self = Self { dense: "bert.pooler.dense", out: "classifier" };
    /// RoBERTa and XLM-RoBERTa: `classifier.dense`, then `classifier.out_proj`.
    pub const ROBERTA: Self = Self { dense: "classifier.dense", out: "classifier.out_proj" };

    /// Both layer names.
    pub fn layers(&self) -> impl Iterator<Item = &'static str> {
        [self.dense, self.out].into_iter()
    }
}

/// A one-label sequence classifier: `score = out(tanh(dense(h_first)))`, the raw logit of label 0.
pub struct SequenceClassifier {
    dense: QLinear,
    out: QLinear,
}

impl SequenceClassifier {
    /// Reads the head of an encoder of width `hidden` (both layers have biases); a head with more than one label
    /// is an error (a reranker gives one score per pair).
    pub fn load(names: ClassifierNames, hidden: usize, loader: &QuantLoader) -> Result<Self> {
        let dense = loader.linear(names.dense, hidden, hidden, Bias::Required)?;
        let out = loader
            .linear(names.out, hidden, 1, Bias::Required)
            .with_context(|| format!("{}: a reranker head has one label (one score per pair)", names.out))?;
        Ok(Self { dense, out })
    }

    /// The raw score of each sequence from its first token's hidden state (`firsts` is `[n, hidden]`).
    pub fn scores(&self, firsts: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut pooled = self.dense.forward_f32(firsts, n)?;
        pooled.iter_mut().for_each(|v| *v = v.tanh());
        Ok(self.out.forward_f32(&pooled, n)?)
    }
}
