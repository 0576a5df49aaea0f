//! Text generation with a Llama model: the model and its tokenizer from one source (a GGUF file, or a folder in
//! Hugging Face layout, float or pre-quantized), the model's chat template, sampling, and streamed text.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use qlayers::LayerScheme;
use tokenizers::Tokenizer;

use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::gguf_weights::{metadata_str, GgufWeights};
use crate::loader::{LayerReport, Placement, QuantLoader};
use crate::models::llama::{LlamaConfig, LlamaModel};
use crate::plan::Plan;
use crate::sampling::{Sampler, Sampling};

/// A Llama model with its tokenizer and chat template.
pub struct Generator {
    model: LlamaModel,
    tokenizer: Tokenizer,
    chat_template: Option<String>,
    /// Whether prompts start with the BOS token (GGUF's `add_bos_token`; a `tokenizer.json` adds it itself).
    add_bos: bool,
    layers: Vec<LayerReport>,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced its end-of-sequence token (included in the tokens).
    Eos,
    /// `max_tokens` tokens were produced.
    MaxTokens,
    /// The context is full.
    Context,
}

/// What one call of [`Generator::generate`] produced, with its timings.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated tokens.
    pub tokens: Vec<u32>,
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Time to run the prompt and pick the first token.
    pub prefill: Duration,
    /// Time of the one-token steps after the first token.
    pub decode: Duration,
    /// Why it stopped.
    pub stop: StopReason,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Tokens per second of the one-token steps (every generated token after the first), or 0 when there were none.
    pub fn decode_tokens_per_s(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1);
        if steps == 0 {
            return 0.0;
        }
        steps as f64 / self.decode.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl Generator {
    /// Opens `path`: a GGUF file (its tokenizer and chat template from the metadata) or a folder with
    /// `config.json`, `model.safetensors` and `tokenizer.json`. A float model is quantized per `plan` (the
    /// [`Plan::llama_preset`] `int8` when `None`); a pre-quantized checkpoint runs as saved.
    pub fn open(path: &Path, plan: Option<Plan>) -> Result<Self> {
        Self::open_on(path, plan, &Placement::Kernels)
    }

    /// [`Generator::open`] with the Linear layers placed as `placement` says: on candle's kernels on a device, a
    /// GGUF file's own Q8_0 / Q4_0 / Q4_1 blocks go there as they are; attention, norms and the cache stay on the
    /// CPU.
    pub fn open_on(path: &Path, plan: Option<Plan>, placement: &Placement) -> Result<Self> {
        Ok(Self::open_with(path, plan, false, placement)?.0)
    }

    /// Reads a float model (a GGUF file or a float HF folder) in f32 with every tensor kept in memory, so that
    /// [`QuantLoader::from_tensors`] can rebuild it under other plans without reading or dequantizing the file
    /// again. A quantized checkpoint is an error.
    pub fn open_in_memory(path: &Path) -> Result<(Self, Arc<HashMap<String, Tensor>>)> {
        let (generator, loader) =
            Self::open_with(path, Some(Plan::llama(LayerScheme::F32)), true, &Placement::Kernels)?;
        let tensors =
            loader.take_float_tensors().with_context(|| format!("{} is not a float model", path.display()))?;
        Ok((generator, tensors))
    }

    /// [`Generator::open`], returning the loader too; with `record`, the loader keeps every tensor it read.
    fn open_with(path: &Path, plan: Option<Plan>, record: bool, placement: &Placement) -> Result<(Self, QuantLoader)> {
        // Every loader below places its layers, and records what it read when asked.
        let prepare = |loader: QuantLoader| {
            let loader = loader.with_placement(placement.clone());
            if record {
                loader.recording()
            } else {
                loader
            }
        };
        if path.is_file() {
            let weights = GgufWeights::open(path)?;
            let metadata = weights.metadata();
            let tokenizer = tokenizer_from_gguf(metadata)?;
            let chat_template = metadata_str(metadata, "tokenizer.chat_template").ok().map(str::to_string);
            let add_bos = metadata.get("tokenizer.ggml.add_bos_token").is_some_and(|v| v.to_bool().unwrap_or(false));
            let config = LlamaConfig::of_gguf(&weights)?;
            let plan = match plan {
                Some(plan) => plan,
                None => crate::locate::gguf_preset("int8", &weights)?,
            };
            let loader = prepare(QuantLoader::from_gguf(weights, plan));
            let model = LlamaModel::load(config, &loader)?;
            let generator = Self { model, tokenizer, chat_template, add_bos, layers: loader.report() };
            return Ok((generator, loader));
        }
        let config_text = std::fs::read_to_string(path.join("config.json"))
            .with_context(|| format!("{} is neither a GGUF file nor a folder with config.json", path.display()))?;
        let config_json: serde_json::Value = serde_json::from_str(&config_text).context("config.json is not JSON")?;
        let config = LlamaConfig::from_hf_json(&config_text)?;
        let loader = prepare(config.tie_head(QuantLoader::open_folder(path, &config_json, plan, Plan::llama_int8)?));
        let model = LlamaModel::load(config, &loader).context("the weights do not match config.json")?;
        let tokenizer = Tokenizer::from_file(path.join("tokenizer.json"))
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.join("tokenizer.json").display()))?;
        let chat_template = read_chat_template(path)?;
        let generator = Self { model, tokenizer, chat_template, add_bos: false, layers: loader.report() };
        Ok((generator, loader))
    }

    /// The model.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The model, without the tokenizer.
    pub fn into_model(self) -> LlamaModel {
        self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template (Jinja), if the model has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// What every Linear layer became.
    pub fn layers(&self) -> &[LayerReport] {
        &self.layers
    }

    /// The token ids of `text` (with the BOS token when the model asks for one).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| anyhow::anyhow!("cannot tokenize: {e}"))?;
        let mut ids = encoding.get_ids().to_vec();
        if let Some(bos) = self.model.config().bos_token_id.filter(|_| self.add_bos) {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| anyhow::anyhow!("cannot decode: {e}"))
    }

    /// The prompt of a chat whose user says `user` (after `system`, if given), rendered with the model's chat
    /// template with the assistant's turn opened.
    pub fn chat_prompt(&self, system: Option<&str>, user: &str) -> Result<String> {
        let template = self.chat_template.as_deref().context("the model has no chat template")?;
        let token = |id: Option<u32>| id.and_then(|id| self.tokenizer.id_to_token(id)).unwrap_or_default();
        let config = self.model.config();
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(minijinja::context! { role => "system", content => system });
        }
        messages.push(minijinja::context! { role => "user", content => user });
        render_chat(
            template,
            minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => token(config.bos_token_id),
                eos_token => token(config.eos_token_id),
            },
        )
    }

    /// Generates up to `length.max_tokens` tokens after `prompt`, calling `on_token` with each as it comes. Stops
    /// after the end-of-sequence token (unless `length.ignore_eos`) or when the context is full. A prompt longer
    /// than the context is an error.
    pub fn generate(
        &self,
        prompt: &[u32],
        length: Length,
        sampling: Sampling,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Generation> {
        let max_tokens = length.max_tokens;
        let context = self.model.config().context_length;
        if prompt.is_empty() {
            bail!("the prompt is empty");
        }
        if prompt.len() >= context {
            bail!("the prompt has {} tokens; the model's context holds {context} (prompt and answer)", prompt.len());
        }
        let mut generation = Generation {
            tokens: Vec::with_capacity(max_tokens),
            prompt_tokens: prompt.len(),
            prefill: Duration::ZERO,
            decode: Duration::ZERO,
            stop: StopReason::MaxTokens,
        };
        if max_tokens == 0 {
            return Ok(generation);
        }
        let mut sampler = Sampler::new(sampling);
        let mut cache = self.model.new_cache();
        let start = Instant::now();
        let mut next = sampler.sample(&self.model.forward(prompt, &mut cache)?);
        generation.prefill = start.elapsed();
        let start = Instant::now();
        loop {
            generation.tokens.push(next);
            on_token(next)?;
            if !length.ignore_eos && Some(next) == self.model.eos_token_id() {
                generation.stop = StopReason::Eos;
                break;
            }
            if generation.tokens.len() == max_tokens {
                break;
            }
            if cache.len() == context {
                generation.stop = StopReason::Context;
                break;
            }
            next = sampler.sample(&self.model.forward(&[next], &mut cache)?);
        }
        generation.decode = start.elapsed();
        Ok(generation)
    }
}

/// How long a generation may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// Go on past the end-of-sequence token (as llama.cpp's `--ignore-eos`), for benchmarks and tests.
    pub ignore_eos: bool,
}

impl Length {
    /// Up to `max_tokens` tokens, stopping after the end-of-sequence token.
    pub fn up_to(max_tokens: usize) -> Self {
        Self { max_tokens, ignore_eos: false }
    }
}

/// Renders a chat template; templates may call `raise_exception(message)` as Hugging Face's do.
fn render_chat(template: &str, context: minijinja::Value) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_function("raise_exception", |message: String| -> Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
    });
    env.add_template("chat", template).context("the chat template does not parse")?;
    let rendered = env.get_template("chat")?.render(context).context("the chat template failed")?;
    Ok(rendered)
}

/// The `chat_template` of a folder's `tokenizer_config.json` (a string, or a list of named templates of which
/// `default` is used), if any.
fn read_chat_template(dir: &Path) -> Result<Option<String>> {
    let Ok(text) = std::fs::read_to_string(dir.join("tokenizer_config.json")) else { return Ok(None) };
    let config: serde_json::Value = serde_json::from_str(&text).context("tokenizer_config.json is not JSON")?;
    Ok(match config.get("chat_template") {
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    })
}

/// Turns generated tokens into text as they come, holding back a token that ends inside a UTF-8 character (byte
/// tokens) until the character is complete.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    emitted: usize,
}

impl<'a> TextStream<'a> {
    /// A stream over `tokenizer`'s decoding.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self { tokenizer, ids: Vec::new(), emitted: 0 }
    }

    /// Adds a token; returns the text it completes (empty when it is held back).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true).map_err(|e| anyhow::anyhow!("cannot decode: {e}"))?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_templates_render_and_may_raise() {
        let template = "{% for m in messages %}<|{{ m.role }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}\
                        {% if add_generation_prompt %}<|assistant|>{% endif %}";
        let context = minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => "hi" }],
            add_generation_prompt => true,
            eos_token => "</s>",
        };
        assert_eq!(render_chat(template, context.clone()).unwrap(), "<|user|>hi</s><|assistant|>");
        let raising = "{{ raise_exception('roles must alternate') }}";
        assert!(format!("{:#}", render_chat(raising, context.clone()).unwrap_err()).contains("roles must alternate"));
        assert!(render_chat("{% for %}", context).is_err());
    }
}
