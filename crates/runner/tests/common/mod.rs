//! What the `runner` CLI tests share: running the binary, the real models, scratch folders.

#![allow(dead_code)] // each test file uses a part

use std::path::PathBuf;
use std::process::{Command, Output};

/// The workspace root (where `models/` is).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// SmolLM2-135M-Instruct's GGUF file as `models/fetch smollm2` leaves it.
pub fn smollm2() -> String {
    let file = workspace().join("models/cache/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(file.exists(), "{} is missing: run models/fetch smollm2", file.display());
    file.display().to_string()
}

/// all-MiniLM-L6-v2 as `models/fetch minilm` leaves it.
pub fn minilm() -> String {
    let dir = workspace().join("models/cache/all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run models/fetch minilm", dir.display());
    dir.display().to_string()
}

/// Runs the binary in the workspace root.
pub fn runner(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runner")).args(args).current_dir(workspace()).output().unwrap()
}

/// Runs the binary, which must succeed; its standard output.
pub fn ok(args: &[&str]) -> String {
    let out = runner(args);
    assert!(out.status.success(), "runner {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the binary, which must fail cleanly (exit 1, `error: ...`, no panic); its standard error.
pub fn fails(args: &[&str]) -> String {
    let out = runner(args);
    assert_eq!(out.status.code(), Some(1), "runner {args:?} should fail cleanly");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: ") && !stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The embeddings of `runner embed` JSON lines, checking their indices.
pub fn embeddings(jsonl: &str) -> Vec<Vec<f32>> {
    jsonl
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["index"], i);
            v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect()
}

/// An empty scratch folder, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh folder named after `tag` and the process.
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("runner-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    /// A path inside the folder.
    pub fn join(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
