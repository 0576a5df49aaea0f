//! What the real-model tests share: where the models are, scratch folders.

#![allow(dead_code)] // each test file uses a part

use std::path::{Path, PathBuf};

/// all-MiniLM-L6-v2 as `models/fetch minilm` leaves it; a missing model fails the test (CI fetches it first).
pub fn minilm_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/cache/all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run models/fetch minilm", dir.display());
    dir
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
