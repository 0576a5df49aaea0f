//! What the real-model tests share: where the models are, scratch folders.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};

/// all-MiniLM-L6-v2 as `models/fetch minilm` leaves it; a missing model fails the test (CI fetches it first).
pub fn minilm_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/cache/all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run models/fetch minilm", dir.display());
    dir
}

/// all-mpnet-base-v2 as `models/fetch mpnet` leaves it; a missing model fails the test (CI fetches it first).
pub fn mpnet_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/cache/all-mpnet-base-v2");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run models/fetch mpnet", dir.display());
    dir
}

/// The texts and embeddings of a reference file of JSON lines (`{"text", "embedding"}`).
pub fn reference_embeddings(jsonl: &str) -> (Vec<String>, Vec<Vec<f32>>) {
    let mut texts = Vec::new();
    let mut embeddings = Vec::new();
    for line in jsonl.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        texts.push(row["text"].as_str().unwrap().to_string());
        embeddings.push(row["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect());
    }
    (texts, embeddings)
}

/// The embeddings of `texts`, in batches of 32.
pub fn embed_all(embedder: &swap::Embedder, texts: &[String]) -> Vec<Vec<f32>> {
    texts
        .chunks(32)
        .flat_map(|chunk| embedder.embed(&chunk.iter().map(String::as_str).collect::<Vec<_>>()).unwrap())
        .collect()
}

/// An empty scratch folder under the system temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh folder named after `name` and the process.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qinfer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The texts of the MiniLM reference corpus.
pub fn corpus() -> Vec<String> {
    include_str!("../fixtures/minilm_corpus.txt").lines().filter(|l| !l.trim().is_empty()).map(String::from).collect()
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF) as `models/fetch smollm2` leaves it; a missing model fails the test.
pub fn smollm2_gguf() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/cache/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(path.exists(), "{} is missing: run models/fetch smollm2", path.display());
    path
}
