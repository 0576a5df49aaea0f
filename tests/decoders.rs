//! The decoders the Llama body reads (Llama, Qwen2, Qwen3) against transformers on tiny random-weight models
//! (`tests/fixtures/architectures/<name>`): the tokenizer's ids, the next-token logits after each prompt and at
//! every position of the first, greedy tokens, and perplexity, in fp32.

use std::path::PathBuf;

use qlayers::LayerScheme;
use swap::models::llama::argmax;
use swap::{Generator, Plan};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/architectures").join(name)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Every value of `ours` within 1e-4 of the largest of `theirs`.
fn assert_close(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: length");
    let largest = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-4 * largest, "{what}: off by {worst} (largest {largest})");
}

fn check_decoder(name: &str) {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let generator = Generator::open(&fixture(name), Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let model = generator.model();
    let vocab = model.config().vocab_size;
    for (i, prompt) in reference["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt_ids = ids(&prompt["input_ids"]);
        assert_eq!(generator.encode(prompt["text"].as_str().unwrap()).unwrap(), prompt_ids, "{name}: prompt {i} ids");
        let logits = model.next_token_logits(&prompt_ids).unwrap();
        assert_close(&logits, &floats(&prompt["logits_last"]), &format!("{name}: prompt {i} logits"));
        // Greedy tokens up to the end-of-sequence token, where ours stop and the reference's run on.
        let greedy = ids(&prompt["greedy"]);
        let ours = model.greedy(&prompt_ids, greedy.len()).unwrap();
        assert_eq!(ours[..], greedy[..ours.len()], "{name}: prompt {i} greedy");
        assert_eq!(argmax(&logits), greedy[0]);
    }
    let first = ids(&reference["prompts"][0]["input_ids"]);
    let all = model.forward_all(&first, &mut model.new_cache()).unwrap();
    let want: Vec<f32> = reference["logits_all_first"].as_array().unwrap().iter().flat_map(floats).collect();
    assert_eq!(all.len(), first.len() * vocab);
    assert_close(&all, &want, &format!("{name}: logits at every position"));
    let text_ids = generator.encode(reference["perplexity"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(text_ids.len() as u64, reference["perplexity"]["n_tokens"].as_u64().unwrap(), "{name}: tokens");
    let ppl = model.perplexity(&text_ids, text_ids.len()).unwrap();
    let want = reference["perplexity"]["ppl"].as_f64().unwrap();
    assert!((ppl - want).abs() <= 1e-4 * want, "{name}: perplexity {ppl} vs {want}");
}

#[test]
fn llama_matches_transformers() {
    check_decoder("llama");
}

#[test]
fn qwen2_with_qkv_biases_and_tied_embeddings_matches_transformers() {
    check_decoder("qwen2");
}

#[test]
fn qwen3_with_per_head_qk_norms_matches_transformers() {
    check_decoder("qwen3");
}
