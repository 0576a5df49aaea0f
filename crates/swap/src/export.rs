//! Writing pre-quantized checkpoints ([`crate::checkpoint`] is the format): a float model is read through a
//! recording [`QuantLoader`], quantized per a plan, and its tensors, `config.json` (with the
//! `quantization_config`) and side files written to a new folder.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value;

use crate::arch::ModelKind;
use crate::checkpoint::{write_tensors, QuantizationConfig, FORMAT_VERSION, QUANT_METHOD, WEIGHTS_FILE};
use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::gguf_weights::{metadata_str, GgufWeights};
use crate::loader::{LayerReport, QuantLoader};
use crate::models::llama::{LlamaConfig, LlamaModel};
use crate::plan::Plan;

/// Sizes of a checkpoint written by [`quantize_encoder`] or [`quantize_llama`].
#[derive(Debug, Clone)]
pub struct SaveReport {
    /// What each Linear layer became.
    pub layers: Vec<LayerReport>,
    /// Bytes of the source weights file.
    pub source_bytes: u64,
    /// Bytes of the written weights file.
    pub saved_bytes: u64,
}

/// Quantizes the float encoder in `src` (an embedder or a reranker of any registered architecture) per `plan` and
/// writes a pre-quantized checkpoint to `out`, calling `progress(done, total, layer)` as each Linear layer is read.
pub fn quantize_encoder(
    src: &Path,
    plan: Plan,
    out: &Path,
    progress: impl Fn(usize, usize, &str) + Send + Sync + 'static,
) -> Result<SaveReport> {
    let (config_text, config_json) = float_config(src)?;
    let kind = ModelKind::of_config(&config_json)?;
    let weights = src.join(WEIGHTS_FILE);
    let loader = QuantLoader::from_safetensors(&[&weights], plan.clone())?
        .recording()
        .with_progress(counted(kind.linear_layers(&config_text)?, progress));
    let tokenizer = crate::encoder_folder::read_tokenizer(src)?;
    let loader = crate::encoder_folder::calibrated(src, &kind, &config_text, &config_json, &tokenizer, loader)?;
    kind.build(&config_text, &loader)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    copy_side_files(src, out)?;
    write_checkpoint(&loader, plan, config_json, out, std::fs::metadata(&weights)?.len())
}

/// Quantizes a float Llama model per `plan` and writes a pre-quantized checkpoint folder to `out`: `src` is a GGUF
/// file (the folder then gets an HF `config.json`, a `tokenizer.json` and a `tokenizer_config.json` with the chat
/// template, all from the file's metadata) or a folder in HF layout. `progress(done, total, layer)` is called as
/// each Linear layer is read.
pub fn quantize_llama(
    src: &Path,
    plan: Plan,
    out: &Path,
    progress: impl Fn(usize, usize, &str) + Send + Sync + 'static,
) -> Result<SaveReport> {
    if src.is_file() {
        let weights = GgufWeights::open(src)?;
        let metadata = weights.metadata().clone();
        let config = LlamaConfig::of_gguf(&weights)?;
        if config.sandwich_norms {
            bail!("writing a checkpoint of a Gemma GGUF file is not supported (llama.cpp stores its norms as 1 + w)");
        }
        let total = config.linear_layers().len();
        let loader = QuantLoader::from_gguf(weights, plan.clone()).recording().with_progress(counted(total, progress));
        LlamaModel::load(config.clone(), &loader)?;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        write_gguf_tokenizer(&metadata, out)?;
        return write_checkpoint(&loader, plan, config.to_hf_json(), out, std::fs::metadata(src)?.len());
    }
    let (config_text, config_json) = float_config(src)?;
    let config = LlamaConfig::from_hf_json(&config_text)?;
    let weights = src.join(WEIGHTS_FILE);
    let loader = config.tie_head(
        QuantLoader::from_safetensors(&[&weights], plan.clone())?
            .recording()
            .with_progress(counted(config.linear_layers().len(), progress)),
    );
    LlamaModel::load(config, &loader).context("the weights do not match config.json")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    copy_side_files(src, out)?;
    write_checkpoint(&loader, plan, config_json, out, std::fs::metadata(&weights)?.len())
}

/// The `config.json` of the float model folder `src`, as text and parsed; a folder already quantized (by this
/// crate or optimum-quanto) is refused.
fn float_config(src: &Path) -> Result<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(src.join("config.json"))
        .with_context(|| format!("{} has no readable config.json", src.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).context("config.json is not JSON")?;
    if json.get("quantization_config").is_some() || src.join(crate::quanto::QMAP_FILE).exists() {
        bail!("{} is already quantized; quantize the float model instead", src.display());
    }
    Ok((text, json))
}

/// A progress callback over `total` layers for [`QuantLoader::with_progress`].
fn counted(
    total: usize,
    progress: impl Fn(usize, usize, &str) + Send + Sync + 'static,
) -> impl Fn(&str) + Send + Sync + 'static {
    let done = std::sync::atomic::AtomicUsize::new(0);
    move |name| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        progress(n, total, name);
    }
}

/// Writes the tensors `loader` recorded, and `config` with the `quantization_config`, into `out`.
fn write_checkpoint(
    loader: &QuantLoader,
    plan: Plan,
    mut config: serde_json::Value,
    out: &Path,
    source_bytes: u64,
) -> Result<SaveReport> {
    let recorded = loader.take_recorded();
    let layers = loader.layer_schemes().into_iter().map(|(name, scheme)| (name, scheme.to_string())).collect();
    write_tensors(&recorded, &out.join(WEIGHTS_FILE))?;
    let qc = QuantizationConfig { quant_method: QUANT_METHOD.into(), format_version: FORMAT_VERSION, plan, layers };
    config["quantization_config"] = serde_json::to_value(&qc)?;
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config)? + "\n")
        .with_context(|| format!("cannot write {}", out.join("config.json").display()))?;
    Ok(SaveReport {
        layers: loader.report(),
        source_bytes,
        saved_bytes: std::fs::metadata(out.join(WEIGHTS_FILE))?.len(),
    })
}

/// `tokenizer.json` and `tokenizer_config.json` (chat template, BOS and EOS tokens) from GGUF metadata.
fn write_gguf_tokenizer(metadata: &std::collections::HashMap<String, Value>, out: &Path) -> Result<()> {
    let tokenizer = tokenizer_from_gguf(metadata)?;
    tokenizer
        .save(out.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.join("tokenizer.json").display()))?;
    let token = |key: &str| metadata.get(key).and_then(|v| v.to_u32().ok()).and_then(|id| tokenizer.id_to_token(id));
    let mut config = serde_json::json!({
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
    });
    if let Ok(template) = metadata_str(metadata, "tokenizer.chat_template") {
        config["chat_template"] = template.into();
    }
    std::fs::write(out.join("tokenizer_config.json"), serde_json::to_string_pretty(&config)? + "\n")
        .with_context(|| format!("cannot write {}", out.join("tokenizer_config.json").display()))
}

/// Copies what sits beside the weights (tokenizer, sentence-transformers files and module folders), leaving out
/// weight files and `config.json` (written separately).
fn copy_side_files(src: &Path, out: &Path) -> Result<()> {
    const WEIGHT_EXTENSIONS: [&str; 8] = ["safetensors", "bin", "h5", "msgpack", "onnx", "ot", "pt", "pth"];
    for entry in std::fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let is_weights = path.extension().and_then(|e| e.to_str()).is_some_and(|e| WEIGHT_EXTENSIONS.contains(&e))
            || name.ends_with(".index.json");
        if path.is_file() && !is_weights && name != "config.json" {
            std::fs::copy(&path, out.join(&name)).with_context(|| format!("cannot copy {}", path.display()))?;
        } else if path.is_dir() && is_module_dir(&name) {
            copy_dir(&path, &out.join(&name))?;
        }
    }
    Ok(())
}

/// sentence-transformers module folders are named `<index>_<Module>` (`1_Pooling`, `2_Normalize`).
fn is_module_dir(name: &str) -> bool {
    name.split_once('_')
        .is_some_and(|(i, rest)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty())
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::copy(&path, dst.join(path.file_name().context("a file name")?))?;
        }
    }
    Ok(())
}
