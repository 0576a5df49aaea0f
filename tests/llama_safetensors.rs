//! A small random-weight Llama in Hugging Face layout (safetensors, tied embeddings, grouped-query attention,
//! Llama 3 rotary scaling): our model against candle-transformers' Llama on the same folder, and pre-quantized
//! checkpoints of it.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as candle_llama;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use swap::export::quantize_llama;
use swap::models::llama::{LlamaConfig, LlamaModel};
use swap::{Plan, QuantLoader};

const CONFIG: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 300,
  "hidden_size": 64,
  "intermediate_size": 96,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0,
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 32},
  "max_position_embeddings": 128,
  "tie_word_embeddings": true,
  "bos_token_id": 1,
  "eos_token_id": 2
}"#;

/// The config, with tied embeddings or a separate `lm_head`.
fn config_text(tied: bool) -> String {
    CONFIG.replace("\"tie_word_embeddings\": true", &format!("\"tie_word_embeddings\": {tied}"))
}

/// Writes the random model into `dir`, with its own `lm_head.weight` unless `tied`.
fn write_model(dir: &Path, tied: bool) {
    let config = LlamaConfig::from_hf_json(CONFIG).unwrap();
    let (h, kv, inner) = (config.hidden_size, config.num_kv_heads * config.head_dim(), config.intermediate_size);
    let mut rng = StdRng::seed_from_u64(42);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut random = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| offset + scale * rng.random_range(-1f32..1.0)).collect();
        tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
    };
    random("model.embed_tokens.weight".into(), &[config.vocab_size, h], 0.5, 0.0);
    random("model.norm.weight".into(), &[h], 0.2, 1.0);
    if !tied {
        random("lm_head.weight".into(), &[config.vocab_size, h], 0.5, 0.0);
    }
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        random(format!("{p}.input_layernorm.weight"), &[h], 0.2, 1.0);
        random(format!("{p}.post_attention_layernorm.weight"), &[h], 0.2, 1.0);
        random(format!("{p}.self_attn.q_proj.weight"), &[h, h], 0.2, 0.0);
        random(format!("{p}.self_attn.k_proj.weight"), &[kv, h], 0.2, 0.0);
        random(format!("{p}.self_attn.v_proj.weight"), &[kv, h], 0.2, 0.0);
        random(format!("{p}.self_attn.o_proj.weight"), &[h, h], 0.2, 0.0);
        random(format!("{p}.mlp.gate_proj.weight"), &[inner, h], 0.2, 0.0);
        random(format!("{p}.mlp.up_proj.weight"), &[inner, h], 0.2, 0.0);
        random(format!("{p}.mlp.down_proj.weight"), &[h, inner], 0.2, 0.0);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config_text(tied)).unwrap();
}

/// Our model of the folder `dir` (float or pre-quantized) under `plan`.
fn ours(dir: &Path, plan: Option<Plan>) -> LlamaModel {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let loader = QuantLoader::open_folder(dir, &json, plan, || Plan::uniform(qlayers::LayerScheme::F32))
        .unwrap()
        .with_alias("lm_head.weight", "model.embed_tokens.weight");
    LlamaModel::load(LlamaConfig::from_hf_json(&text).unwrap(), &loader).unwrap()
}

fn worst_relative_error(ours: &[f32], theirs: &[f32]) -> f32 {
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs() / scale).fold(0.0, f32::max)
}

#[test]
fn fp32_matches_candle_transformers_llama_in_prefill_and_decoding() {
    for tied in [true, false] {
        let worst = compare_with_candle(tied);
        println!("tied {tied}: worst logit error relative to the largest logit: {worst:.2e}");
        assert!(worst < 1e-4, "tied {tied}: {worst}");
    }
}

/// Runs a prompt and 8 decoding steps through both models; the worst logit error relative to the largest logit.
fn compare_with_candle(tied: bool) -> f32 {
    let dir = common::Scratch::new(&format!("tiny-llama-{tied}"));
    write_model(dir.path(), tied);
    let model = ours(dir.path(), None);
    let config: candle_llama::LlamaConfig = serde_json::from_str(&config_text(tied)).unwrap();
    let config = config.into_config(false);
    let files = [dir.path().join("model.safetensors")];
    // SAFETY: nothing writes the file while it is mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu) }.unwrap();
    let theirs = candle_llama::Llama::load(vb, &config).unwrap();
    let mut their_cache = candle_llama::Cache::new(true, DType::F32, &config, &Device::Cpu).unwrap();
    let mut our_cache = model.new_cache();

    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 % 299) + 1).collect();
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let expected: Vec<f32> =
        theirs.forward(&input, 0, &mut their_cache).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let got = model.forward(&prompt, &mut our_cache).unwrap();
    let mut worst = worst_relative_error(&got, &expected);
    // Decoding with both caches, past the 32 positions the rotary scaling was trained on.
    let mut next = swap::models::llama::argmax(&got);
    for step in 0..8 {
        let input = Tensor::new(&[next], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let expected: Vec<f32> = theirs
            .forward(&input, prompt.len() + step, &mut their_cache)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = model.forward(&[next], &mut our_cache).unwrap();
        worst = worst.max(worst_relative_error(&got, &expected));
        assert_eq!(swap::models::llama::argmax(&got), swap::models::llama::argmax(&expected), "step {step}");
        next = swap::models::llama::argmax(&got);
    }
    worst
}

#[test]
fn checkpoints_of_a_safetensors_llama_load_to_the_same_model() {
    let dir = common::Scratch::new("tiny-llama-src");
    write_model(dir.path(), true);
    let out = common::Scratch::new("tiny-llama-int4");
    let plan = Plan::llama_preset("int4").unwrap();
    let report = quantize_llama(dir.path(), plan.clone(), out.path(), |_, _, _| {}).unwrap();
    assert_eq!(report.layers.len(), 2 * 4 + 1, "fused q/k/v and gate/up, o, down per block, and the head");
    let prompt = [5u32, 17, 33, 2, 250];
    let direct = ours(dir.path(), Some(plan.clone())).next_token_logits(&prompt).unwrap();
    let saved = ours(out.path(), None).next_token_logits(&prompt).unwrap();
    assert_eq!(direct, saved, "codes read back give the same logits, bit for bit");
    // The tied head was quantized on its own, per the plan (int8), beside the float embeddings.
    // SAFETY: nothing writes the file while it is mapped.
    let tensors =
        unsafe { candle_core::safetensors::MmapedSafetensors::new(out.path().join("model.safetensors")) }.unwrap();
    assert_eq!(tensors.get("lm_head.weight.codes").unwrap().shape(), [300, 64]);
    assert!(tensors.get("model.layers.0.mlp.up_proj.weight.mins").is_ok());
    // Another plan on the checkpoint is refused.
    let text = std::fs::read_to_string(out.path().join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let other = Plan::llama_preset("int8").unwrap();
    let err = QuantLoader::open_folder(out.path(), &json, Some(other), || plan.clone()).err().unwrap();
    assert!(format!("{err:#}").contains("cannot run plan"), "{err:#}");
    // A Llama config that is not one, and one whose heads do not divide the width, are clear errors.
    assert!(LlamaConfig::from_hf_json(&CONFIG.replace("\"llama\"", "\"bert\""))
        .unwrap_err()
        .to_string()
        .contains("bert"));
    let bad = CONFIG.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3");
    assert!(LlamaConfig::from_hf_json(&bad).unwrap_err().to_string().contains("do not fit"));
}
