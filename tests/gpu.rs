//! The real models on an NVIDIA GPU, through candle's kernels (`swap::Placement::Candle`): built only with the
//! `cuda` feature and run where a GPU is (`scripts/gpu-check`; `QINFER_GPU` names the device, default `cuda`).
//! MiniLM's default int8 plan keeps the accuracy targets against sentence-transformers' fp32; SmolLM2's `int4`
//! preset (its Q4_1 blocks as they are) gives the greedy tokens of our CPU int4 for the reference prompts and its
//! perplexity within 1%. The same checks on candle's CPU kernels run in CI (`tests/minilm.rs`,
//! `tests/decoders.rs`).

#![cfg(feature = "cuda")]

mod common;

use swap::eval::Agreement;
use swap::{Embedder, Generator, Placement, Plan};

fn placement() -> Placement {
    let name = std::env::var("QINFER_GPU").unwrap_or_else(|_| "cuda".into());
    let placement = Placement::parse(&name).unwrap();
    assert!(placement.candle_device().is_some_and(|d| !d.is_cpu()), "{name} is not a GPU");
    placement
}

fn token_ids(value: &serde_json::Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

#[test]
fn minilm_int8_on_the_gpu_meets_the_accuracy_targets() {
    let (texts, expected) = common::reference_embeddings(include_str!("fixtures/minilm_fp32_embeddings.jsonl"));
    let embedder = Embedder::open_on(&common::minilm_dir(), Some(Plan::bert_int8()), &placement()).unwrap();
    let ours = common::embed_all(&embedder, &texts);
    let Agreement { cosine_mean: mean, cosine_min: min, top10_overlap: overlap } = Agreement::between(&ours, &expected);
    println!("MiniLM int8 on the GPU: cosine mean {mean:.5}, min {min:.5}, top-10 overlap {overlap:.4}");
    assert!(mean >= 0.9995 && min >= 0.999 && overlap >= 0.98, "mean {mean}, min {min}, overlap {overlap}");
}

#[test]
fn smollm2_int4_on_the_gpu_follows_our_cpu_int4() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/smollm2_fp32_reference.json")).unwrap();
    let plan = || Some(Plan::llama_preset("int4").unwrap());
    let cpu = Generator::open(&common::smollm2_gguf(), plan()).unwrap();
    let gpu = Generator::open_on(&common::smollm2_gguf(), plan(), &placement()).unwrap();
    for case in reference["prompts"].as_array().unwrap() {
        let ids = token_ids(&case["input_ids"]);
        let (ours, theirs) = (cpu.model().greedy(&ids, 24).unwrap(), gpu.model().greedy(&ids, 24).unwrap());
        assert_eq!(theirs, ours, "{:?}", case["prompt"]);
    }
    let tokens = reference["perplexity"]["tokens"].as_u64().unwrap() as usize;
    let ids = cpu.encode(include_str!("fixtures/perplexity_text.txt")).unwrap();
    let ids = &ids[..tokens];
    let (a, b) = (cpu.model().perplexity(ids, 512).unwrap(), gpu.model().perplexity(ids, 512).unwrap());
    println!("SmolLM2 int4 perplexity: {a:.4} on the CPU, {b:.4} on the GPU");
    assert!((a - b).abs() <= 0.01 * a, "perplexity {a} vs {b}");
}
