//! What a model reference and a quantization name stand for, the same for every front end (the `runner` commands,
//! the Python module): a path or Hub id becomes a local path and the model's task, and a preset name (`int8`,
//! `fp32`, `int4`, a scheme) becomes that model's plan.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::source::{resolve_model, ModelFiles, ResolveOptions, SENTENCE_BERT_FILES};
use crate::{ModelKind, Plan, Task};

/// The files of a decoder folder on the Hub.
const DECODER_FILES: ModelFiles<'static> = ModelFiles {
    required: &["config.json", "tokenizer.json", "model.safetensors"],
    optional: &["tokenizer_config.json", "generation_config.json"],
};

/// `model` (a GGUF file, a model folder, or a Hub id `owner/name[@revision]`) as a local path and the task of the
/// model there: a GGUF file generates; a folder does what its `config.json` says (see [`ModelKind::of_config`]: an
/// unsupported architecture is an error here). A Hub id is fetched through the hf-hub cache.
pub fn locate(model: &str) -> Result<(PathBuf, Task)> {
    let path = Path::new(model);
    if path.is_file() {
        return Ok((path.to_path_buf(), Task::Generation));
    }
    if path.is_dir() {
        return Ok((path.to_path_buf(), ModelKind::of_folder(path)?.0.task));
    }
    // A Hub id: fetch the files every encoder needs, then look.
    let dir = resolve_model(model, &SENTENCE_BERT_FILES, &ResolveOptions::default())?;
    let task = ModelKind::of_folder(&dir)?.0.task;
    if task == Task::Generation {
        return Ok((resolve_model(model, &DECODER_FILES, &ResolveOptions::default())?, task));
    }
    Ok((dir, task))
}

/// The plan the quantization name `name` stands for on the model at `path`, which does `task`: for decoders the
/// [`Plan::llama_preset`]s (`int8`, `int4`, `int2`, or a scheme); for encoders `int8` is the architecture's
/// default plan (see [`encoder_preset`]).
pub fn preset(name: &str, path: &Path, task: Task) -> Result<Plan> {
    match task {
        Task::Generation => Plan::llama_preset(name),
        Task::Embedding | Task::Reranking => encoder_preset(name, ModelKind::of_folder(path)?.0),
    }
}

/// The plan a quantization name stands for on an encoder of `kind`: `int8` (its architecture's default plan, a
/// reranker's head in f32) or one scheme for every layer (`fp32`, `w8a8-row`, ...).
pub fn encoder_preset(name: &str, kind: ModelKind) -> Result<Plan> {
    match name.trim().to_ascii_lowercase().as_str() {
        "int8" => Ok(kind.default_plan()),
        _ => Ok(Plan::uniform(name.parse()?)),
    }
}
