//! The options every model command shares: which model, which quantization, how many threads, which device.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use swap::{Embedder, Generator, Placement, Plan, Reranker, ResolveOptions, Task, SENTENCE_BERT_FILES};

/// Default embedding model: the folder `models/fetch minilm` fills.
pub const DEFAULT_MODEL: &str = "models/cache/all-MiniLM-L6-v2";
/// Default generation model: the file `models/fetch smollm2` fills.
pub const DEFAULT_LLM: &str = "models/cache/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

pub use swap::locate::{encoder_preset, locate};

/// `--quant` / `--plan`, `--threads` and `--device`, shared by every model command.
#[derive(Args, Debug, Clone)]
pub struct QuantArgs {
    /// Quantization preset or scheme: `fp32`, `int8` (BERT: the default BERT plan; Llama: int8 in groups of 16),
    /// for Llama also `int4` and `int2` (with an int8 `lm_head`; on a GGUF file each preset keeps the file's own
    /// Q8_0 / Q4_0 / Q4_1 blocks wherever they hold no more bits), or any scheme name (`w8a8-b64`, `int4-g32`,
    /// ...). A pre-quantized checkpoint runs as saved unless this is given; otherwise the default is `int8`.
    #[arg(long, conflicts_with = "plan")]
    pub quant: Option<String>,
    /// A plan file (TOML or JSON) giving each layer its scheme.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Threads for the kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the layers run: `cpu` (this crate's kernels), `cuda`, `cuda:N` or `metal` (candle's kernels on that
    /// GPU; a build with `--features cuda` or `metal`), or `candle-cpu` (candle's kernels on the CPU: the GPU path,
    /// checked without a GPU).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl QuantArgs {
    /// The plan `--quant` (read as a preset of the model at `path`, which does `task`) or `--plan` names, or `None`
    /// when neither is given.
    pub fn plan_for(&self, path: &Path, task: Task) -> Result<Option<Plan>> {
        match (&self.quant, &self.plan) {
            (Some(name), _) => Ok(Some(swap::locate::preset(name, path, task)?)),
            (None, Some(path)) => Ok(Some(Plan::from_file(path)?)),
            (None, None) => Ok(None),
        }
    }

    /// Where `--device` puts the layers.
    pub fn placement(&self) -> Result<Placement> {
        Placement::parse(&self.device)
    }

    /// On a device other than this crate's CPU kernels (`placement`, from `--device`), says on standard error how
    /// many layers took each of candle's paths (`device cuda: 24 layers as candle qmatmul (Q8_0 blocks), 12 layers
    /// as candle f16 matmul (dequantized)`).
    pub fn report_paths(&self, placement: &Placement, layers: &[swap::LayerReport]) {
        if placement.candle_device().is_none() {
            return;
        }
        let mut counts: Vec<(String, usize)> = Vec::new();
        for layer in layers {
            let path = layer.path.to_string();
            match counts.iter_mut().find(|(p, _)| *p == path) {
                Some((_, n)) => *n += 1,
                None => counts.push((path, 1)),
            }
        }
        let parts: Vec<String> = counts.iter().map(|(path, n)| format!("{n} layers as {path}")).collect();
        eprintln!("device {}: {}", self.device, parts.join(", "));
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
        let (path, task) = locate(&self.model)?;
        if task != Task::Generation {
            bail!("{} does {task}, not text generation (that takes a GGUF file or a Llama folder)", self.model);
        }
        let placement = self.quant.placement()?;
        let generator = Generator::open_on(&path, self.quant.plan_for(&path, Task::Generation)?, &placement)?;
        self.quant.report_paths(&placement, generator.layers());
        Ok(generator)
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
        let placement = self.quant.placement()?;
        let embedder = Embedder::open_on(&self.dir()?, plan, &placement)?;
        self.quant.report_paths(&placement, embedder.layers());
        Ok(embedder)
    }

    /// Loads the model as a reranker with the chosen plan.
    pub fn load_reranker(&self) -> Result<Reranker> {
        let placement = self.quant.placement()?;
        let reranker = Reranker::open_on(&self.dir()?, self.plan()?, &placement)?;
        self.quant.report_paths(&placement, reranker.layers());
        Ok(reranker)
    }

    /// The model's local folder (a Hub id is resolved through the hf-hub cache, downloading what is missing
    /// unless `HF_HUB_OFFLINE=1`).
    pub fn dir(&self) -> Result<PathBuf> {
        swap::resolve_model(&self.model, &SENTENCE_BERT_FILES, &ResolveOptions::default())
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
