//! The `runner` binary end to end on the real all-MiniLM-L6-v2 (`models/fetch minilm`; CI fetches it first).

mod common;

use std::path::PathBuf;

use common::{embeddings, fails, minilm, ok, workspace, Scratch};

#[test]
fn embed_writes_one_normalised_line_per_text() {
    let model = minilm();
    let out = ok(&["embed", "--model", &model, "--quant", "int8", "A cat sits on the mat.", "Quantized BERT is fast."]);
    let rows = embeddings(&out);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.len(), 384);
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // A file input, written to a file, gives the same embeddings for the same texts.
    let dir = Scratch::new("embed");
    std::fs::write(dir.join("in.txt"), "A cat sits on the mat.\nQuantized BERT is fast.\n").unwrap();
    ok(&["embed", "--model", &model, "--input", &dir.join("in.txt"), "--output", &dir.join("out.jsonl")]);
    assert_eq!(embeddings(&std::fs::read_to_string(dir.join("out.jsonl")).unwrap()), rows);
}

/// `--device candle-cpu` (the GPU path, on the CPU) embeds as the CPU kernels do, within int8's reach, and says on
/// standard error which of candle's paths the layers took; a GPU this build has no support for, or an unknown
/// device, is a clear error.
#[test]
fn devices_are_chosen_with_a_flag() {
    let model = minilm();
    let texts = ["A cat sits on the mat.", "Quantized BERT is fast."];
    let args = |device: &str| -> Vec<String> {
        ["embed", "--model", &model, "--device", device].iter().chain(&texts).map(|s| s.to_string()).collect()
    };
    let run = |device: &str| common::runner(&args(device).iter().map(String::as_str).collect::<Vec<_>>());
    let (cpu, candle) = (run("cpu"), run("candle-cpu"));
    assert!(cpu.status.success() && candle.status.success());
    let stderr = String::from_utf8_lossy(&candle.stderr);
    assert!(stderr.contains("device candle-cpu: 24 layers as candle f16 matmul (dequantized)"), "{stderr}");
    let (a, b) =
        (embeddings(&String::from_utf8_lossy(&cpu.stdout)), embeddings(&String::from_utf8_lossy(&candle.stdout)));
    for (a, b) in a.iter().zip(&b) {
        let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cosine > 0.999, "cosine {cosine}");
    }
    assert!(fails(&["embed", "--model", &model, "--device", "tpu", "x"]).contains("unknown device \"tpu\""));
    #[cfg(not(feature = "cuda"))]
    assert!(fails(&["embed", "--model", &model, "--device", "cuda:1", "x"]).contains("cannot open CUDA device 1"));
}

#[test]
fn quantize_then_embed_from_the_checkpoint_matches() {
    let model = minilm();
    let dir = Scratch::new("quantize");
    let ckpt = dir.join("minilm-int8");
    let report = ok(&["quantize", "--model", &model, "--quant", "int8", "--out", &ckpt]);
    assert!(report.contains("before") && report.contains("after") && report.contains("smaller"), "{report}");
    let text = "Pre-quantized checkpoints load without fp32 weights.";
    let direct = ok(&["embed", "--model", &model, "--quant", "int8", text]);
    let saved = ok(&["embed", "--model", &ckpt, text]);
    assert_eq!(embeddings(&direct), embeddings(&saved));
}

#[test]
fn eval_reports_agreement_with_the_reference() {
    let reference = workspace().join("tests/fixtures/minilm_fp32_embeddings.jsonl").display().to_string();
    let out = ok(&["eval", "--model", &minilm(), "--quant", "fp32", "--reference", &reference, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["cosine_min"].as_f64().unwrap() > 0.99999, "{v}");
    assert_eq!(v["top10_overlap"].as_f64().unwrap(), 1.0, "{v}");
}

#[test]
fn bench_times_every_scheme_in_one_run() {
    let out = ok(&[
        "bench",
        "--model",
        &minilm(),
        "--quant",
        "fp32,int8",
        "--batch",
        "2",
        "--seq",
        "16",
        "--iters",
        "1",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["candle-transformers fp32", "fp32", "int8"]);
    for r in v["results"].as_array().unwrap() {
        assert!(r["batch_ms"].as_f64().unwrap() > 0.0 && r["memory_bytes"].as_u64().unwrap() > 0, "{r}");
    }
    assert!(v["results"][2]["memory_bytes"].as_u64() < v["results"][1]["memory_bytes"].as_u64());
    // The default int8 plan keeps the token-embedding table in int8 too: MiniLM's parameters fit in 30 MB.
    assert!(v["results"][2]["memory_bytes"].as_u64().unwrap() <= 30_000_000, "{}", v["results"][2]);
}

#[test]
fn bench_times_plan_files_and_checkpoints_beside_presets() {
    let model = minilm();
    let dir = Scratch::new("bench-plan");
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, "default = \"w8a8-b64\"\n[[rules]]\npattern = \"*.value\"\nscheme = \"w8a8-b32-pb\"\n")
        .unwrap();
    let ckpt = dir.join("ckpt");
    ok(&["quantize", "--model", &model, "--quant", "int8", "--out", &ckpt]);
    fn bench<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["bench", "--model", model, "--batch", "2", "--seq", "16", "--iters", "1", "--no-baseline"];
        args.extend_from_slice(extra);
        args
    }
    let out = ok(&bench(&model, &["--quant", "fp32", "--plan", &plan, "--checkpoint", &ckpt, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fp32".to_string(), format!("plan {plan}"), format!("checkpoint {ckpt}")]);
    // The checkpoint runs as saved: the default int8 plan's memory, below the fp32 model's.
    assert!(v["results"][2]["memory_bytes"].as_u64() < v["results"][0]["memory_bytes"].as_u64());
    assert!(fails(&bench(&model, &["--plan", "/no/such/plan.toml"])).contains("reading the plan /no/such/plan.toml"));
    let gguf = workspace().join("models/cache/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let err = fails(&bench(&model, &["--checkpoint", &gguf.display().to_string()]));
    assert!(err.contains("does generation, not embedding"), "{err}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let model = minilm();
    assert!(fails(&["embed", "--model", &model, "fine", "  "]).contains("text #1 (line 2) is empty"));
    assert!(fails(&["embed", "--model", "/no/such/folder", "x"]).contains("not a folder and not a Hub id"));
    assert!(fails(&["embed", "--model", &model, "--quant", "int3", "x"]).contains("unknown scheme"));
    assert!(fails(&["bench", "--model", &model, "--seq", "1000", "--iters", "1"]).contains("exceed"));
    let dir = Scratch::new("bad");
    let copy = dir.join("model");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(PathBuf::from(&model).join(f), PathBuf::from(&copy).join(f)).unwrap();
    }
    // A corrupt weights file.
    std::fs::write(PathBuf::from(&copy).join("model.safetensors"), b"not a safetensors file").unwrap();
    assert!(fails(&["embed", "--model", &copy, "x"]).contains("not a valid safetensors file"));
    // A config that does not match the weights.
    std::fs::copy(PathBuf::from(&model).join("model.safetensors"), PathBuf::from(&copy).join("model.safetensors"))
        .unwrap();
    let config = std::fs::read_to_string(PathBuf::from(&model).join("config.json")).unwrap();
    std::fs::write(
        PathBuf::from(&copy).join("config.json"),
        config.replace("\"hidden_size\": 384", "\"hidden_size\": 768"),
    )
    .unwrap();
    let err = fails(&["embed", "--model", &copy, "x"]);
    assert!(err.contains("do not match config.json") && err.contains("shape"), "{err}");
}
