//! SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF) in fp32 against the reference next-token logits.

mod common;

use std::sync::OnceLock;

use qlayers::LayerScheme;
use swap::models::llama::LlamaModel;
use swap::Plan;

/// The model in fp32, loaded once for every test of this file.
fn fp32_model() -> &'static LlamaModel {
    static MODEL: OnceLock<LlamaModel> = OnceLock::new();
    MODEL.get_or_init(|| LlamaModel::from_gguf(&common::smollm2_gguf(), &Plan::uniform(LayerScheme::F32)).unwrap())
}

fn reference() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/smollm2_fp32_reference.json")).unwrap()
}

/// The ids of a JSON array of token ids.
fn token_ids(value: &serde_json::Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

#[test]
fn fp32_next_token_logits_match_the_reference() {
    let model = fp32_model();
    let reference = reference();
    for case in reference["prompts"].as_array().unwrap() {
        let ids = token_ids(&case["input_ids"]);
        let logits = model.next_token_logits(&ids).unwrap();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top10: Vec<u64> = order[..10].iter().map(|&i| i as u64).collect();
        let expected: Vec<u64> = case["top10_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let worst = case["top10_logits"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&expected)
            .map(|(l, &id)| ((f64::from(logits[id as usize]) - l.as_f64().unwrap()) / l.as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        println!("{:?}: top-10 {:?}, worst relative logit error {worst:.2e}", case["prompt"].as_str().unwrap(), top10);
        assert_eq!(top10, expected, "{:?}", case["prompt"]);
        assert!(worst < 1e-3, "relative logit error {worst}");
    }
}

#[test]
fn bad_files_and_prompts_are_clear_errors() {
    let plan = Plan::uniform(LayerScheme::F32);
    let dir = common::Scratch::new("smollm2-bad");
    // A truncated file.
    let bytes = std::fs::read(common::smollm2_gguf()).unwrap();
    let truncated = dir.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let err = format!("{:#}", LlamaModel::from_gguf(&truncated, &plan).err().unwrap());
    assert!(err.contains("GGUF"), "{err}");
    // Not a GGUF file at all.
    let text = dir.path().join("text.gguf");
    std::fs::write(&text, b"hello").unwrap();
    let err = format!("{:#}", LlamaModel::from_gguf(&text, &plan).err().unwrap());
    assert!(err.contains("not a valid GGUF file"), "{err}");
    // Prompts the model cannot take.
    let model = fp32_model();
    assert!(model.next_token_logits(&[]).unwrap_err().to_string().contains("1 to 8192"));
    assert!(model.greedy(&[504], 0).unwrap().is_empty());
    assert!(model.next_token_logits(&[60_000]).unwrap_err().to_string().contains("outside the vocabulary"));
}

#[test]
fn the_config_comes_from_the_metadata_and_other_architectures_are_refused() {
    use candle_core::quantized::gguf_file::{Content, Value};
    use swap::models::llama::LlamaConfig;
    let mut file = std::fs::File::open(common::smollm2_gguf()).unwrap();
    let mut metadata = Content::read(&mut file).unwrap().metadata;
    let config = LlamaConfig::from_gguf(&metadata).unwrap();
    assert_eq!((config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads), (30, 576, 9, 3));
    assert_eq!((config.vocab_size, config.rope_theta, config.head_dim()), (49152, 100_000.0, 64));
    metadata.insert("general.architecture".into(), Value::String("gpt2".into()));
    let err = LlamaConfig::from_gguf(&metadata).unwrap_err().to_string();
    assert!(err.contains("\"gpt2\" model"), "{err}");
}

#[test]
fn fp32_greedy_decoding_with_the_kv_cache_matches_the_reference() {
    let model = fp32_model();
    let reference = reference();
    for case in reference["prompts"].as_array().unwrap() {
        let ids = token_ids(&case["input_ids"]);
        let expected = token_ids(&case["greedy_ids"]);
        // The reference stops at the end-of-sequence token (the chat prompt) or after 24 tokens.
        assert_eq!(model.greedy(&ids, 24).unwrap(), expected, "{:?}", case["prompt"]);
    }
}

#[test]
fn fp32_perplexity_is_within_half_a_percent_of_the_reference() {
    use candle_core::quantized::gguf_file::Content;
    let path = common::smollm2_gguf();
    let metadata = Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap().metadata;
    let tokenizer = swap::gguf_tokenizer::tokenizer_from_gguf(&metadata).unwrap();
    let reference = reference();
    let (tokens, window) = (reference["perplexity"]["tokens"].as_u64().unwrap() as usize, 512);
    let expected = reference["perplexity"]["ppl"].as_f64().unwrap();
    let ids = tokenizer.encode(include_str!("fixtures/perplexity_text.txt"), false).unwrap().get_ids().to_vec();
    let model = fp32_model();
    let ppl = model.perplexity(&ids[..tokens], window).unwrap();
    println!("fp32 perplexity {ppl:.4} over {tokens} tokens (reference {expected:.4})");
    assert!((ppl / expected - 1.0).abs() < 0.005, "perplexity {ppl}, reference {expected}");
}

#[test]
#[ignore]
fn scratch_quantized_perplexity() {
    use candle_core::quantized::gguf_file::Content;
    let path = common::smollm2_gguf();
    let metadata = Content::read(&mut std::fs::File::open(&path).unwrap()).unwrap().metadata;
    let tokenizer = swap::gguf_tokenizer::tokenizer_from_gguf(&metadata).unwrap();
    let ids = tokenizer.encode(include_str!("fixtures/perplexity_text.txt"), false).unwrap().get_ids().to_vec();
    for scheme in std::env::var("SCHEMES").unwrap().split(',') {
        let plan = Plan::parse(&format!(
            "default = \"{scheme}\"\n[[rules]]\npattern = \"lm_head\"\nscheme = \"{}\"",
            std::env::var("HEAD").unwrap()
        ))
        .unwrap();
        let t = std::time::Instant::now();
        let model = LlamaModel::from_gguf(&path, &plan).unwrap();
        let load = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let mut cache = model.new_cache();
        model.forward(&ids[..256], &mut cache).unwrap();
        let prefill = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        for i in 0..64 {
            model.forward(&ids[256 + i..257 + i], &mut cache).unwrap();
        }
        let decode = t.elapsed().as_secs_f64();
        println!("{scheme}: load {load:.2}s prefill {:.1} tok/s decode {:.1} tok/s", 256.0 / prefill, 64.0 / decode);
    }
}
