//! The tokenizer built from SmolLM2's GGUF metadata against the token ids of the reference (llama.cpp / HF), on
//! plain text, code, digits and the chat template's control tokens.

mod common;

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use swap::gguf_tokenizer::tokenizer_from_gguf;

fn metadata() -> HashMap<String, Value> {
    let mut file = std::fs::File::open(common::smollm2_gguf()).unwrap();
    Content::read(&mut file).unwrap().metadata
}

#[test]
fn encodes_the_reference_prompts_to_the_same_ids() {
    let tokenizer = tokenizer_from_gguf(&metadata()).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/smollm2_fp32_reference.json")).unwrap();
    for case in reference["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let expected: Vec<u32> =
            case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode(prompt, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, expected, "{prompt:?}");
        // Decoding gives the text back.
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), prompt);
    }
}

#[test]
fn other_tokenizer_models_are_a_clear_error() {
    let mut meta = metadata();
    meta.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
    let err = tokenizer_from_gguf(&meta).unwrap_err().to_string();
    assert!(err.contains("only byte-level BPE"), "{err}");
    let mut meta = metadata();
    meta.remove("tokenizer.ggml.merges");
    let err = tokenizer_from_gguf(&meta).unwrap_err().to_string();
    assert!(err.contains("no tokenizer.ggml.merges"), "{err}");
    let mut meta = metadata();
    meta.insert("tokenizer.ggml.pre".into(), Value::String("mystery".into()));
    let err = tokenizer_from_gguf(&meta).unwrap_err().to_string();
    assert!(err.contains("\"mystery\" is not supported"), "{err}");
}
