//! SmolLM2-135M-Instruct (Llama architecture, Q4_1 GGUF) in fp32 against the reference next-token logits.

mod common;

use std::sync::OnceLock;

use qlayers::LayerScheme;
use swap::models::llama::LlamaModel;
use swap::{Generator, Length, Plan, Sampling, StopReason, TextStream};

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

/// The tokens of the reference perplexity text (as many as the reference scored).
fn perplexity_ids() -> Vec<u32> {
    let generator = int4_generator();
    let tokens = reference()["perplexity"]["tokens"].as_u64().unwrap() as usize;
    let ids = generator.encode(include_str!("fixtures/perplexity_text.txt")).unwrap();
    ids[..tokens].to_vec()
}

/// Our fp32 perplexity of the reference text, windows of 512, computed once.
fn fp32_perplexity() -> f64 {
    static PPL: OnceLock<f64> = OnceLock::new();
    *PPL.get_or_init(|| fp32_model().perplexity(&perplexity_ids(), 512).unwrap())
}

/// The `int4` preset (min-max int4 body, int8 head), loaded once.
fn int4_generator() -> &'static Generator {
    static GENERATOR: OnceLock<Generator> = OnceLock::new();
    GENERATOR
        .get_or_init(|| Generator::open(&common::smollm2_gguf(), Some(Plan::llama_preset("int4").unwrap())).unwrap())
}

#[test]
fn fp32_perplexity_is_within_half_a_percent_of_the_reference() {
    let expected = reference()["perplexity"]["ppl"].as_f64().unwrap();
    let ppl = fp32_perplexity();
    println!("fp32 perplexity {ppl:.4} (reference {expected:.4})");
    assert!((ppl / expected - 1.0).abs() < 0.005, "perplexity {ppl}, reference {expected}");
}

#[test]
fn quantized_perplexity_stays_close_to_fp32() {
    let (ids, fp32) = (perplexity_ids(), fp32_perplexity());
    let rise = |model: &LlamaModel| model.perplexity(&ids, 512).unwrap() / fp32 - 1.0;
    let int4 = rise(int4_generator().model());
    let int8 = rise(&LlamaModel::from_gguf(&common::smollm2_gguf(), &Plan::llama_preset("int8").unwrap()).unwrap());
    let int2 = rise(&LlamaModel::from_gguf(&common::smollm2_gguf(), &Plan::llama_preset("int2").unwrap()).unwrap());
    println!(
        "perplexity over fp32 {fp32:.4}: int8 {:+.2}%, int4 {:+.2}%, int2 {:+.0}%",
        100.0 * int8,
        100.0 * int4,
        100.0 * int2
    );
    assert!(int8 <= 0.005, "int8 raises perplexity by {:.2}%", 100.0 * int8);
    assert!(int4 <= 0.05, "int4 raises perplexity by {:.2}%", 100.0 * int4);
    assert!(int2 > int4, "2 bits cost more than 4");
}

#[test]
fn the_chat_template_gives_the_reference_chat_prompt() {
    let generator = int4_generator();
    let reference = reference();
    let chat = &reference["prompts"][3];
    // SmolLM2's template adds its default system message when the chat has none.
    let prompt = generator.chat_prompt(None, "What is 2+2?").unwrap();
    assert!(prompt.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"), "{prompt}");
    assert!(prompt.ends_with(chat["prompt"].as_str().unwrap()), "{prompt}");
    let ids = generator.encode(&prompt).unwrap();
    assert!(ids.ends_with(&token_ids(&chat["input_ids"])));
    let with_system = generator.chat_prompt(Some("Be brief."), "Hi").unwrap();
    assert!(with_system.starts_with("<|im_start|>system\nBe brief.<|im_end|>"), "{with_system}");
}

#[test]
fn generation_is_reproducible_and_bounded() {
    let generator = int4_generator();
    let prompt = generator.encode("Once upon a time").unwrap();
    let sampling = Sampling::Random { temperature: 0.8, top_p: 0.9, seed: 11 };
    let run = |sampling, max| generator.generate(&prompt, Length::up_to(max), sampling, |_| Ok(())).unwrap();
    let (a, b) = (run(sampling, 12), run(sampling, 12));
    assert_eq!(a.tokens, b.tokens, "the same seed gives the same tokens");
    assert_eq!((a.tokens.len(), a.stop), (12, StopReason::MaxTokens));
    let other = run(Sampling::Random { temperature: 0.8, top_p: 0.9, seed: 12 }, 12);
    assert_ne!(a.tokens, other.tokens, "another seed, other tokens");
    // Streamed pieces add up to the decoded text.
    let mut stream = TextStream::new(generator.tokenizer());
    let streamed: String = a.tokens.iter().map(|&id| stream.push(id).unwrap()).collect();
    assert_eq!(streamed, generator.decode(&a.tokens).unwrap());
    // Greedy through the generator is the model's greedy decoding.
    assert_eq!(run(Sampling::Greedy, 10).tokens, generator.model().greedy(&prompt, 10).unwrap());
    // No tokens asked, no tokens; a prompt as long as the context is refused before any work.
    assert!(run(sampling, 0).tokens.is_empty());
    let context = generator.model().config().context_length;
    let err = generator.generate(&vec![504; context], Length::up_to(4), sampling, |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("context holds 8192"), "{err}");
    assert!(generator.generate(&[], Length::up_to(4), sampling, |_| Ok(())).is_err());
}

#[test]
fn an_int4_checkpoint_of_the_gguf_file_loads_to_the_same_model() {
    let out = common::Scratch::new("smollm2-int4");
    let plan = Plan::llama_preset("int4").unwrap();
    let report = swap::export::quantize_llama(&common::smollm2_gguf(), plan, out.path(), |_, _, _| {}).unwrap();
    println!("GGUF {:.1} MB -> checkpoint {:.1} MB", report.source_bytes as f64 / 1e6, report.saved_bytes as f64 / 1e6);
    let saved = Generator::open(out.path(), None).unwrap();
    let prompt = saved.encode("The capital of France is").unwrap();
    assert_eq!(prompt, int4_generator().encode("The capital of France is").unwrap(), "tokenizer.json from the GGUF");
    assert_eq!(
        saved.model().next_token_logits(&prompt).unwrap(),
        int4_generator().model().next_token_logits(&prompt).unwrap(),
        "the same logits, bit for bit"
    );
    assert_eq!(saved.chat_template(), int4_generator().chat_template());
}

#[test]
fn a_plan_that_holds_the_file_s_own_type_keeps_its_codes() {
    use qlayers::LayerScheme;
    use swap::gguf_weights::GgufWeights;
    let weights = GgufWeights::open(&common::smollm2_gguf()).unwrap();
    let int4_asym: LayerScheme = "int4-g32-asym".parse().unwrap();
    // The file is Q4_1: min-max int4 in groups of 32 holds it exactly, in HF row order (q_proj is permuted).
    for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight"] {
        let kept = weights.native(name, int4_asym).unwrap().expect("Q4_1 kept as min-max int4");
        let file = weights.tensor(name).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = kept.dequantize_f32().iter().zip(&file).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let largest = file.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(worst <= largest * 1e-6, "{name}: {worst} against values up to {largest}");
    }
    // Other schemes re-quantize.
    assert!(weights
        .native("model.layers.0.mlp.up_proj.weight", LayerScheme::weight(qlayers::Bits::B4))
        .unwrap()
        .is_none());
    assert!(weights.native("model.layers.0.mlp.up_proj.weight", Plan::LLAMA_HEAD).unwrap().is_none());
}
