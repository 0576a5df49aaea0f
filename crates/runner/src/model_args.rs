//! The options every model command shares: which model, which quantization, how many threads.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use swap::{Embedder, Generator, ModelFiles, ModelKind, Plan, Reranker, ResolveOptions, Task, SENTENCE_BERT_FILES};

/// Default embedding model: the folder `models/fetch minilm` fills.
pub const DEFAULT_MODEL: &str = "models/cache/all-MiniLM-L6-v2";
/// Default generation model: the file `models/fetch smollm2` fills.
pub const DEFAULT_LLM: &str = "models/cache/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The files of a Llama model folder on the Hub.
const LLAMA_FILES: ModelFiles<'static> = ModelFiles {
    required: &["config.json", "tokenizer.json", "model.safetensors"],
    optional: &["tokenizer_config.json", "generation_config.json"],
};

/// A `--model` argument resolved to a local path and the task of the model there: a GGUF file generates; a folder
/// does what its `config.json` says (see [`ModelKind::of_config`]: an unsupported architecture is an error here).
pub fn resolve(model: &str) -> Result<(PathBuf, Task)> {
    let path = Path::new(model);
    if path.is_file() {
        return Ok((path.to_path_buf(), Task::Generation));
    }
    if path.is_dir() {
        return Ok((path.to_path_buf(), ModelKind::of_folder(path)?.0.task));
    }
    // A Hub id: fetch the files every encoder needs, then look.
    let dir = swap::resolve_model(model, &SENTENCE_BERT_FILES, &ResolveOptions::default())?;
    let task = ModelKind::of_folder(&dir)?.0.task;
    if task == Task::Generation {
        return Ok((swap::resolve_model(model, &LLAMA_FILES, &ResolveOptions::default())?, task));
    }
    Ok((dir, task))
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
    /// The plan `--quant` (read as a preset of the model at `path`, which does `task`) or `--plan` names, or `None`
    /// when neither is given.
    pub fn plan_for(&self, path: &Path, task: Task) -> Result<Option<Plan>> {
        match (&self.quant, &self.plan) {
            (Some(name), _) if task == Task::Generation => Ok(Some(Plan::llama_preset(name)?)),
            (Some(name), _) => Ok(Some(encoder_preset(name, ModelKind::of_folder(path)?.0)?)),
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
        let (path, task) = resolve(&self.model)?;
        if task != Task::Generation {
            bail!("{} does {task}, not text generation (that takes a GGUF file or a Llama folder)", self.model);
        }
        Generator::open(&path, self.quant.plan_for(&path, Task::Generation)?)
    }
}

/// `--model` (an encoder folder or Hub id, or for `quantize` also a Llama) and the quantization options.
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
        if self.quant.quant.is_none() && self.quant.plan.is_none() {
            return Ok(None);
        }
        self.quant.plan_for(&self.dir()?, Task::Embedding)
    }

    /// Loads the model with the chosen plan (int8 when none is given and the checkpoint is not pre-quantized).
    pub fn load(&self) -> Result<Embedder> {
        self.load_with(self.plan()?)
    }

    /// Loads the model with `plan`.
    pub fn load_with(&self, plan: Option<Plan>) -> Result<Embedder> {
        Embedder::open(&self.dir()?, plan)
    }

    /// Loads the model as a reranker with the chosen plan.
    pub fn load_reranker(&self) -> Result<Reranker> {
        Reranker::open(&self.dir()?, self.plan()?)
    }

    /// The model's local folder (a Hub id is resolved through the hf-hub cache, downloading what is missing
    /// unless `HF_HUB_OFFLINE=1`).
    pub fn dir(&self) -> Result<PathBuf> {
        swap::resolve_model(&self.model, &SENTENCE_BERT_FILES, &ResolveOptions::default())
    }
}

/// The plan a `--quant` name stands for on an encoder of `kind`: `int8` (its architecture's default plan, a
/// reranker's head in f32) or one scheme for every layer (`fp32`, `w8a8-row`, ...).
pub fn encoder_preset(name: &str, kind: ModelKind) -> Result<Plan> {
    match name.trim().to_ascii_lowercase().as_str() {
        "int8" => Ok(kind.default_plan()),
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
