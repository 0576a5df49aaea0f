//! The baselines `runner bench` compares against: candle-transformers' fp32 `BertModel` with the same pooling for
//! embedders, and its `quantized_llama` on the same GGUF file for Llama.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use candle_transformers::models::quantized_llama::ModelWeights;

/// candle-transformers' BERT in f32, pooled by mean and L2-normalised like the sentence-transformers pipeline.
pub struct CandleBert {
    model: BertModel,
    device: Device,
    bytes: u64,
}

impl CandleBert {
    /// Loads the float model in `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_text = std::fs::read_to_string(dir.join("config.json")).context("config.json")?;
        let config: Config = serde_json::from_str(&config_text).context("config.json for candle-transformers")?;
        let weights = dir.join(swap::checkpoint::WEIGHTS_FILE);
        // SAFETY: the model file is not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
        let model = BertModel::load(vb, &config).context("candle-transformers cannot load this model")?;
        Ok(Self { model, device: device.clone(), bytes: std::fs::metadata(&weights)?.len() })
    }

    /// Bytes of the f32 weights.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Embeds `batch x seq` token ids (all real tokens), returning the pooled embeddings in host memory (so that
    /// on a GPU the time includes the work, not just its launch).
    pub fn embed(&self, ids: &[u32], batch: usize, seq: usize) -> Result<Vec<Vec<f32>>> {
        let ids = Tensor::from_slice(ids, (batch, seq), &self.device)?;
        let token_types = ids.zeros_like()?;
        let mask = ids.ones_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
        let pooled = hidden.mean(1)?;
        Ok(pooled.broadcast_div(&pooled.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?.to_vec2()?)
    }
}

/// candle-transformers' `quantized_llama` on a GGUF file's own blocks, on one device.
pub struct CandleQuantizedLlama {
    model: ModelWeights,
    device: Device,
    bytes: u64,
}

impl CandleQuantizedLlama {
    /// Loads the GGUF file at `path` onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let content = candle_core::quantized::gguf_file::Content::read(&mut file)
            .map_err(|e| e.with_path(path))
            .context("candle cannot read this GGUF file")?;
        let bytes = content
            .tensor_infos
            .values()
            .map(|t| (t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size()) as u64)
            .sum();
        let model =
            ModelWeights::from_gguf(content, &mut file, device).context("candle's quantized_llama cannot load it")?;
        Ok(Self { model, device: device.clone(), bytes })
    }

    /// Bytes of the file's tensors.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The logits after `tokens`, which follow `past` tokens already run (0 starts a new sequence and drops the
    /// cache), read back to host memory.
    pub fn forward(&mut self, tokens: &[u32], past: usize) -> Result<Vec<f32>> {
        let x = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        Ok(self.model.forward(&x, past)?.squeeze(0)?.to_dtype(DType::F32)?.to_vec1()?)
    }
}
