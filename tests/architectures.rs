//! Every encoder, embedder and reranker architecture against transformers' and sentence-transformers' outputs on
//! tiny random-weight models (`tests/fixtures/architectures/<name>`: hidden 64, 2-3 layers, random weights drawn
//! wide so that a wrong detail shows): the tokenizer's ids, the last hidden states, the pooled embeddings and the
//! cross-encoder scores in fp32, and the default int8 plan's embeddings and rankings.

use std::path::PathBuf;

use swap::eval::cosine;
use swap::{Embedder, Plan, Reranker};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/architectures").join(name)
}

fn reference(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// For each text, the other texts ordered by cosine similarity to it.
fn neighbours(embeddings: &[Vec<f32>]) -> Vec<Vec<usize>> {
    (0..embeddings.len())
        .map(|i| {
            let mut others: Vec<usize> = (0..embeddings.len()).filter(|&j| j != i).collect();
            others.sort_by(|&a, &b| {
                cosine(&embeddings[i], &embeddings[b]).total_cmp(&cosine(&embeddings[i], &embeddings[a]))
            });
            others
        })
        .collect()
}

/// fp32: ids equal, hidden states within 1e-4 of the largest value, embeddings cosine >= 0.99999; default int8:
/// cosine >= 0.995 and the same neighbour order.
fn check_embedder(name: &str) {
    let reference = reference(name);
    let inputs = reference["inputs"].as_array().unwrap();
    let texts: Vec<&str> = inputs.iter().map(|i| i["text"].as_str().unwrap()).collect();
    let expected_ids: Vec<Vec<u32>> = inputs.iter().map(|i| ids(&i["input_ids"])).collect();
    let fp32 = Embedder::load(&fixture(name), Plan::uniform(qlayers::LayerScheme::F32)).unwrap();
    assert_eq!(fp32.encode(&texts).unwrap(), expected_ids, "{name}: token ids");
    let hidden = fp32.token_embeddings(&expected_ids).unwrap();
    for (i, (ours, theirs)) in hidden.iter().zip(reference["last_hidden_state"].as_array().unwrap()).enumerate() {
        let theirs: Vec<f32> = theirs.as_array().unwrap().iter().flat_map(floats).collect();
        assert_eq!(ours.len(), theirs.len(), "{name}: hidden state size of input {i}");
        let largest = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = ours.iter().zip(&theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-4 * largest, "{name}: input {i}: hidden states off by {worst} (largest {largest})");
    }
    let expected: Vec<Vec<f32>> = reference["embeddings"].as_array().unwrap().iter().map(floats).collect();
    let embeddings = fp32.embed(&texts).unwrap();
    for (i, (ours, theirs)) in embeddings.iter().zip(&expected).enumerate() {
        let c = cosine(ours, theirs);
        assert!(c >= 0.99999, "{name}: fp32 embedding {i} cosine {c}");
    }
    let int8 = Embedder::open(&fixture(name), None).unwrap();
    let quantized = int8.embed(&texts).unwrap();
    for (i, (ours, theirs)) in quantized.iter().zip(&expected).enumerate() {
        let c = cosine(ours, theirs);
        assert!(c >= 0.995, "{name}: int8 embedding {i} cosine {c}");
    }
    assert_eq!(neighbours(&quantized), neighbours(&expected), "{name}: int8 neighbour order");
}

/// fp32 scores within 1e-4; default int8 ranks the documents of each query as the reference does.
fn check_reranker(name: &str) {
    let reference = reference(name);
    let pairs = reference["pairs"].as_array().unwrap();
    let expected: Vec<f32> = floats(&reference["scores"]);
    let fp32 = Reranker::open(&fixture(name), Some(Plan::uniform(qlayers::LayerScheme::F32))).unwrap();
    let int8 = Reranker::open(&fixture(name), None).unwrap();
    let mut quantized = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        let (query, document) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let tokens = fp32.encode(query, &[document]).unwrap();
        assert_eq!(tokens[0].ids, ids(&reference["input_ids"][i]), "{name}: pair {i} token ids");
        let score = fp32.score(query, &[document]).unwrap()[0];
        assert!((score - expected[i]).abs() <= 1e-4, "{name}: pair {i}: score {score}, expected {}", expected[i]);
        quantized.push(int8.score(query, &[document]).unwrap()[0]);
    }
    let order = |s: &[f32]| {
        let mut o: Vec<usize> = (0..s.len()).collect();
        o.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        o
    };
    assert_eq!(order(&quantized), order(&expected), "{name}: int8 ranking {quantized:?} against {expected:?}");
}

#[test]
fn bert_with_cls_pooling_matches_sentence_transformers() {
    check_embedder("bert-cls");
}

#[test]
fn xlm_roberta_matches_sentence_transformers() {
    check_embedder("xlm-roberta");
}

#[test]
fn distilbert_matches_sentence_transformers() {
    check_embedder("distilbert");
}

#[test]
fn mpnet_matches_sentence_transformers() {
    check_embedder("mpnet");
}

#[test]
fn modernbert_matches_sentence_transformers() {
    check_embedder("modernbert");
}

#[test]
fn qwen3_used_as_an_embedder_matches_sentence_transformers() {
    check_embedder("qwen3-embedding");
}

/// `config_sentence_transformers.json` prompts go before the text when named (and the default one when none is),
/// as sentence-transformers' `encode(prompt_name=...)` does; an unknown name is an error that lists them.
#[test]
fn named_prompts_go_before_the_text() {
    let dir = std::env::temp_dir().join(format!("qinfer-prompts-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for entry in std::fs::read_dir(fixture("qwen3-embedding")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(fixture("qwen3-embedding").join("1_Pooling/config.json"), dir.join("1_Pooling/config.json")).unwrap();
    let prompt = "Instruct: Given a question, find passages that answer it\nQuery:";
    let write = |default: Option<&str>| {
        let config = serde_json::json!({"prompts": {"query": prompt, "document": ""}, "default_prompt_name": default});
        std::fs::write(dir.join("config_sentence_transformers.json"), config.to_string()).unwrap();
        Embedder::load(&dir, Plan::uniform(qlayers::LayerScheme::F32)).unwrap()
    };
    let embedder = write(None);
    let text = "What runs quantized models?";
    let with_prompt = embedder.embed_with_prompt(&[text], Some("query")).unwrap();
    assert_eq!(with_prompt, embedder.embed(&[&format!("{prompt}{text}")]).unwrap());
    assert_ne!(with_prompt, embedder.embed(&[text]).unwrap());
    assert_eq!(embedder.embed_with_prompt(&[text], Some("document")).unwrap(), embedder.embed(&[text]).unwrap());
    let err = embedder.embed_with_prompt(&[text], Some("passage")).unwrap_err().to_string();
    assert!(err.contains("\"passage\"") && err.contains("document, query"), "{err}");
    // A default prompt applies when none is named.
    let defaulted = write(Some("query"));
    assert_eq!(defaulted.embed(&[text]).unwrap(), with_prompt);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bert_reranker_matches_transformers() {
    check_reranker("bert-reranker");
}

#[test]
fn xlm_roberta_reranker_matches_transformers() {
    check_reranker("xlm-roberta-reranker");
}

/// With a tokenizer class whose inputs include token types (`BertTokenizer`, as real BERT cross-encoders ship),
/// the document is segment 1. The scores are transformers 5.23's for the `bert-reranker` fixture with
/// `"tokenizer_class": "BertTokenizer"` (`AutoTokenizer` then returns `token_type_ids`, which the model is given).
#[test]
fn bert_reranker_sees_segments_when_its_tokenizer_gives_them() {
    let dir = std::env::temp_dir().join(format!("qinfer-segments-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture("bert-reranker")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let config_path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["tokenizer_class"] = "BertTokenizer".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let reranker = Reranker::open(&dir, Some(Plan::uniform(qlayers::LayerScheme::F32))).unwrap();
    let reference = reference("bert-reranker");
    let expected = [0.03260517_f32, 0.011348695, 0.030950937];
    for (i, pair) in reference["pairs"].as_array().unwrap().iter().enumerate() {
        let (query, document) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let tokens = &reranker.encode(query, &[document]).unwrap()[0];
        let first_document_token = tokens.types.iter().position(|&t| t == 1).unwrap();
        assert_eq!(tokens.ids[first_document_token - 1], 3, "the query's [SEP] ends segment 0");
        let score = reranker.score(query, &[document]).unwrap()[0];
        assert!((score - expected[i]).abs() <= 1e-4, "pair {i}: score {score}, expected {}", expected[i]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A pre-quantized checkpoint of every architecture (default plan) loads without its float weights and gives the
/// same outputs, bit for bit, as quantizing while loading.
#[test]
fn every_architecture_round_trips_through_a_checkpoint() {
    let names = ["bert-cls", "xlm-roberta", "distilbert", "mpnet", "modernbert", "qwen3-embedding", "bert-reranker"];
    for name in names.into_iter().chain(["xlm-roberta-reranker"]) {
        let out = std::env::temp_dir().join(format!("qinfer-ckpt-{name}-{}", std::process::id()));
        swap::export::quantize_encoder(
            &fixture(name),
            swap::ModelKind::of_folder(&fixture(name)).unwrap().0.default_plan(),
            &out,
            |_, _, _| {},
        )
        .unwrap();
        let reference = reference(name);
        if reference["kind"] == "cross-encoder" {
            let (query, document) =
                (reference["pairs"][0][0].as_str().unwrap(), reference["pairs"][0][1].as_str().unwrap());
            let saved = Reranker::open(&out, None).unwrap().score(query, &[document]).unwrap();
            let direct = Reranker::open(&fixture(name), None).unwrap().score(query, &[document]).unwrap();
            assert_eq!(saved, direct, "{name}");
        } else {
            let texts: Vec<&str> =
                reference["inputs"].as_array().unwrap().iter().map(|i| i["text"].as_str().unwrap()).collect();
            let saved = Embedder::open(&out, None).unwrap().embed(&texts).unwrap();
            let direct = Embedder::open(&fixture(name), None).unwrap().embed(&texts).unwrap();
            assert_eq!(saved, direct, "{name}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// Configs the engine cannot run, and weights that do not fit their config, are errors that say so.
#[test]
fn unsupported_and_mismatched_models_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("qinfer-bad-arch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture("bert-cls")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let config_path = dir.join("config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut c = config.clone();
        edit(&mut c);
        std::fs::write(&config_path, c.to_string()).unwrap();
        Embedder::open(&dir, None).err().map(|e| format!("{e:#}")).unwrap_or_default()
    };
    let err = with(&|c| c["model_type"] = "gpt2".into());
    assert!(err.contains("\"gpt2\"") && err.contains("bert, roberta"), "{err}");
    let err = with(&|c| c["hidden_size"] = 96.into());
    assert!(err.contains("do not match") && err.contains("shape"), "{err}");
    let err = with(&|c| c["num_hidden_layers"] = 3.into());
    assert!(err.contains("num_hidden_layers = 3") && err.contains("holds 2 layers"), "{err}");
    // A pre-training head names the encoder's task no more than sentence-transformers reads it: it embeds.
    assert_eq!(with(&|c| c["architectures"] = serde_json::json!(["BertForMaskedLM"])), "");
    let err = with(&|c| c["architectures"] = serde_json::json!(["BertForSequenceClassification"]));
    assert!(err.contains("run it with `rerank`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A candle `VarBuilder` of any backend is a weight store beside the loader's own: the same tensors through
/// candle's in-memory builder and through a `VarMap` give the embeddings of the folder read directly, bit for bit,
/// under the default int8 plan without its SmoothQuant (a loader handed to a model runs no calibration: a plan
/// that smooths is refused there); a tensor the builder lacks (a bias included) is an error, not a fresh random one.
#[test]
fn candle_var_builders_are_weight_stores() {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    let dir = fixture("xlm-roberta");
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let texts = ["Quantized models run faster.", "A second text"];
    let plan = Plan { smooth: None, ..Plan::bert_int8() };
    let direct = Embedder::open(&dir, Some(plan.clone())).unwrap();
    let want = direct.embed(&texts).unwrap();
    let from_builder =
        |vb: VarBuilder<'static>| direct.with_loader(&swap::QuantLoader::from_var_builder(vb, plan.clone()));
    let in_memory = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let smoothing = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let err = direct.with_loader(&swap::QuantLoader::from_var_builder(smoothing, Plan::bert_int8())).err().unwrap();
    assert!(format!("{err:#}").contains("without calibration ranges"), "{err:#}");
    let static_plan = Plan::uniform(qlayers::LayerScheme::W8A8Static);
    let unsmoothed = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
    let err = direct.with_loader(&swap::QuantLoader::from_var_builder(unsmoothed, static_plan)).err().unwrap();
    assert!(format!("{err:#}").contains("is w8a8-static, but was built without calibration"), "{err:#}");
    assert_eq!(from_builder(in_memory).unwrap().embed(&texts).unwrap(), want);
    let varmap = VarMap::new();
    let missing = "encoder.layer.1.output.dense.bias";
    for (name, tensor) in &tensors {
        if name != missing {
            varmap.data().lock().unwrap().insert(name.clone(), candle_core::Var::from_tensor(tensor).unwrap());
        }
    }
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    // A missing bias is an error naming it, and nothing was invented.
    let err = from_builder(vb.clone()).err().unwrap();
    assert!(format!("{err:#}").contains(&format!("weight {missing} is missing")), "{err:#}");
    assert!(!varmap.data().lock().unwrap().contains_key(missing));
    varmap.data().lock().unwrap().insert(missing.into(), candle_core::Var::from_tensor(&tensors[missing]).unwrap());
    assert_eq!(from_builder(vb).unwrap().embed(&texts).unwrap(), want);
    let err = from_builder(VarBuilder::from_varmap(&VarMap::new(), DType::F32, &Device::Cpu)).err().unwrap();
    assert!(format!("{err:#}").contains("has none of embeddings.position_embeddings.weight"), "{err:#}");
}

/// The post-norm encoders on candle's kernels (`Placement::Candle`, the path of GPU devices) on the CPU: fp32
/// hidden states and embeddings as close to transformers' as the CPU kernels' are; the default int8 plan (f16
/// weights, no ggml form) and a weight-only int8 plan (Q8_0 blocks) within the int8 bounds of `check_embedder`,
/// with every layer reported on candle's kernels. The fixtures' texts have different lengths, so a batch attends
/// in several runs.
#[test]
fn post_norm_encoders_run_whole_on_candle_kernels() {
    use qlayers::LayerPath;
    let placement = swap::Placement::parse("candle-cpu").unwrap();
    for name in ["bert-cls", "xlm-roberta", "distilbert", "mpnet"] {
        let reference = reference(name);
        let inputs = reference["inputs"].as_array().unwrap();
        let texts: Vec<&str> = inputs.iter().map(|i| i["text"].as_str().unwrap()).collect();
        let expected_ids: Vec<Vec<u32>> = inputs.iter().map(|i| ids(&i["input_ids"])).collect();
        let fp32 =
            Embedder::open_on(&fixture(name), Some(Plan::uniform(qlayers::LayerScheme::F32)), &placement).unwrap();
        let hidden = fp32.token_embeddings(&expected_ids).unwrap();
        for (i, (ours, theirs)) in hidden.iter().zip(reference["last_hidden_state"].as_array().unwrap()).enumerate() {
            let theirs: Vec<f32> = theirs.as_array().unwrap().iter().flat_map(floats).collect();
            let largest = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = ours.iter().zip(&theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= 1e-4 * largest, "{name}: input {i}: hidden states off by {worst} (largest {largest})");
        }
        let expected: Vec<Vec<f32>> = reference["embeddings"].as_array().unwrap().iter().map(floats).collect();
        for (i, (ours, theirs)) in fp32.embed(&texts).unwrap().iter().zip(&expected).enumerate() {
            let c = cosine(ours, theirs);
            assert!(c >= 0.99999, "{name}: fp32 embedding {i} cosine {c}");
        }
        let weight_only: Plan = "int8-g32".parse::<qlayers::LayerScheme>().map(Plan::uniform).unwrap();
        // Blocks of 64 over K = 64 are a scale per row, which Q8_0 holds; the K = 256 ones are not.
        let on_candle = |path: &LayerPath| matches!(path, LayerPath::GgmlBlocks(_) | LayerPath::DequantizedF16);
        let q8_0 = |path: &LayerPath| *path == LayerPath::GgmlBlocks(candle_core::quantized::GgmlDType::Q8_0);
        for (plan, expected_path) in [(None, &on_candle as &dyn Fn(&LayerPath) -> bool), (Some(weight_only), &q8_0)] {
            let int8 = Embedder::open_on(&fixture(name), plan, &placement).unwrap();
            let layers = int8.layers();
            assert!(!layers.is_empty() && layers.iter().all(|l| expected_path(&l.path)), "{name}: {layers:?}");
            let quantized = int8.embed(&texts).unwrap();
            for (i, (ours, theirs)) in quantized.iter().zip(&expected).enumerate() {
                let c = cosine(ours, theirs);
                assert!(c >= 0.995, "{name}: int8 embedding {i} cosine {c}");
            }
            assert_eq!(neighbours(&quantized), neighbours(&expected), "{name}: int8 neighbour order");
        }
    }
}
