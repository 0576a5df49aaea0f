//! Series colours: the Tableau 10 palette, which stays distinguishable in print and for most colour-blind readers.

const TABLEAU10: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

/// The fill of histogram bins: a neutral grey-blue that overlays in palette colours stand out against.
pub(crate) const NEUTRAL: &str = "#a3b1c2";

/// The colour of the `i`-th series, cycling after ten.
pub(crate) fn colour(i: usize) -> &'static str {
    TABLEAU10[i % TABLEAU10.len()]
}
