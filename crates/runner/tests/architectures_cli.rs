//! `runner embed`, `runner rerank` and `runner quantize` on every encoder architecture's tiny random-weight
//! fixture (`tests/fixtures/architectures`), against the reference outputs of transformers and
//! sentence-transformers stored beside each.

mod common;

use common::{embeddings, fails, ok, workspace, Scratch};
use serde_json::Value;

fn fixture(name: &str) -> String {
    workspace().join("tests/fixtures/architectures").join(name).display().to_string()
}

fn reference(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{}/reference.json", fixture(name))).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

#[test]
fn embed_matches_sentence_transformers_on_every_embedder() {
    for name in ["bert-cls", "xlm-roberta", "distilbert", "mpnet", "modernbert", "qwen3-embedding"] {
        let reference = reference(name);
        let texts: Vec<&str> =
            reference["inputs"].as_array().unwrap().iter().map(|i| i["text"].as_str().unwrap()).collect();
        let model = fixture(name);
        let out = ok(&[&["embed", "--model", &model, "--quant", "fp32"][..], &texts].concat());
        for (i, (ours, theirs)) in embeddings(&out).iter().zip(reference["embeddings"].as_array().unwrap()).enumerate()
        {
            let c = cosine(ours, &floats(theirs));
            assert!(c >= 0.99999, "{name}: embedding {i}: cosine {c}");
        }
    }
}

/// The pairs of a reranker fixture grouped by query: (query, [(pair index, document)]).
fn queries(reference: &Value) -> Vec<(String, Vec<(usize, String)>)> {
    let mut groups: Vec<(String, Vec<(usize, String)>)> = Vec::new();
    for (i, pair) in reference["pairs"].as_array().unwrap().iter().enumerate() {
        let (query, document) = (pair[0].as_str().unwrap().to_string(), pair[1].as_str().unwrap().to_string());
        match groups.iter_mut().find(|(q, _)| *q == query) {
            Some((_, docs)) => docs.push((i, document)),
            None => groups.push((query, vec![(i, document)])),
        }
    }
    groups
}

#[test]
fn rerank_prints_transformers_scores_best_first() {
    for name in ["bert-reranker", "xlm-roberta-reranker"] {
        let reference = reference(name);
        let expected = floats(&reference["scores"]);
        let model = fixture(name);
        for (query, docs) in queries(&reference) {
            let texts: Vec<&str> = docs.iter().map(|(_, d)| d.as_str()).collect();
            let args = ["rerank", "--model", &model, "--quant", "fp32", "--raw-scores", "--query", &query];
            let lines: Vec<Value> =
                ok(&[&args[..], &texts].concat()).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            assert_eq!(lines.len(), docs.len(), "{name}");
            let scores: Vec<f32> = lines.iter().map(|l| l["score"].as_f64().unwrap() as f32).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{name}: not best first: {scores:?}");
            for line in &lines {
                let (index, score) = (line["index"].as_u64().unwrap() as usize, line["score"].as_f64().unwrap() as f32);
                let want = expected[docs[index].0];
                assert!((score - want).abs() <= 1e-4, "{name}: {query:?} doc {index}: {score} vs {want}");
            }
            // Without --raw-scores: the sigmoid of the same scores, in the same order.
            let relevance: Vec<Value> = ok(&[&args[..5], &args[6..], &texts].concat())
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            for (raw, rel) in lines.iter().zip(&relevance) {
                assert_eq!(raw["index"], rel["index"]);
                let sigmoid = 1.0 / (1.0 + (-raw["score"].as_f64().unwrap()).exp());
                assert!((rel["score"].as_f64().unwrap() - sigmoid).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn quantized_reranker_checkpoints_score_as_quantizing_on_load() {
    let dir = Scratch::new("rerank-ckpt");
    let out = dir.join("xlmr-int8");
    let model = fixture("xlm-roberta-reranker");
    ok(&["quantize", "--model", &model, "--out", &out]);
    let args = ["--query", "What is the capital of France?", "Paris is the capital of France.", "Berlin is big."];
    assert_eq!(
        ok(&[&["rerank", "--model", &out][..], &args].concat()),
        ok(&[&["rerank", "--model", &model][..], &args].concat())
    );
}

#[test]
fn bad_rerank_requests_are_clear_errors() {
    let model = fixture("bert-reranker");
    assert!(fails(&["rerank", "--model", &model, "--query", " ", "a"]).contains("--query is empty"));
    assert!(fails(&["rerank", "--model", &model, "--query", "q", "a", ""]).contains("document #1"));
    assert!(fails(&["rerank", "--model", &fixture("bert-cls"), "--query", "q", "a"]).contains("run it with `embed`"));
    assert!(fails(&["embed", "--model", &model, "a"]).contains("run it with `rerank`"));
}

/// `bench`, `eval`, `inspect` and `quantize --auto` take every embedder the registry knows, not only BERT.
#[test]
fn bench_eval_inspect_and_auto_plans_take_every_embedder() {
    let dir = Scratch::new("arch-tools");
    for name in ["xlm-roberta", "distilbert", "mpnet", "modernbert", "qwen3-embedding"] {
        let model = fixture(name);
        let bench = ok(&["bench", "--model", &model, "--batch", "2", "--seq", "16", "--iters", "1", "--json"]);
        let v: Value = serde_json::from_str(&bench).unwrap();
        let names: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["fp32", "int8"], "{name}: candle-transformers' baseline is BERT's only");
        // eval against the reference embeddings of the fixture's own texts.
        let reference = reference(name);
        let lines: Vec<String> = reference["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(reference["embeddings"].as_array().unwrap())
            .map(|(i, e)| serde_json::json!({"text": i["text"], "embedding": e}).to_string())
            .collect();
        let file = dir.join(&format!("{name}.jsonl"));
        std::fs::write(&file, lines.join("\n")).unwrap();
        let eval: Value =
            serde_json::from_str(&ok(&["eval", "--model", &model, "--quant", "fp32", "--reference", &file, "--json"]))
                .unwrap();
        assert!(eval["cosine_min"].as_f64().unwrap() >= 0.99999, "{name}: {eval}");
        let inspect: Value = serde_json::from_str(&ok(&[
            "inspect",
            "--model",
            &model,
            "--quant",
            "w8a8-b32-pb",
            "--texts",
            "4",
            "--json",
        ]))
        .unwrap();
        assert!(!inspect["layers"].as_array().unwrap().is_empty(), "{name}");
    }
    let out = dir.join("auto");
    let model = fixture("mpnet");
    let report =
        ok(&["quantize", "--model", &model, "--auto", "--target", "cosine>=0.99", "--texts", "4", "--out", &out]);
    assert!(report.contains("plan saved"), "{report}");
    ok(&["embed", "--model", &out, "hello"]);
    // A reranker is timed scoring pairs, fp32 against its default plan.
    let bench =
        ok(&["bench", "--model", &fixture("bert-reranker"), "--batch", "2", "--seq", "16", "--iters", "1", "--json"]);
    let v: Value = serde_json::from_str(&bench).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2, "{v}");
}

/// A reranker's layers are measured by how far its scores move (`inspect`), and `quantize --auto` finds a plan
/// within a score-error target; `eval scores` compares a reranker with reference scores.
#[test]
fn rerankers_get_sensitivity_and_automatic_plans() {
    let dir = Scratch::new("rerank-auto");
    let model = fixture("xlm-roberta-reranker");
    let inspect: Value = serde_json::from_str(&ok(&[
        "inspect",
        "--model",
        &model,
        "--quant",
        "w8a8-b32-pb,int4-g32",
        "--texts",
        "6",
        "--json",
    ]))
    .unwrap();
    let layers = inspect["layers"].as_array().unwrap();
    assert!(layers.iter().any(|l| l["name"] == "classifier.out_proj"), "the head is measured too");
    assert_eq!(inspect["float"]["quality"]["metric"], "scores");
    let out = dir.join("auto");
    let report =
        ok(&["quantize", "--model", &model, "--auto", "--target", "score-error<=0.01", "--texts", "6", "--out", &out]);
    assert!(report.contains("plan saved") && report.contains("score error"), "{report}");
    ok(&["rerank", "--model", &out, "--query", "q", "a document"]);
    let err = fails(&["quantize", "--model", &model, "--auto", "--target", "cosine>=0.99", "--out", &dir.join("x")]);
    assert!(err.contains("rerankers score-error<=E"), "{err}");
    // eval scores: transformers' fp32 scores of the fixture's pairs, in fp32 and in the default int8 plan.
    let reference = reference("xlm-roberta-reranker");
    let lines: Vec<String> = reference["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(reference["scores"].as_array().unwrap())
        .map(|(p, s)| serde_json::json!({"query": p[0], "document": p[1], "score": s}).to_string())
        .collect();
    let file = dir.join("scores.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    for (quant, bound) in [("fp32", 1e-4), ("int8", 1e-2)] {
        let v: Value = serde_json::from_str(&ok(&[
            "eval",
            "scores",
            "--model",
            &model,
            "--quant",
            quant,
            "--reference",
            &file,
            "--json",
        ]))
        .unwrap();
        assert!(v["max_error"].as_f64().unwrap() <= bound, "{quant}: {v}");
        assert_eq!(v["queries_ranked"], v["queries_ranked_alike"], "{quant}: {v}");
        assert!(v["queries_ranked"].as_u64().unwrap() >= 1, "{v}");
    }
}

/// The decoder fixtures the Llama body reads.
const DECODERS: [&str; 7] = ["llama", "qwen2", "qwen3", "mistral", "phi3", "gemma2", "gemma3"];

/// The GGUF file `scripts/setup-tests` writes of decoder fixture `name`.
fn fixture_gguf(name: &str) -> String {
    let path = workspace().join("models/cache/fixture-gguf").join(format!("{name}.gguf"));
    assert!(path.exists(), "{} is missing: run scripts/setup-tests", path.display());
    path.display().to_string()
}

/// From its folder and from its GGUF file, `runner generate --temperature 0 --ignore-eos` gives transformers' 12
/// greedy tokens (which run on past the end-of-sequence token) for every prompt, and `runner eval perplexity` in
/// one window its perplexity, in fp32; the int8 preset's perplexity is within 2% of fp32's.
#[test]
fn generate_and_perplexity_match_transformers_on_every_decoder() {
    let dir = Scratch::new("arch-decoders");
    for (name, model) in DECODERS.iter().flat_map(|&n| [(n, fixture(n)), (n, fixture_gguf(n))]) {
        let reference = reference(name);
        for prompt in reference["prompts"].as_array().unwrap() {
            let text = prompt["text"].as_str().unwrap();
            let out = ok(&[
                "generate",
                "--model",
                &model,
                "--quant",
                "fp32",
                "--prompt",
                text,
                "--temperature",
                "0",
                "--ignore-eos",
                "--max-tokens",
                "12",
                "--json",
            ]);
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["tokens"], prompt["greedy"], "{model}: {text:?}");
        }
        let file = dir.join(&format!("{name}.txt"));
        std::fs::write(&file, reference["perplexity"]["text"].as_str().unwrap()).unwrap();
        let tokens = reference["perplexity"]["n_tokens"].as_u64().unwrap().to_string();
        let ppl = |quant: &str| {
            let out = ok(&[
                "eval",
                "perplexity",
                "--model",
                &model,
                "--quant",
                quant,
                "--text",
                &file,
                "--window",
                &tokens,
                "--json",
            ]);
            serde_json::from_str::<Value>(&out).unwrap()["perplexity"].as_f64().unwrap()
        };
        let (fp32, int8) = (ppl("fp32"), ppl("int8"));
        let want = reference["perplexity"]["ppl"].as_f64().unwrap();
        assert!((fp32 - want).abs() <= 1e-4 * want, "{name}: perplexity {fp32} vs {want}");
        assert!((int8 - fp32).abs() <= 0.02 * fp32, "{name}: int8 perplexity {int8} vs fp32 {fp32}");
        eprintln!(
            "{name}: perplexity fp32 {fp32:.4} (transformers {want:.4}), int8 {int8:.4}, int4 {:.4}, int2 {:.4}",
            ppl("int4"),
            ppl("int2")
        );
    }
}

/// `bench`, `quantize` (then `generate` from the checkpoint), `inspect` and `quantize --auto` on every decoder.
#[test]
fn bench_quantize_inspect_and_auto_plans_take_every_decoder() {
    let dir = Scratch::new("arch-decoder-tools");
    for name in DECODERS {
        let model = fixture(name);
        let bench = ok(&[
            "bench",
            "--model",
            &model,
            "--quant",
            "int8",
            "--prompt-tokens",
            "16",
            "--decode-tokens",
            "4",
            "--iters",
            "1",
            "--json",
        ]);
        assert!(serde_json::from_str::<Value>(&bench).is_ok(), "{name}: {bench}");
        let out = dir.join(&format!("{name}-int8"));
        ok(&["quantize", "--model", &model, "--quant", "int8", "--out", &out]);
        let greedy = |model: &str| {
            let v: Value = serde_json::from_str(&ok(&[
                "generate",
                "--model",
                model,
                "--prompt",
                "hello",
                "--temperature",
                "0",
                "--max-tokens",
                "4",
                "--json",
            ]))
            .unwrap();
            v["tokens"].clone()
        };
        assert_eq!(greedy(&out), greedy(&model), "{name}: the checkpoint runs as quantizing on load");
        let inspect: Value = serde_json::from_str(&ok(&[
            "inspect",
            "--model",
            &model,
            "--quant",
            "int8-g16",
            "--max-tokens",
            "32",
            "--json",
        ]))
        .unwrap();
        assert!(!inspect["layers"].as_array().unwrap().is_empty(), "{name}");
        let auto = dir.join(&format!("{name}-auto"));
        let report = ok(&[
            "quantize",
            "--model",
            &model,
            "--auto",
            "--target",
            "ppl<=+5%",
            "--max-tokens",
            "32",
            "--out",
            &auto,
        ]);
        assert!(report.contains("plan saved"), "{name}: {report}");
    }
}
