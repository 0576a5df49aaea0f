//! The options every model command shares: which model, which quantization, how many threads.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use swap::{Embedder, Plan, ResolveOptions, SENTENCE_BERT_FILES};

/// Default model: the folder `models/fetch minilm` fills.
pub const DEFAULT_MODEL: &str = "models/cache/all-MiniLM-L6-v2";

/// `--model`, `--quant` / `--plan` and `--threads`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model folder in Hugging Face layout or a Hub id (`owner/name[@revision]`).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Quantization: `fp32`, `int8` (the default BERT plan) or any scheme name (`w8a8-b64`, `int4-g32`, ...).
    /// A pre-quantized checkpoint runs as saved unless this is given.
    #[arg(long, conflicts_with = "plan")]
    pub quant: Option<String>,
    /// A plan file (TOML or JSON) giving each layer its scheme.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Threads for the kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ModelArgs {
    /// Applies `--threads`; call before any work runs.
    pub fn apply_threads(&self) -> Result<()> {
        apply_threads(self.threads)
    }

    /// The plan `--quant` or `--plan` names, or `None` when neither is given.
    pub fn plan(&self) -> Result<Option<Plan>> {
        match (&self.quant, &self.plan) {
            (Some(name), _) => Ok(Some(plan_for(name)?)),
            (None, Some(path)) => Ok(Some(Plan::from_file(path)?)),
            (None, None) => Ok(None),
        }
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
