//! Strict loaders: copies of the tiny fixtures (`tests/fixtures/architectures`) with tensors removed, renamed or
//! added, `config.json` values out of range or against the weights, GGUF metadata edited and files cut short. Each
//! is an error that names the tensor, the key or the lengths; a fixed-seed fuzz loop over header bytes, truncations
//! and config values checks that nothing panics.

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use common::Scratch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use swap::models::llama::LlamaModel;
use swap::{Embedder, Generator, ModelKind, Plan, Reranker, Task};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/architectures").join(name)
}

/// Copies fixture `name` (its files and module folders) into `dir`.
fn copy_fixture(name: &str, dir: &Path) {
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        let target = dir.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                std::fs::copy(&inner, target.join(inner.file_name().unwrap())).unwrap();
            }
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The tensors of a safetensors file as stored: dtype, shape and bytes by name.
type RawTensors = HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// Rewrites the weights of the model folder `dir` through `edit`.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut RawTensors)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: RawTensors =
        file.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect();
    edit(&mut tensors);
    let views = tensors.iter().map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()));
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

/// Rewrites the `config.json` of `dir` through `edit`.
fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

/// Opens the model folder `dir` for what its config says it does; `Err` holds the error's whole chain.
fn open(dir: &Path) -> Result<(), String> {
    let result = match ModelKind::of_folder(dir) {
        Err(e) => Err(e),
        Ok((kind, _)) => match kind.task {
            Task::Embedding => Embedder::open(dir, None).map(drop),
            Task::Reranking => Reranker::open(dir, None).map(drop),
            Task::Generation => Generator::open(dir, None).map(drop),
        },
    };
    result.map_err(|e| format!("{e:#}"))
}

/// The error of opening `dir`, which must fail.
fn open_err(dir: &Path) -> String {
    open(dir).expect_err("the model should not load")
}

/// A copy of fixture `name` in a fresh scratch folder.
fn scratch_fixture(name: &str, tag: &str) -> Scratch {
    let dir = Scratch::new(&format!("strict-{tag}"));
    copy_fixture(name, dir.path());
    dir
}

/// The Linear layers of a BERT layer.
const BERT_LINEARS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

#[test]
fn missing_linear_biases_are_errors_that_name_them() {
    // Every Linear bias removed (the file loaded and embedded with cosine 0.54).
    let dir = scratch_fixture("bert-cls", "no-biases");
    edit_weights(dir.path(), |t| {
        t.retain(|name, _| !BERT_LINEARS.iter().any(|l| name.ends_with(&format!("{l}.bias"))));
    });
    let err = open_err(dir.path());
    assert!(err.contains("weight encoder.layer.0.attention.self.query.bias is missing"), "{err}");
    // One bias of the last layer removed.
    let dir = scratch_fixture("bert-cls", "one-bias");
    edit_weights(dir.path(), |t| drop(t.remove("encoder.layer.1.output.dense.bias")));
    let err = open_err(dir.path());
    assert!(err.contains("weight encoder.layer.1.output.dense.bias is missing"), "{err}");
    // A reranker head's bias, and Qwen2's key bias.
    let dir = scratch_fixture("xlm-roberta-reranker", "head-bias");
    edit_weights(dir.path(), |t| drop(t.remove("classifier.out_proj.bias")));
    assert!(open_err(dir.path()).contains("weight classifier.out_proj.bias is missing"));
    let dir = scratch_fixture("qwen2", "qwen2-bias");
    edit_weights(dir.path(), |t| drop(t.remove("model.layers.0.self_attn.k_proj.bias")));
    assert!(open_err(dir.path()).contains("weight model.layers.0.self_attn.k_proj.bias is missing"));
}

#[test]
fn a_bias_renamed_by_a_flipped_header_byte_is_missing() {
    let dir = scratch_fixture("bert-cls", "renamed-bias");
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let name = b"encoder.layer.0.attention.output.dense.bias";
    let at = bytes.windows(name.len()).position(|w| w == name).expect("the bias is in the header");
    bytes[at + name.len() - 1] ^= 0x01; // `bias` -> `biar`
    std::fs::write(&path, &bytes).unwrap();
    let err = open_err(dir.path());
    assert!(err.contains("weight encoder.layer.0.attention.output.dense.bias is missing"), "{err}");
}

#[test]
fn unexpected_tensors_are_errors_that_name_them() {
    let extra = |t: &mut RawTensors, name: &str, like: &str| {
        let tensor = t[like].clone();
        t.insert(name.to_string(), tensor);
    };
    // A stray tensor beside a BERT's weights.
    let dir = scratch_fixture("bert-cls", "stray");
    edit_weights(dir.path(), |t| extra(t, "encoder.layer.0.attention.self.gate.weight", "pooler.dense.weight"));
    let err = open_err(dir.path());
    assert!(err.contains("unexpected tensor") && err.contains("encoder.layer.0.attention.self.gate.weight"), "{err}");
    // A third layer that config.json does not count.
    let dir = scratch_fixture("bert-cls", "extra-layer");
    edit_weights(dir.path(), |t| {
        extra(t, "encoder.layer.2.output.dense.weight", "encoder.layer.1.output.dense.weight")
    });
    let err = open_err(dir.path());
    assert!(err.contains("unexpected tensor") && err.contains("encoder.layer.2.output.dense.weight"), "{err}");
    // Biases where the architecture has none: ModernBERT's attention output, Llama's output projection.
    let dir = scratch_fixture("modernbert", "modernbert-bias");
    edit_weights(dir.path(), |t| extra(t, "layers.0.attn.Wo.bias", "final_norm.weight"));
    let err = open_err(dir.path());
    assert!(err.contains("unexpected tensor layers.0.attn.Wo.bias"), "{err}");
    let dir = scratch_fixture("llama", "llama-bias");
    edit_weights(dir.path(), |t| extra(t, "model.layers.1.self_attn.o_proj.bias", "model.norm.weight"));
    let err = open_err(dir.path());
    assert!(err.contains("unexpected tensor model.layers.1.self_attn.o_proj.bias"), "{err}");
    // What the architecture knows it does not read still loads: BertForMaskedLM's head, a saved position buffer.
    let dir = scratch_fixture("bert-cls", "mlm-head");
    edit_weights(dir.path(), |t| {
        extra(t, "cls.predictions.bias", "embeddings.LayerNorm.bias");
        extra(t, "embeddings.position_ids", "embeddings.LayerNorm.bias");
    });
    open(dir.path()).unwrap();
}

#[test]
fn pre_quantized_checkpoints_are_held_to_the_same_rule() {
    let src = Scratch::new("strict-ckpt-src");
    copy_fixture("bert-cls", src.path());
    let out = Scratch::new("strict-ckpt");
    swap::export::quantize_encoder(src.path(), Plan::bert_int8(), out.path(), |_, _, _| {}).unwrap();
    open(out.path()).unwrap();
    edit_weights(out.path(), |t| {
        let scales = t["encoder.layer.0.output.dense.weight.scales"].clone();
        t.insert("encoder.layer.0.output.dense.weight.extra".into(), scales);
    });
    let err = open_err(out.path());
    assert!(err.contains("unexpected tensor encoder.layer.0.output.dense.weight.extra"), "{err}");
}

#[test]
fn config_values_are_checked_against_ranges_and_weights() {
    let cases: [(&str, &str, serde_json::Value, &str); 10] = [
        ("bert-cls", "num_hidden_layers", 0.into(), "num_hidden_layers is 0"),
        ("bert-cls", "layer_norm_eps", 0.into(), "layer_norm_eps is 0"),
        ("bert-cls", "vocab_size", 999.into(), "vocab_size = 999, but embeddings.word_embeddings.weight has shape"),
        ("bert-cls", "intermediate_size", 100.into(), "intermediate_size = 100, but encoder.layer.0.intermediate"),
        ("bert-cls", "max_position_embeddings", 64.into(), "max_position_embeddings = 64, but embeddings.position"),
        ("xlm-roberta", "pad_token_id", 1_000_000_000.into(), "pad_token_id 1000000000 is outside the vocabulary"),
        ("distilbert", "n_layers", 0.into(), "n_layers is 0"),
        ("modernbert", "num_hidden_layers", 1.into(), "num_hidden_layers = 1, but the checkpoint has more layers"),
        ("llama", "bos_token_id", 1_000_000_000.into(), "bos_token_id 1000000000 is outside the vocabulary of 1000"),
        ("llama", "head_dim", 8.into(), "num_attention_heads * head_dim = 32, but model.layers.0.self_attn.o_proj"),
    ];
    for (i, (name, key, value, expected)) in cases.into_iter().enumerate() {
        let dir = scratch_fixture(name, &format!("config-{i}"));
        edit_config(dir.path(), |c| c[key] = value);
        let err = open_err(dir.path());
        assert!(err.contains(expected), "{name} {key}: {err}");
    }
    let dir = scratch_fixture("llama", "rope-theta");
    edit_config(dir.path(), |c| c["rope_parameters"]["rope_theta"] = 0.into());
    assert!(open_err(dir.path()).contains("rope_theta is 0"));
}

#[test]
fn safetensors_cut_short_say_how_long_they_are() {
    let dir = scratch_fixture("bert-cls", "cut-safetensors");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let file = path.display();
    for (cut, expected) in [
        (0, "it is 0 bytes; a safetensors file needs at least 8".to_string()),
        (8, format!("it is 8 bytes; its header needs at least {header_end}")),
        (bytes.len() - 1, format!("it is {} bytes; its header describes {}", bytes.len() - 1, bytes.len())),
    ] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = open_err(dir.path());
        assert!(err.contains(&format!("{file} is not a valid safetensors file: {expected}")), "{err}");
    }
}

/// The llama fixture's tensors under GGUF names (in f32; the Q and K rows are left in HF order, so only the
/// file's structure is faithful, not its outputs).
fn gguf_tensors() -> Vec<(String, QTensor)> {
    let tensors = candle_core::safetensors::load(fixture("llama").join("model.safetensors"), &Device::Cpu).unwrap();
    let rename = |name: &str| -> String {
        let name = name.strip_prefix("model.").unwrap();
        let tails = [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ];
        match name {
            "embed_tokens.weight" => "token_embd.weight".into(),
            "norm.weight" => "output_norm.weight".into(),
            _ => tails.iter().fold(name.replace("layers.", "blk."), |n, (hf, gguf)| n.replace(hf, gguf)),
        }
    };
    let mut out: Vec<(String, QTensor)> =
        tensors.iter().map(|(n, t)| (rename(n), QTensor::quantize(t, GgmlDType::F32).unwrap())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The metadata of the tiny GGUF Llama (the llama fixture's config, a vocabulary of 1000 tokens).
fn gguf_metadata() -> Vec<(String, Value)> {
    let u32s = [
        ("llama.embedding_length", 64),
        ("llama.feed_forward_length", 128),
        ("llama.block_count", 2),
        ("llama.attention.head_count", 4),
        ("llama.attention.head_count_kv", 2),
        ("llama.context_length", 512),
        ("llama.rope.dimension_count", 16),
        ("llama.vocab_size", 1000),
        ("tokenizer.ggml.bos_token_id", 0),
        ("tokenizer.ggml.eos_token_id", 0),
    ];
    let mut metadata: Vec<(String, Value)> = u32s.iter().map(|&(k, v)| (k.to_string(), Value::U32(v))).collect();
    metadata.push(("general.architecture".into(), Value::String("llama".into())));
    metadata.push(("llama.attention.layer_norm_rms_epsilon".into(), Value::F32(1e-6)));
    metadata.push(("llama.rope.freq_base".into(), Value::F32(10_000.0)));
    let tokens = (0..1000).map(|i| Value::String(format!("t{i}"))).collect();
    metadata.push(("tokenizer.ggml.tokens".into(), Value::Array(tokens)));
    metadata
}

/// Writes a GGUF file of `metadata` and `tensors` to `path`.
fn write_gguf(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) {
    let mut file = std::fs::File::create(path).unwrap();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
}

/// Loads the GGUF Llama at `path` in f32; `Err` holds the error's whole chain.
fn open_gguf(path: &Path) -> Result<(), String> {
    LlamaModel::from_gguf(path, &Plan::llama(qlayers::LayerScheme::F32)).map(drop).map_err(|e| format!("{e:#}"))
}

/// The error of loading the tiny GGUF Llama with `key` set to `value`.
fn gguf_err_with(tag: &str, key: &str, value: Value) -> String {
    let dir = Scratch::new(&format!("strict-gguf-{tag}"));
    let path = dir.path().join("model.gguf");
    let mut metadata = gguf_metadata();
    metadata.retain(|(k, _)| k != key);
    metadata.push((key.to_string(), value));
    write_gguf(&path, &metadata, &gguf_tensors());
    open_gguf(&path).expect_err("the GGUF file should not load")
}

#[test]
fn gguf_metadata_is_checked_against_the_model() {
    let dir = Scratch::new("strict-gguf-ok");
    let path = dir.path().join("model.gguf");
    write_gguf(&path, &gguf_metadata(), &gguf_tensors());
    open_gguf(&path).unwrap();
    let cases = [
        ("rope.dimension_count", Value::U32(0), "llama.rope.dimension_count is 0"),
        ("rope.dimension_count", Value::U32(32), "llama.rope.dimension_count 32 exceeds the head width 16"),
        ("rope.dimension_count", Value::U32(8), "llama.rope.dimension_count 8 is below the head width 16: this"),
        ("block_count", Value::U32(0), "num_hidden_layers is 0"),
        ("vocab_size", Value::U32(999), "vocab_size = 999, but model.embed_tokens.weight has shape [1000, 64]"),
    ];
    for (i, (key, value, expected)) in cases.into_iter().enumerate() {
        let err = gguf_err_with(&format!("meta-{i}"), &format!("llama.{key}"), value);
        assert!(err.contains(expected), "{key}: {err}");
    }
    for kind in ["bos", "eos", "padding", "unknown"] {
        let key = format!("tokenizer.ggml.{kind}_token_id");
        let err = gguf_err_with(kind, &key, Value::U32(1_000_000_000));
        assert!(err.contains(&format!("{key} 1000000000 is outside the vocabulary of 1000 tokens")), "{err}");
    }
    // A tensor the model does not read, named as the file names it.
    let mut tensors = gguf_tensors();
    let norm = tensors.iter().find(|(n, _)| n == "output_norm.weight").unwrap().1.dequantize(&Device::Cpu).unwrap();
    tensors.push(("blk.0.attn_q.bias".into(), QTensor::quantize(&norm, GgmlDType::F32).unwrap()));
    write_gguf(&path, &gguf_metadata(), &tensors);
    let err = open_gguf(&path).unwrap_err();
    assert!(err.contains("unexpected tensor blk.0.attn_q.bias"), "{err}");
}

#[test]
fn gguf_files_cut_short_say_how_long_they_are() {
    let dir = Scratch::new("strict-gguf-cut");
    let path = dir.path().join("model.gguf");
    write_gguf(&path, &gguf_metadata(), &gguf_tensors());
    let bytes = std::fs::read(&path).unwrap();
    let file = path.display();
    std::fs::write(&path, &bytes[..8]).unwrap();
    let err = open_gguf(&path).unwrap_err();
    assert!(err.contains(&format!("{file} is not a valid GGUF file: it is 8 bytes; a GGUF header needs at least 24")));
    let cut = bytes.len() - 100;
    std::fs::write(&path, &bytes[..cut]).unwrap();
    let err = open_gguf(&path).unwrap_err();
    let expected =
        format!("{file} is not a valid GGUF file: it is {cut} bytes; its header needs at least {}", bytes.len());
    assert!(err.contains(&expected), "{err}");
}

/// One fuzz case's outcome: `Err` when loading panicked.
fn survives(load: impl FnOnce() -> Result<(), String>) -> Result<Result<(), String>, ()> {
    catch_unwind(AssertUnwindSafe(load)).map_err(drop)
}

/// A value a config key is set to in the fuzz loop: edges of every range and wrong types.
fn fuzz_value(rng: &mut StdRng) -> serde_json::Value {
    let values = [
        serde_json::json!(0),
        serde_json::json!(1),
        serde_json::json!(-1),
        serde_json::json!(3),
        serde_json::json!(1_000_000_000),
        serde_json::json!(1u64 << 40),
        serde_json::json!(u64::MAX),
        serde_json::json!(0.0),
        serde_json::json!(-1e-5),
        serde_json::json!(1e30),
        serde_json::json!("x"),
        serde_json::Value::Null,
    ];
    values[rng.random_range(0..values.len())].clone()
}

/// A fixed-seed loop of corrupt inputs: byte flips in the safetensors headers of every fixture, truncations of
/// them, edits of every `config.json` value, byte flips in a GGUF header and truncations of it. Every case loads or
/// is an error, never a panic, and every truncation's message carries the file's length.
#[test]
fn corrupt_inputs_are_errors_never_panics() {
    const FIXTURES: [&str; 6] = ["bert-cls", "xlm-roberta-reranker", "distilbert", "mpnet", "modernbert", "qwen2"];
    let mut rng = StdRng::seed_from_u64(20_251_202);
    let mut panics = Vec::new();
    let mut check = |case: String, outcome: Result<Result<(), String>, ()>, must_name: Option<String>| match outcome {
        Err(()) => panics.push(case),
        Ok(Ok(())) => assert!(must_name.is_none(), "{case}: a truncated file loaded"),
        Ok(Err(err)) => {
            if let Some(needle) = must_name {
                assert!(err.contains(&needle), "{case}: {err}");
            }
        }
    };
    let scratch = Scratch::new("strict-fuzz");
    for (i, name) in FIXTURES.iter().enumerate() {
        let dir = scratch.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        copy_fixture(name, &dir);
        let weights = dir.join("model.safetensors");
        let (original, config) = (std::fs::read(&weights).unwrap(), std::fs::read(dir.join("config.json")).unwrap());
        let header_end = 8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
        for j in 0..30 {
            let mut bytes = original.clone();
            let at = rng.random_range(0..header_end);
            bytes[at] ^= 1 << rng.random_range(0..8);
            std::fs::write(&weights, &bytes).unwrap();
            check(format!("{name}: flip #{j} at {at}"), survives(|| open(&dir)), None);
        }
        for j in 0..8 {
            let cut = rng.random_range(0..original.len());
            std::fs::write(&weights, &original[..cut]).unwrap();
            check(format!("{name}: cut #{j} at {cut}"), survives(|| open(&dir)), Some(format!("it is {cut} bytes")));
        }
        std::fs::write(&weights, &original).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&config).unwrap();
        let keys: Vec<String> = json.as_object().unwrap().keys().cloned().collect();
        for j in 0..25 {
            let key = &keys[rng.random_range(0..keys.len())];
            let value = fuzz_value(&mut rng);
            let mut edited = json.clone();
            edited[key] = value.clone();
            std::fs::write(dir.join("config.json"), edited.to_string()).unwrap();
            check(format!("{name}: config #{j} {key} = {value}"), survives(|| open(&dir)), None);
        }
        std::fs::write(dir.join("config.json"), &config).unwrap();
        assert!(open(&dir).is_ok(), "fixture {i} {name} is restored");
    }
    let path = scratch.path().join("model.gguf");
    let tensors = gguf_tensors();
    write_gguf(&path, &gguf_metadata(), &tensors);
    let original = std::fs::read(&path).unwrap();
    let data_bytes: usize = tensors.iter().map(|(_, t)| t.storage_size_in_bytes()).sum();
    let header_end = original.len() - data_bytes;
    for j in 0..60 {
        let mut bytes = original.clone();
        let at = rng.random_range(0..header_end);
        bytes[at] ^= 1 << rng.random_range(0..8);
        std::fs::write(&path, &bytes).unwrap();
        check(format!("gguf: flip #{j} at {at}"), survives(|| open_gguf(&path)), None);
    }
    for j in 0..20 {
        let cut = rng.random_range(0..original.len());
        std::fs::write(&path, &original[..cut]).unwrap();
        check(format!("gguf: cut #{j} at {cut}"), survives(|| open_gguf(&path)), Some(format!("{cut} bytes")));
    }
    assert!(panics.is_empty(), "{} cases panicked: {panics:#?}", panics.len());
}
