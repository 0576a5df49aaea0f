//! What a model reference and a quantization name stand for, the same for every front end (the `runner` commands,
//! the Python module): a path or Hub id becomes a local path and the model's task, and a preset name (`int8`,
//! `fp32`, `int4`, a scheme) becomes that model's plan.

use std::path::{Path, PathBuf};

use anyhow::Result;

use qlayers::LayerScheme;

use crate::gguf_weights::GgufWeights;
use crate::models::llama::LlamaConfig;
use crate::plan::Rule;
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
/// [`Plan::llama_preset`]s (`int8`, `int4`, `int2`, or a scheme), on a GGUF file as [`gguf_preset`] adapts them;
/// for encoders `int8` is the architecture's default plan (see [`encoder_preset`]).
pub fn preset(name: &str, path: &Path, task: Task) -> Result<Plan> {
    match task {
        Task::Generation if path.is_file() => gguf_preset(name, &GgufWeights::open(path)?),
        Task::Generation => Plan::llama_preset(name),
        Task::Embedding | Task::Reranking => encoder_preset(name, ModelKind::of_folder(path)?.0),
    }
}

/// The Llama preset `name` on a GGUF file: [`Plan::llama_preset`], except that a layer keeps the file's own blocks
/// wherever they hold no more bits than the preset gives it and a scheme holds them exactly (see
/// [`GgufWeights::native_scheme`]): Q8_0 under `int8`, Q4_0 and Q4_1 under `int8` and `int4`, `lm_head`
/// included. Quantizing those weights again would only add error, and bytes when wider. `fp32` and explicit
/// scheme names are taken as they are.
pub fn gguf_preset(name: &str, weights: &GgufWeights) -> Result<Plan> {
    let plan = Plan::llama_preset(name)?;
    if !matches!(name.trim().to_ascii_lowercase().as_str(), "int8" | "int4" | "int2") {
        return Ok(plan);
    }
    let mut layers = Vec::new();
    for layer in LlamaConfig::of_gguf(weights)?.linear_layers() {
        let planned = plan.scheme_for(&layer)?;
        let kept = weights.native_scheme(&format!("{layer}.weight")).filter(|n| n.code_bits() <= planned.code_bits());
        layers.push((layer, kept.unwrap_or(planned)));
    }
    // The body's most common scheme is the default; every other layer gets a rule of its own.
    let mut counts: Vec<(LayerScheme, usize)> = Vec::new();
    for (_, scheme) in layers.iter().filter(|(layer, _)| layer != "lm_head") {
        match counts.iter_mut().find(|(s, _)| s == scheme) {
            Some((_, count)) => *count += 1,
            None => counts.push((*scheme, 1)),
        }
    }
    let default = counts.iter().max_by_key(|(_, count)| *count).map_or(plan.scheme_for("")?, |(s, _)| *s);
    let mut adapted = Plan::uniform(default);
    adapted.rules = layers
        .into_iter()
        .filter(|(_, scheme)| *scheme != default)
        .map(|(pattern, scheme)| Rule { pattern, scheme: scheme.to_string() })
        .collect();
    Ok(adapted)
}

/// The plan a quantization name stands for on an encoder of `kind`: `int8` (its architecture's default plan, a
/// reranker's head in f32) or one scheme for every layer (`fp32`, `w8a8-row`, ...).
pub fn encoder_preset(name: &str, kind: ModelKind) -> Result<Plan> {
    match name.trim().to_ascii_lowercase().as_str() {
        "int8" => Ok(kind.default_plan()),
        _ => Ok(Plan::uniform(name.parse()?)),
    }
}
