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

    // A GGUF file with one of LongRoPE's two factor tensors, or factors that do not fit the heads.
    let without_long =
        rewritten_gguf(&gguf("phi3-longrope"), "no-long", |name, t| (name != "rope_factors_long.weight").then_some(t));
    let error = open_error(&without_long);
    assert!(error.contains("rope_factors_short.weight and rope_factors_long.weight but not the other"), "{error}");
    let cut = rewritten_gguf(&gguf("phi3-longrope"), "cut", |name, t| match name {
        "rope_factors_short.weight" => {
            let first: Vec<f32> = t.to_vec1::<f32>().unwrap()[..3].to_vec();
            Some(candle_core::Tensor::new(first, &candle_core::Device::Cpu).unwrap())
        }
        _ => Some(t),
    });
    let error = open_error(&cut);
    assert!(error.contains("longrope short_factor holds 3 numbers; a head of 16 rotates 8 pairs"), "{error}");
    for path in [without_long, cut] {
        std::fs::remove_file(path).unwrap();
    }

    // A prompt longer than the context.
    let generator = Generator::open(&fixture("phi3"), Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let long = vec![5u32; generator.model().config().context_length + 1];
    let error = generator.generate(&long, swap::Length::up_to(4), swap::Sampling::Greedy, |_| Ok(())).unwrap_err();
    assert!(format!("{error:#}").contains("context holds 512"), "{error:#}");
}

/// A copy of GGUF file `path` (its metadata, and its tensors in f32), each tensor as `edit` gives it back, or
/// dropped where it gives `None`.
fn rewritten_gguf(
    path: &std::path::Path,
    tag: &str,
    edit: impl Fn(&str, candle_core::Tensor) -> Option<candle_core::Tensor>,
) -> PathBuf {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let cpu = candle_core::Device::Cpu;
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors = Vec::new();
    for name in content.tensor_infos.keys() {
        let tensor = content.tensor(&mut file, name, &cpu).unwrap().dequantize(&cpu).unwrap();
        if let Some(tensor) = edit(name, tensor) {
            tensors.push((name.clone(), QTensor::quantize(&tensor, GgmlDType::F32).unwrap()));
        }
    }
    let out = std::env::temp_dir().join(format!("qinfer-decoders-{}-{tag}-{}.gguf", std::process::id(), next_suffix()));
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut std::fs::File::create(&out).unwrap(), &metadata, &tensors).unwrap();
    out
}

/// Phi-3's LongRoPE (the phi3 fixture's weights with `tests/fixtures/architectures/phi3-longrope/config.json`:
/// trained on 16 positions, extended to 512, a factor per rotary pair) against transformers: a prompt within the
/// original context takes the short factors, one past it the long ones, both with the attention factor 1.5. The
/// same from the GGUF file of it, whose factors are tensors (`rope_factors_*`, as llama.cpp's converter writes
/// them).
#[test]
fn phi3_long_rope_matches_transformers() {
    let (dir, reference) = phi3_variant("phi3-longrope");
    for path in [dir.clone(), gguf("phi3-longrope")] {
        let generator = Generator::open(&path, Some(Plan::uniform(LayerScheme::F32))).unwrap();
        let model = generator.model();
        let rope = model.config().long_rope.as_ref().expect("LongRoPE read from the config");
        assert_eq!((rope.original_context, rope.attention_factor), (16, 1.5), "{}", path.display());
        let short = model.next_token_logits(&ids(&reference["short_ids"])).unwrap();
        assert_close(&short, &floats(&reference["short_logits_last"]), "phi3 LongRoPE within the original context");
        let long_ids = ids(&reference["long_ids"]);
        let all = model.forward_all(&long_ids, &mut model.new_cache()).unwrap();
        let vocab = model.config().vocab_size;
        for (p, want) in ids(&reference["long_positions"]).iter().zip(reference["long_logits"].as_array().unwrap()) {
            let p = *p as usize;
            let what = format!("phi3 LongRoPE past it, position {p} ({})", path.display());
            assert_close(&all[p * vocab..(p + 1) * vocab], &floats(want), &what);
        }
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

/// `default` for every layer, but the layers matching each rule's pattern, which get its scheme.
fn with_rules(default: &str, rules: &[(&str, &str)]) -> Plan {
    let mut plan = Plan::uniform(default.parse().unwrap());
    plan.rules =
        rules.iter().map(|(p, s)| swap::plan::Rule { pattern: p.to_string(), scheme: s.to_string() }).collect();
    plan
}

/// The scheme the load report gives layer `name`.
fn scheme_of(generator: &Generator, name: &str) -> String {
    let layer = generator.layers().iter().find(|l| l.name == name);
    layer.unwrap_or_else(|| panic!("no layer {name} in {:?}", generator.layers())).scheme.to_string()
}

/// Phi-3's fused `qkv_proj` and `gate_up_proj` are one layer each unless the plan gives their parts (named as the
/// unfused families name them) schemes of their own: then they are read as the parts' rows of the fused weights,
/// and saved and read back as the parts.
#[test]
fn a_plan_splits_phi3_fused_layers() {
    let text = std::fs::read_to_string(fixture("phi3").join("reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompt = ids(&reference["prompts"][0]["input_ids"]);
    for path in [fixture("phi3"), gguf("phi3")] {
        let open = |plan: Plan| Generator::open(&path, Some(plan)).unwrap();
        let logits = |generator: &Generator| generator.model().next_token_logits(&prompt).unwrap();
        // Parts of one scheme stack again into one layer: the same model as a rule on the fused layer.
        let whole = open(with_rules("int8-g32", &[("*.qkv_proj", "f32"), ("*.gate_up_proj", "int4-g32")]));
        let parts = open(with_rules(
            "int8-g32",
            &[
                ("*.q_proj", "f32"),
                ("*.k_proj", "f32"),
                ("*.v_proj", "f32"),
                ("*.gate_proj", "int4-g32"),
                ("*.up_proj", "int4-g32"),
            ],
        ));
        assert_eq!(scheme_of(&whole, "model.layers.0.self_attn.qkv_proj"), "f32");
        assert_eq!(scheme_of(&parts, "model.layers.0.self_attn.{q,k,v}_proj"), "f32");
        assert_eq!(scheme_of(&parts, "model.layers.1.mlp.{gate,up}_proj"), "int4-g32");
        assert_eq!(logits(&whole), logits(&parts), "{}", path.display());
        // Parts of different schemes run apart, each as the plan says, close to the f32 model.
        let apart_plan = with_rules("f32", &[("*.q_proj", "int8-g32"), ("*.up_proj", "int8-g16")]);
        let apart = open(apart_plan.clone());
        for (layer, scheme) in [
            ("self_attn.q_proj", "int8-g32"),
            ("self_attn.k_proj", "f32"),
            ("self_attn.v_proj", "f32"),
            ("mlp.gate_proj", "f32"),
            ("mlp.up_proj", "int8-g16"),
        ] {
            assert_eq!(scheme_of(&apart, &format!("model.layers.1.{layer}")), scheme, "{layer}");
        }
        let float = logits(&open(Plan::uniform(LayerScheme::F32)));
        let largest = float.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = logits(&apart).iter().zip(&float).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst > 0.0 && worst < 0.02 * largest, "split int8 parts: off by {worst} (largest {largest})");
        // A checkpoint of the split model keeps the parts and reads back as the same model.
        let out = std::env::temp_dir().join(format!("qinfer-phi3-split-{}-{}", std::process::id(), next_suffix()));
        swap::export::quantize_llama(&path, apart_plan, &out, |_, _, _| {}).unwrap();
        let saved = Generator::open(&out, None).unwrap();
        assert_eq!(scheme_of(&saved, "model.layers.0.mlp.up_proj"), "int8-g16");
        assert_eq!(logits(&saved), logits(&apart), "{}: checkpoint", path.display());
        std::fs::remove_dir_all(out).unwrap();
    }
}

/// The presets keep a GGUF file's own blocks wherever they hold no more bits than the preset would give the layer:
/// on `qwen2-mixed.gguf` (attention in Q8_0, MLP and tied embeddings in Q4_0), `int8` keeps every layer's codes,
/// and `int4` quantizes the attention again (to its own 4-bit form) but keeps the MLP's and the head's Q4_0.
#[test]
fn presets_keep_a_gguf_files_own_blocks() {
    let path = gguf("qwen2-mixed");
    let open = |name: &str| {
        Generator::open(&path, Some(swap::locate::preset(name, &path, swap::Task::Generation).unwrap())).unwrap()
    };
    let int8 = open("int8");
    let int4 = open("int4");
    let layer = |generator: &Generator, name: &str| scheme_of(generator, &format!("model.layers.1.{name}"));
    assert_eq!(layer(&int8, "self_attn.{q,k,v}_proj"), "int8-g32");
    assert_eq!(layer(&int8, "self_attn.o_proj"), "int8-g32");
    assert_eq!(layer(&int8, "mlp.{gate,up}_proj"), "int4-g32");
    assert_eq!(layer(&int8, "mlp.down_proj"), "int4-g32");
    assert_eq!(scheme_of(&int8, "lm_head"), "int4-g32");
    assert_eq!(layer(&int4, "self_attn.{q,k,v}_proj"), "int4-g32-asym");
    assert_eq!(layer(&int4, "mlp.down_proj"), "int4-g32");
    assert_eq!(scheme_of(&int4, "lm_head"), "int4-g32");
    // The default plan of a GGUF file is its int8 preset; an explicit scheme is taken as it is.
    let default = Generator::open(&path, None).unwrap();
    assert_eq!(scheme_of(&default, "model.layers.0.mlp.down_proj"), "int4-g32");
    let explicit = open("int8-g16");
    assert_eq!(layer(&explicit, "mlp.down_proj"), "int8-g16");
    assert_eq!(scheme_of(&explicit, "lm_head"), "int8-g32");
    // The file's own blocks (Q4_0 scales of either sign) run as the dequantized file does, but for the
    // activations' int8 rounding.
    let prompt: Vec<u32> = (1..20).collect();
    let float = Generator::open(&path, Some(Plan::uniform(LayerScheme::F32))).unwrap();
    let want = float.model().next_token_logits(&prompt).unwrap();
    let got = int8.model().next_token_logits(&prompt).unwrap();
    let largest = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst < 0.02 * largest, "int8 preset on the file's blocks: off by {worst} (largest {largest})");
}

/// The path of GPU devices (candle's kernels) on the CPU: a min-max int4 plan in groups of 32 runs as Q4_1 blocks
/// through candle's quantized matmul, and follows our CPU int4 layers (the same weights, activations quantized by
/// each engine its own way): next-token logits at a cosine of at least 0.999 after each prompt, and perplexity
/// within 1%.
#[test]
fn int4_on_candle_kernels_follows_the_cpu_kernels() {
    let text = std::fs::read_to_string(fixture("llama").join("reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let plan = || Some(Plan::llama("int4-g32-asym".parse().unwrap()));
    let cpu = Generator::open(&gguf("llama"), plan()).unwrap();
    let placement = swap::Placement::parse("candle-cpu").unwrap();
    let candle = Generator::open_on(&gguf("llama"), plan(), &placement).unwrap();
    let q4_1 = qlayers::LayerPath::GgmlBlocks(candle_core::quantized::GgmlDType::Q4_1);
    assert!(candle.layers().iter().filter(|l| l.name != "lm_head").all(|l| l.path == q4_1), "{:?}", candle.layers());
    for (i, prompt) in reference["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt_ids = ids(&prompt["input_ids"]);
        let (a, b) = (
            cpu.model().next_token_logits(&prompt_ids).unwrap(),
            candle.model().next_token_logits(&prompt_ids).unwrap(),
        );
        let c = swap::eval::cosine(&a, &b);
        assert!(c >= 0.999, "prompt {i}: logits cosine {c}");
    }
    let text_ids = cpu.encode(reference["perplexity"]["text"].as_str().unwrap()).unwrap();
    let (a, b) = (
        cpu.model().perplexity(&text_ids, text_ids.len()).unwrap(),
        candle.model().perplexity(&text_ids, text_ids.len()).unwrap(),
    );
    println!("int4: perplexity {a:.4} on the CPU kernels, {b:.4} on candle's");
    assert!((a - b).abs() <= 0.01 * a, "perplexity {a} vs {b}");
}
