//! The decoders the Llama body reads (Llama, Mistral, Qwen2, Qwen3, Phi-3, Gemma 2, Gemma 3) against transformers on
//! tiny random-weight models (`tests/fixtures/architectures/<name>`), from their folders and from the GGUF files that `scripts/setup-tests` writes of them with llama.cpp's `gguf` package
//! (`models/cache/fixture-gguf/<name>.gguf`):
//! the tokenizer's ids, the next-token logits after each prompt and at every position of the first, greedy tokens,
//! and perplexity, in fp32.

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

/// The GGUF file written of fixture `name` by the test set-up.
fn gguf(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/cache/fixture-gguf").join(format!("{name}.gguf"));
    assert!(path.exists(), "{} is missing: run scripts/setup-tests", path.display());
    path
}

/// The fixture's checks on its folder and on its GGUF file.
fn check_decoder(name: &str) {
    check_decoder_at(name, &fixture(name));
    check_decoder_at(name, &gguf(name));
}

fn check_decoder_at(name: &str, path: &std::path::Path) {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let generator = Generator::open(path, Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let name = &format!("{name} ({})", path.display());
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

#[test]
fn mistral_with_sliding_window_attention_matches_transformers() {
    check_decoder("mistral");
}

/// Past its window (8 tokens in the fixture), a Mistral cache stops growing, and its tokens stay those of a
/// direct run: the logits after a long prompt equal those of the same prompt decoded token by token.
#[test]
fn a_sliding_window_cache_stays_flat_past_the_window() {
    let generator = Generator::open(&gguf("mistral"), Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let model = generator.model();
    assert_eq!(model.config().sliding_window, Some(8));
    let prompt: Vec<u32> = (0..300).map(|i| (i * 37 % 997) as u32 + 1).collect();
    let at_once = model.next_token_logits(&prompt).unwrap();
    let mut cache = model.new_cache();
    let mut logits = Vec::new();
    let mut bytes = Vec::new();
    for &id in &prompt {
        logits = model.forward(&[id], &mut cache).unwrap();
        bytes.push(cache.bytes());
    }
    assert_eq!(logits, at_once, "token by token and all at once");
    assert_eq!(bytes[100], bytes[299], "the cache grew past the window: {} then {} bytes", bytes[100], bytes[299]);
    eprintln!("mistral fixture KV cache: {} bytes after 100 tokens, {} after 300", bytes[100], bytes[299]);
}

#[test]
fn phi3_with_fused_projections_matches_transformers() {
    check_decoder("phi3");
}

#[test]
fn gemma2_with_soft_capping_and_alternating_windows_matches_transformers() {
    check_decoder("gemma2");
    let generator = Generator::open(&fixture("gemma2"), Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let config = generator.model().config();
    assert_eq!((config.layer_window(0), config.layer_window(1)), (Some(8), None));
    same_config_from_gguf("gemma2");
    // The fixture shows each of Gemma 2's options: without it, the logits are off.
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("gemma2").join("reference.json")).unwrap()).unwrap();
    let prompt = &reference["prompts"][2];
    let want = floats(&prompt["logits_last"]);
    for key in ["attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar", "sliding_window"] {
        let dir = edited_fixture("gemma2", |c| {
            c[key] = serde_json::Value::Null;
            if key == "sliding_window" {
                c["layer_types"] = serde_json::json!(["full_attention", "full_attention"]);
            }
            if key == "query_pre_attn_scalar" {
                c[key] = 64.into();
            }
        });
        let edited = Generator::open(&dir, Some(Plan::uniform(LayerScheme::F32))).unwrap();
        let logits = edited.model().next_token_logits(&ids(&prompt["input_ids"])).unwrap();
        let worst = logits.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst > 1e-2, "without {key} the logits are within {worst}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn gemma3_with_qk_norms_and_local_rope_matches_transformers() {
    check_decoder("gemma3");
    let generator = Generator::open(&fixture("gemma3"), Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let config = generator.model().config();
    assert_eq!((config.rope_theta, config.local_rope_theta), (1e6, Some(1e4)));
    same_config_from_gguf("gemma3");
}

/// The GGUF file of Gemma fixture `name` reads as the same model as its folder, but for the norms' offset (the
/// file holds `1 + w`).
fn same_config_from_gguf(name: &str) {
    let plan = Some(Plan::uniform(LayerScheme::F32));
    let folder = Generator::open(&fixture(name), plan.clone()).unwrap().model().config().clone();
    let file = Generator::open(&gguf(name), plan).unwrap().model().config().clone();
    assert_eq!((folder.norm_offset, file.norm_offset), (1.0, 0.0), "{name}");
    assert_eq!(swap::models::llama::LlamaConfig { norm_offset: 1.0, ..file }, folder, "{name}");
}

/// A copy of fixture `name` in a scratch folder, its config.json edited by `edit`.
fn edited_fixture(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qinfer-decoders-{}-{name}-{}", std::process::id(), next_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture(name).join(file), dir.join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

/// A distinct name per call within this process.
fn next_suffix() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn open_error(path: &std::path::Path) -> String {
    match Generator::open(path, Some(Plan::uniform(LayerScheme::F32))) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_decoders_are_clear_errors() {
    // A GGUF file of an architecture not read here names it and those that are.
    let path = std::env::temp_dir().join(format!("qinfer-decoders-{}-falcon.gguf", std::process::id()));
    {
        use candle_core::quantized::gguf_file::{self, Value};
        let tensor = candle_core::quantized::QTensor::quantize(
            &candle_core::Tensor::zeros((4, 4), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
            candle_core::quantized::GgmlDType::F32,
        )
        .unwrap();
        let architecture = Value::String("falcon".into());
        let mut file = std::fs::File::create(&path).unwrap();
        gguf_file::write(&mut file, &[("general.architecture", &architecture)], &[("token_embd.weight", &tensor)])
            .unwrap();
    }
    let error = open_error(&path);
    assert!(error.contains("\"falcon\"") && error.contains("llama, qwen2, qwen3, phi3, gemma2, gemma3"), "{error}");
    std::fs::remove_file(&path).unwrap();

    let heads = edited_fixture("mistral", |c| {
        c["num_attention_heads"] = 5.into();
        c.as_object_mut().unwrap().remove("head_dim");
    });
    let error = open_error(&heads);
    assert!(error.contains("hidden_size 64 is not a multiple of num_attention_heads 5"), "{error}");
    let groups = edited_fixture("mistral", |c| c["num_attention_heads"] = 5.into());
    let error = open_error(&groups);
    assert!(error.contains("5 heads of width 16 and 2 key/value heads do not fit together"), "{error}");
    let window = edited_fixture("mistral", |c| c["sliding_window"] = 1000.into());
    let error = open_error(&window);
    assert!(error.contains("sliding_window is 1000") && error.contains("max_position_embeddings = 512"), "{error}");
    let no_window = edited_fixture("mistral", |c| c["sliding_window"] = serde_json::Value::Null);
    assert_eq!(Generator::open(&no_window, None).unwrap().model().config().sliding_window, None);
    for dir in [heads, groups, window, no_window] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    // Gemma options that are not read.
    let activation = edited_fixture("gemma2", |c| c["hidden_activation"] = "relu".into());
    let error = open_error(&activation);
    assert!(error.contains("hidden_activation \"relu\" is not supported for Gemma"), "{error}");
    let bidirectional = edited_fixture("gemma3", |c| c["use_bidirectional_attention"] = true.into());
    let error = open_error(&bidirectional);
    assert!(error.contains("bidirectional attention"), "{error}");
    let layers = edited_fixture("gemma2", |c| c["layer_types"] = serde_json::json!(["full_attention"]));
    let error = open_error(&layers);
    assert!(error.contains("layer_types names 1 layers; num_hidden_layers is 2"), "{error}");
    let kind = edited_fixture("gemma3", |c| c["layer_types"][1] = "chunked_attention".into());
    let error = open_error(&kind);
    assert!(error.contains("\"chunked_attention\" is not supported"), "{error}");
    for dir in [activation, bidirectional, layers, kind] {
        std::fs::remove_dir_all(dir).unwrap();
    }

    // A prompt longer than the context.
    let generator = Generator::open(&fixture("phi3"), Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let long = vec![5u32; generator.model().config().context_length + 1];
    let error = generator.generate(&long, swap::Length::up_to(4), swap::Sampling::Greedy, |_| Ok(())).unwrap_err();
    assert!(format!("{error:#}").contains("context holds 512"), "{error:#}");
}

/// Phi-3's LongRoPE (the phi3 fixture's weights with `tests/fixtures/architectures/phi3-longrope/config.json`:
/// trained on 16 positions, extended to 512, a factor per rotary pair) against transformers: a prompt within the
/// original context takes the short factors, one past it the long ones, both with the attention factor 1.5.
#[test]
fn phi3_long_rope_matches_transformers() {
    let (dir, reference) = phi3_variant("phi3-longrope");
    let generator = Generator::open(&dir, Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let model = generator.model();
    let rope = model.config().long_rope.as_ref().expect("LongRoPE read from the config");
    assert_eq!((rope.original_context, rope.attention_factor), (16, 1.5));
    let short = model.next_token_logits(&ids(&reference["short_ids"])).unwrap();
    assert_close(&short, &floats(&reference["short_logits_last"]), "phi3 LongRoPE within the original context");
    let long_ids = ids(&reference["long_ids"]);
    let all = model.forward_all(&long_ids, &mut model.new_cache()).unwrap();
    let vocab = model.config().vocab_size;
    for (p, want) in ids(&reference["long_positions"]).iter().zip(reference["long_logits"].as_array().unwrap()) {
        let p = *p as usize;
        assert_close(&all[p * vocab..(p + 1) * vocab], &floats(want), &format!("phi3 LongRoPE past it, position {p}"));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A folder of the phi3 fixture's weights and tokenizer with the config of `variant` (a folder of
/// `tests/fixtures/architectures` holding a config.json and the reference.json transformers gave for it).
fn phi3_variant(variant: &str) -> (PathBuf, serde_json::Value) {
    let read = |file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(fixture(variant).join(file)).unwrap()).unwrap()
    };
    let config = read("config.json");
    (edited_fixture("phi3", |c| *c = config), read("reference.json"))
}

/// A partial rotary (Phi-4-mini's `partial_rotary_factor`; here 0.5 of the phi3 fixture's 16-wide heads) against
/// transformers.
#[test]
fn a_partial_rotary_matches_transformers() {
    let (dir, reference) = phi3_variant("phi3-partial-rotary");
    let generator = Generator::open(&dir, Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let model = generator.model();
    assert_eq!((model.config().rotary_dim, model.config().head_dim), (8, 16));
    let all = model.forward_all(&ids(&reference["ids"]), &mut model.new_cache()).unwrap();
    let vocab = model.config().vocab_size;
    for (p, want) in ids(&reference["positions"]).iter().zip(reference["logits"].as_array().unwrap()) {
        let p = *p as usize;
        assert_close(&all[p * vocab..(p + 1) * vocab], &floats(want), &format!("phi3 partial rotary, position {p}"));
    }
    std::fs::remove_dir_all(dir).unwrap();
}
