//! all-mpnet-base-v2 (MPNet, 768 hidden, 12 layers) end to end against sentence-transformers' fp32 embeddings of
//! the reference corpus (`tests/fixtures/mpnet_fp32_embeddings.jsonl`). Needs the real model in
//! `models/cache/all-mpnet-base-v2` (`models/fetch mpnet`); CI fetches it first, so a missing model fails here
//! instead of skipping.

mod common;

use std::sync::OnceLock;

use qlayers::LayerScheme;
use swap::eval::{cosine, Agreement};
use swap::{Embedder, Plan};

fn reference() -> &'static (Vec<String>, Vec<Vec<f32>>) {
    static REFERENCE: OnceLock<(Vec<String>, Vec<Vec<f32>>)> = OnceLock::new();
    REFERENCE.get_or_init(|| common::reference_embeddings(include_str!("fixtures/mpnet_fp32_embeddings.jsonl")))
}

#[test]
fn fp32_matches_sentence_transformers() {
    let embedder = Embedder::load(&common::mpnet_dir(), Plan::uniform(LayerScheme::F32)).unwrap();
    assert_eq!(embedder.pipeline().max_seq_length, 384);
    let (texts, expected) = reference();
    let ours = common::embed_all(&embedder, texts);
    let worst = ours.iter().zip(expected).map(|(a, b)| cosine(a, b)).fold(1.0, f64::min);
    println!("mpnet fp32: min cosine to sentence-transformers {worst:.7}");
    assert!(worst >= 0.99999, "min cosine {worst}");
}

#[test]
fn int8_default_plan_meets_the_accuracy_targets() {
    let embedder = Embedder::open(&common::mpnet_dir(), None).unwrap();
    let (texts, expected) = reference();
    let ours = common::embed_all(&embedder, texts);
    let Agreement { cosine_mean: mean, cosine_min: min, top10_overlap: overlap } = Agreement::between(&ours, expected);
    println!("mpnet int8: cosine mean {mean:.5}, min {min:.5}, top-10 overlap {overlap:.4}");
    assert!(mean >= 0.9995 && min >= 0.999 && overlap >= 0.98, "mean {mean}, min {min}, overlap {overlap}");
}
