//! `runner generate`, `eval perplexity`, `bench` and `quantize` on the real SmolLM2-135M-Instruct GGUF file
//! (`models/fetch smollm2`; CI fetches it first).

mod common;

use common::{fails, minilm, ok, smollm2, Scratch};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn tokens(v: &serde_json::Value) -> Vec<u64> {
    v["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect()
}

#[test]
fn greedy_fp32_generation_gives_the_reference_tokens() {
    let reference = json(include_str!("../../../tests/fixtures/smollm2_fp32_reference.json"));
    let case = &reference["prompts"][0];
    let expected: Vec<u64> = case["greedy_ids"].as_array().unwrap()[..8].iter().map(|t| t.as_u64().unwrap()).collect();
    let model = smollm2();
    let prompt = case["prompt"].as_str().unwrap();
    let args = ["generate", "--model", &model, "--quant", "fp32", "--temperature", "0", "--max-tokens", "8"];
    let v = json(&ok(&[&args[..], &["--prompt", prompt, "--json"]].concat()));
    assert_eq!(tokens(&v), expected);
    assert_eq!((v["stop"].as_str(), v["prompt_tokens"].as_u64()), (Some("max_tokens"), Some(5)));
    assert!(v["decode_tokens_per_s"].as_f64().unwrap() > 0.0 && v["seed"].is_null());
    // Streamed text is the JSON text, then a newline; the speeds go to standard error.
    assert_eq!(ok(&[&args[..], &["--prompt", prompt]].concat()), format!("{}\n", v["text"].as_str().unwrap()));
}

#[test]
fn a_seed_reproduces_sampled_text_and_chat_prompts_work() {
    let model = smollm2();
    let run = |seed: &str| {
        json(&ok(&[
            "generate",
            "--model",
            &model,
            "--quant",
            "int4",
            "--chat",
            "--prompt",
            "Name a colour.",
            "--temperature",
            "0.9",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--max-tokens",
            "12",
            "--json",
        ]))
    };
    let (a, b) = (run("5"), run("5"));
    assert_eq!(tokens(&a), tokens(&b));
    assert_eq!(a["seed"].as_u64(), Some(5));
    assert!(a["prompt_tokens"].as_u64().unwrap() > 20, "the chat template wraps the prompt: {a}");
    let none =
        json(&ok(&["generate", "--model", &model, "--quant", "int4", "--prompt", "Hi", "--max-tokens", "0", "--json"]));
    assert!(tokens(&none).is_empty());
}

#[test]
fn perplexity_bench_and_checkpoints() {
    let model = smollm2();
    let text = format!("{}/tests/fixtures/perplexity_text.txt", common::workspace().display());
    let v = json(&ok(&[
        "eval",
        "perplexity",
        "--model",
        &model,
        "--quant",
        "int8",
        "--text",
        &text,
        "--window",
        "128",
        "--max-tokens",
        "256",
        "--json",
    ]));
    assert_eq!((v["tokens"].as_u64(), v["window"].as_u64()), (Some(256), Some(128)));
    let ppl = v["perplexity"].as_f64().unwrap();
    assert!(ppl > 1.0 && ppl < 1000.0, "{ppl}");

    let v = json(&ok(&[
        "bench",
        "--model",
        &model,
        "--quant",
        "fp32,int4",
        "--prompt-tokens",
        "16",
        "--decode-tokens",
        "4",
        "--iters",
        "1",
        "--json",
    ]));
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["name"].as_str().unwrap()).collect::<Vec<_>>(), ["fp32", "int4"]);
    assert_eq!(rows[0]["decode_vs_fp32"].as_f64(), Some(1.0));
    assert!(rows[1]["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["linear_bytes"].as_u64().unwrap() * 4 < rows[0]["linear_bytes"].as_u64().unwrap());

    let dir = Scratch::new("smollm2-int4");
    let out = dir.join("int4");
    ok(&["quantize", "--model", &model, "--quant", "int4", "--out", &out]);
    let greedy = |model: &str, quant: &[&str]| {
        let args = ["generate", "--model", model, "--prompt", "The capital of France is", "--temperature", "0"];
        tokens(&json(&ok(&[&args[..], quant, &["--max-tokens", "6", "--json"]].concat())))
    };
    assert_eq!(greedy(&out, &[]), greedy(&model, &["--quant", "int4"]));
}

#[test]
fn bad_generation_requests_get_clear_errors() {
    let model = smollm2();
    let generate = ["generate", "--model", &model, "--quant", "int4"];
    assert!(fails(&[&generate[..], &["--prompt", "  "]].concat()).contains("the prompt is empty"));
    assert!(fails(&[&generate[..], &["--prompt", "x", "--temperature=-1"]].concat()).contains("temperature"));
    assert!(fails(&[&generate[..], &["--prompt", "x", "--top-p", "1.5"]].concat()).contains("top-p"));
    assert!(fails(&["generate", "--model", &minilm(), "--prompt", "x"]).contains("not text generation"));
    let dir = Scratch::new("bad-gguf");
    let truncated = dir.join("truncated.gguf");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(fails(&["generate", "--model", &truncated, "--prompt", "x"]).contains("GGUF"));
    let text = dir.join("empty.txt");
    std::fs::write(&text, "").unwrap();
    assert!(fails(&["eval", "perplexity", "--model", &model, "--text", &text]).contains("at least 2 tokens"));
}
