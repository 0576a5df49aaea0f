//! The options every model command shares: which model, which quantization, how many threads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use swap::{Embedder, Generator, ModelFiles, Plan, ResolveOptions, SENTENCE_BERT_FILES};

/// Default embedding model: the folder `models/fetch minilm` fills.
pub const DEFAULT_MODEL: &str = "models/cache/all-MiniLM-L6-v2";
/// Default generation model: the file `models/fetch smollm2` fills.
pub const DEFAULT_LLM: &str = "models/cache/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The files of a Llama model folder on the Hub.
const LLAMA_FILES: ModelFiles<'static> = ModelFiles {
    required: &["config.json", "tokenizer.json", "model.safetensors"],
    optional: &["tokenizer_config.json", "generation_config.json"],
};

/// The two model families the runner drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT sentence embeddings.
    Bert,
    /// Llama text generation.
    Llama,
}

/// A `--model` argument resolved to a local path and its family: a GGUF file is a Llama; a folder is a Llama when
/// its `config.json` says `"model_type": "llama"`, else a BERT.
pub fn resolve(model: &str) -> Result<(PathBuf, Family)> {
    let path = Path::new(model);
    if path.is_file() {
        return Ok((path.to_path_buf(), Family::Llama));
    }
    let is_llama = |dir: &Path| {
        std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|c| c["model_type"] == "llama")
    };
    if path.is_dir() {
        let family = if is_llama(path) { Family::Llama } else { Family::Bert };
        return Ok((path.to_path_buf(), family));
    }
    // A Hub id: fetch the files both families need, then look.
    let dir = swap::resolve_model(model, &SENTENCE_BERT_FILES, &ResolveOptions::default())?;
    if is_llama(&dir) {
        return Ok((swap::resolve_model(model, &LLAMA_FILES, &ResolveOptions::default())?, Family::Llama));
    }
    Ok((dir, Family::Bert))
}

/// `--quant` / `--plan` and `--threads`, shared by every model command.
#[derive(Args, Debug, Clone)]
pub struct QuantArgs {
    /// Quantization preset or scheme: `fp32`, `int8` (BERT: the default BERT plan; Llama: int8 in groups of 16),
    /// for Llama also `int4` and `int2` (with an int8 `lm_head`), or any scheme name (`w8a8-b64`, `int4-g32`,
    /// ...). A pre-quantized checkpoint runs as saved unless this is given; otherwise the default is `int8`.
    #[arg(long, conflicts_with = "plan")]
    pub quant: Option<String>,
    /// A plan file (TOML or JSON) giving each layer its scheme.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Threads for the kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl QuantArgs {
    /// The plan `--quant` (read as a preset of `family`) or `--plan` names, or `None` when neither is given.
    pub fn plan_for(&self, family: Family) -> Result<Option<Plan>> {
        match (&self.quant, &self.plan) {
            (Some(name), _) if family == Family::Llama => Ok(Some(Plan::llama_preset(name)?)),
            (Some(name), _) => Ok(Some(plan_for(name)?)),
            (None, Some(path)) => Ok(Some(Plan::from_file(path)?)),
            (None, None) => Ok(None),
        }
    }
}

/// `--model` (a Llama: GGUF file, folder or Hub id) and the quantization options of the generation commands.
#[derive(Args, Debug, Clone)]
pub struct LlmArgs {
    /// A GGUF file, a Llama folder in Hugging Face layout (float or pre-quantized), or a Hub id.
    #[arg(long, default_value = DEFAULT_LLM)]
    pub model: String,
    #[command(flatten)]
    pub quant: QuantArgs,
}

impl LlmArgs {
    /// Applies `--threads`, then loads the model with the chosen plan.
    pub fn load(&self) -> Result<Generator> {
        apply_threads(self.quant.threads)?;
        let (path, family) = resolve(&self.model)?;
        if family != Family::Llama {
            bail!(
                "{} is not a Llama model (a GGUF file or a folder whose config.json has model_type llama)",
                self.model
            );
        }
        Generator::open(&path, self.quant.plan_for(Family::Llama)?)
    }
}

/// `--model` (a BERT folder or Hub id, or for `quantize` also a Llama) and the quantization options.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model folder in Hugging Face layout or a Hub id (`owner/name[@revision]`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    #[command(flatten)]
    pub quant: QuantArgs,
}

impl ModelArgs {
    /// Applies `--threads`; call before any work runs.
    pub fn apply_threads(&self) -> Result<()> {
        apply_threads(self.quant.threads)
    }

    /// The plan `--quant` or `--plan` names, or `None` when neither is given.
    pub fn plan(&self) -> Result<Option<Plan>> {
        self.quant.plan_for(Family::Bert)
    }

    /// Loads the model with the chosen plan (int8 when none is given and the checkpoint is not pre-quantized).
    pub fn load(&self) -> Result<Embedder> {
        self.load_with(self.plan()?)
    }

    /// Loads the model with `plan`.
    pub fn load_with(&self, plan: Option<Plan>) -> Result<Embedder> {
        Embedder::open(&self.dir()?, plan)
    }

    /// The model's local folder (a Hub id is resolved through the hf-hub cache, downloading what is missing
    /// unless `HF_HUB_OFFLINE=1`).
    pub fn dir(&self) -> Result<PathBuf> {
        swap::resolve_model(&self.model, &SENTENCE_BERT_FILES, &ResolveOptions::default())
    }
}

/// The plan a `--quant` name stands for: `fp32`, `int8` (the default BERT plan) or one scheme for every layer.
pub fn plan_for(name: &str) -> Result<Plan> {
    match name.trim().to_ascii_lowercase().as_str() {
        "int8" => Ok(Plan::bert_int8()),
        _ => Ok(Plan::uniform(name.parse()?)),
    }
}

/// Sets the thread count of our kernels and of candle's own CPU ops.
pub fn apply_threads(threads: Option<usize>) -> Result<()> {
    let Some(n) = threads else { return Ok(()) };
    if n == 0 {
        bail!("--threads must be at least 1");
    }
    qlayers::threads::set_num_threads(n);
    // candle's CPU matmul reads the same variable as rayon, once, when it first runs.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    Ok(())
}
