//! Builds quantized layers while the model's weights are read.
//!
//! From a float checkpoint, each Linear the model asks for is read in f32 from the memory-mapped safetensors (or
//! dequantized from a GGUF file), quantized per the plan, and the f32 copy dropped, so peak memory is the quantized
//! model plus one float layer.
//! From a pre-quantized checkpoint ([`crate::checkpoint`]) or an optimum-quanto one ([`crate::quanto`]), the
//! integer codes are read as they are: no float weight is read or quantized.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use qlayers::layers::InputRange;
use qlayers::{LayerPath, LayerScheme, QLinear, QTensor};

pub use crate::checkpoint::Stored;
use crate::checkpoint::{self, QuantizationConfig, QuantizedLayers, WEIGHTS_FILE};
use crate::gguf_weights::GgufWeights;
use crate::plan::Plan;
use crate::quanto::{QuantoMap, QMAP_FILE};

/// What one layer became: its name, scheme, bytes in memory and the kernels that run it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Dotted layer name (`encoder.layer.0.intermediate.dense`).
    pub name: String,
    /// The scheme the plan gave it.
    pub scheme: LayerScheme,
    /// Parameter bytes in memory.
    pub bytes: usize,
    /// Which kernels compute it (this crate's on the CPU, or candle's on a device).
    pub path: LayerPath,
}

/// Where the layers a loader builds run.
#[derive(Debug, Clone, Default)]
pub enum Placement {
    /// This crate's kernels, on the CPU.
    #[default]
    Kernels,
    /// candle's own kernels on this device (CUDA, Metal; or the CPU, to check that path there): integer layers
    /// as ggml blocks where a format holds them exactly, else as f16 weights (see `QLinear::on_candle`), and the
    /// models' other operations as candle tensor operations.
    Candle(Device),
}

impl Placement {
    /// The device of a `--device` argument: `cpu` (this crate's kernels), `cuda`, `cuda:N`, `metal`, or
    /// `candle-cpu` (candle's kernels on the CPU, the GPU path checked without a GPU).
    pub fn parse(name: &str) -> Result<Self> {
        let device = match name.trim() {
            "cpu" => return Ok(Self::Kernels),
            "candle-cpu" => Device::Cpu,
            "metal" => Device::new_metal(0).context("cannot open the Metal device (built with --features metal?)")?,
            cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
                let ordinal = match cuda.strip_prefix("cuda:") {
                    Some(n) => n.parse::<usize>().with_context(|| format!("bad CUDA device number in {cuda:?}"))?,
                    None => 0,
                };
                Device::new_cuda(ordinal)
                    .with_context(|| format!("cannot open CUDA device {ordinal} (built with --features cuda?)"))?
            }
            other => bail!("unknown device {other:?}: expected cpu, cuda, cuda:N, metal or candle-cpu"),
        };
        Ok(Self::Candle(device))
    }

    /// The device of candle's kernels, when the layers run on them.
    pub fn candle_device(&self) -> Option<&Device> {
        match self {
            Self::Kernels => None,
            Self::Candle(device) => Some(device),
        }
    }
}

/// A Linear layer's weight as read: floats to quantize, or codes already quantized.
#[derive(Debug, Clone)]
pub enum LinearWeight {
    /// `[out, in]` floats (the layer is f32, or is quantized when built).
    Float(Tensor),
    /// Codes read from a quantized checkpoint, or just quantized.
    Quantized(QTensor),
}

/// The parameters of one Linear layer and the scheme it runs.
#[derive(Debug, Clone)]
pub struct LinearParams {
    /// The scheme the layer runs.
    pub scheme: LayerScheme,
    /// Its weight.
    pub weight: LinearWeight,
    /// Its bias, `[out]`.
    pub bias: Option<Tensor>,
    /// The factor each input feature is multiplied by before it is quantized, when a checkpoint saved the layer
    /// smoothed (SmoothQuant's `1 / s`).
    pub input_scale: Option<Vec<f32>>,
    /// The calibrated activation step of a static W8A8 layer a checkpoint saved.
    pub activation_step: Option<f32>,
    /// The layers stacked in it, in order: each one's name and output rows (one entry unless
    /// [`LinearParams::concat_rows`] made it).
    pub parts: Vec<(String, usize)>,
}

impl LinearParams {
    /// Whether [`LinearParams::concat_rows`] can stack `parts`: one scheme, one codebook where the weights have
    /// one (k-means layers learn their own, so they run apart), one input scale and one activation step.
    pub fn stackable(parts: &[LinearParams]) -> bool {
        let levels = |p: &LinearParams| match &p.weight {
            LinearWeight::Quantized(q) => q.levels().copied(),
            LinearWeight::Float(_) => None,
        };
        parts.iter().all(|p| {
            p.scheme == parts[0].scheme
                && levels(p) == levels(&parts[0])
                && p.input_scale == parts[0].input_scale
                && p.activation_step == parts[0].activation_step
        })
    }

    /// Stacks layers of one scheme along their outputs (the fused Q, K and V projections).
    pub fn concat_rows(parts: Vec<LinearParams>) -> Result<LinearParams> {
        let scheme = parts.first().context("nothing to stack")?.scheme;
        if parts.iter().any(|p| p.scheme != scheme) {
            bail!("only layers of one scheme can be stacked");
        }
        let input_scale = parts[0].input_scale.clone();
        if parts.iter().any(|p| p.input_scale != input_scale) {
            bail!("only layers of one input scale can be stacked");
        }
        let activation_step = parts[0].activation_step;
        if parts.iter().any(|p| p.activation_step != activation_step) {
            bail!("only layers of one activation step can be stacked");
        }
        let names = parts.iter().flat_map(|p| p.parts.iter().cloned()).collect();
        let mut floats = Vec::new();
        let mut codes = Vec::new();
        let mut biases = Vec::new();
        for part in parts {
            match part.weight {
                LinearWeight::Float(w) => floats.push(w),
                LinearWeight::Quantized(q) => codes.push(q),
            }
            biases.push(part.bias);
        }
        let weight = match (floats.is_empty(), codes.is_empty()) {
            (false, true) => LinearWeight::Float(Tensor::cat(&floats, 0)?),
            (true, false) => LinearWeight::Quantized(QTensor::concat_rows(&codes)?),
            _ => bail!("cannot stack float and quantized weights"),
        };
        let bias = match biases.iter().all(Option::is_some) {
            true => Some(Tensor::cat(&biases.into_iter().flatten().collect::<Vec<_>>(), 0)?),
            false if biases.iter().all(Option::is_none) => None,
            false => bail!("cannot stack layers with and without bias"),
        };
        Ok(LinearParams { scheme, weight, bias, input_scale, activation_step, parts: names })
    }
}

/// Whether a Linear layer has a bias. The model code states it for each layer (from its architecture and config),
/// so that a checkpoint that disagrees is an error instead of a bias silently read as zero or ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bias {
    /// `name.bias` (`[out]`) must be in the checkpoint; without it the layer is an error naming it.
    Required,
    /// The layer has no bias; a `name.bias` in the checkpoint is an unexpected tensor.
    None,
}

impl Bias {
    /// [`Bias::Required`] when `present` (a config's `attention_bias`, `mlp_bias`), else [`Bias::None`].
    pub fn when(present: bool) -> Self {
        if present {
            Self::Required
        } else {
            Self::None
        }
    }
}

/// Where the schemes and weights come from.
enum Source {
    /// Float weights quantized per a plan.
    Float(Plan),
    /// A checkpoint written by [`crate::checkpoint`]: codes and each layer's scheme.
    Quantized(QuantizedLayers),
    /// An optimum-quanto checkpoint: int8 codes for the layers its map names.
    Quanto(QuantoMap),
}

type Progress = Box<dyn Fn(&str) + Send + Sync>;

/// Each layer's largest `|x|` per input channel on calibration data, by layer name.
pub type InputRanges = Arc<HashMap<String, Vec<f32>>>;

/// The layers being observed, by name.
type Observers = Mutex<Vec<(String, Arc<InputRange>)>>;

/// Where the tensors are read from.
enum Store {
    Safetensors(MmapedSafetensors),
    Gguf(GgufWeights),
    /// Float tensors already in memory (a model read once, then rebuilt under many plans).
    Memory(Arc<HashMap<String, Tensor>>),
    /// A candle `VarBuilder` of any backend (safetensors, `VarMap`, npz); a tensor it lacks is an error here, never
    /// created.
    Candle(VarBuilder<'static>),
}

impl Store {
    fn contains(&self, name: &str) -> bool {
        match self {
            Self::Safetensors(t) => t.get(name).is_ok(),
            Self::Gguf(g) => g.contains(name),
            Self::Memory(m) => m.contains_key(name),
            Self::Candle(vb) => vb.contains_tensor(name),
        }
    }

    /// Tensor `name`, expected to be of `shape` (which the candle store needs to read it; the caller checks it for
    /// the others).
    fn load(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if !self.contains(name) {
            bail!("weight {name} is missing");
        }
        match self {
            Self::Candle(vb) => vb.get(shape, name).with_context(|| format!("reading weight {name}")),
            Self::Safetensors(t) => t.load(name, &Device::Cpu).with_context(|| format!("reading weight {name}")),
            Self::Gguf(g) => g.tensor(name),
            Self::Memory(m) => m.get(name).cloned().with_context(|| format!("weight {name} is missing")),
        }
    }

    /// The name under which the store holds the tensor called `name` (a GGUF file has names of its own).
    fn stored_name(&self, name: &str) -> String {
        match self {
            Self::Gguf(g) => g.stored_name(name).unwrap_or_else(|| name.to_string()),
            Self::Safetensors(_) | Self::Memory(_) | Self::Candle(_) => name.to_string(),
        }
    }

    /// The shape of float tensor `name` as stored, when the store holds it and can tell without reading it.
    fn dims(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            Self::Safetensors(t) => t.get(name).ok().map(|v| v.shape().to_vec()),
            Self::Gguf(g) => g.dims(name),
            Self::Memory(m) => m.get(name).map(|t| t.dims().to_vec()),
            Self::Candle(_) => None,
        }
    }

    /// Every tensor name the store holds (`None`: a candle `VarBuilder`, which cannot list them).
    fn names(&self) -> Option<Vec<String>> {
        match self {
            Self::Safetensors(t) => Some(t.tensors().into_iter().map(|(name, _)| name).collect()),
            Self::Gguf(g) => Some(g.names()),
            Self::Memory(m) => Some(m.keys().cloned().collect()),
            Self::Candle(_) => None,
        }
    }

    /// The safetensors of a quantized checkpoint (which is never GGUF).
    fn safetensors(&self) -> Result<&MmapedSafetensors> {
        match self {
            Self::Safetensors(t) => Ok(t),
            Self::Gguf(_) | Self::Memory(_) | Self::Candle(_) => {
                bail!("quantized codes are read from safetensors checkpoints only")
            }
        }
    }
}

/// The safetensors of a quantized checkpoint as its codes are read: every tensor handed out is noted, so that the
/// loader knows which tensors of the file no layer read.
pub(crate) struct TrackedTensors<'a> {
    tensors: &'a MmapedSafetensors,
    read: &'a Mutex<HashSet<String>>,
}

impl<'a> TrackedTensors<'a> {
    /// `tensors`, noting each name read in `read`.
    pub(crate) fn new(tensors: &'a MmapedSafetensors, read: &'a Mutex<HashSet<String>>) -> Self {
        Self { tensors, read }
    }

    /// The raw view of tensor `name`.
    pub(crate) fn get(&self, name: &str) -> Result<safetensors::tensor::TensorView<'a>> {
        let view = self.tensors.get(name)?;
        lock(self.read).insert(name.to_string());
        Ok(view)
    }

    /// Tensor `name` on the CPU, in its stored dtype.
    pub(crate) fn load(&self, name: &str) -> Result<Tensor> {
        let tensor = self.tensors.load(name, &Device::Cpu)?;
        lock(self.read).insert(name.to_string());
        Ok(tensor)
    }
}

/// How many names an error about unexpected tensors lists.
const LISTED_NAMES: usize = 5;

/// A weight reader that builds Linear layers as [`QLinear`]s per a [`Plan`] or per a quantized checkpoint.
pub struct QuantLoader {
    tensors: Store,
    source: Source,
    report: Mutex<Vec<LayerReport>>,
    recorded: Option<Mutex<Vec<(String, Stored)>>>,
    schemes: Mutex<Vec<(String, LayerScheme)>>,
    progress: Option<Progress>,
    /// Names read from other tensors (`lm_head.weight` from the embeddings when a model ties them).
    aliases: Vec<(String, String)>,
    /// Tensors read as rows of another (see [`QuantLoader::split_fused`]).
    row_parts: Mutex<Vec<RowPart>>,
    /// The input ranges of every layer built, when calibration asked for them.
    observers: Option<Observers>,
    /// Each layer's input channel maxima on calibration text, for SmoothQuant and static activation steps.
    input_ranges: Option<InputRanges>,
    /// SmoothQuant's migration strength for W8A8 layers (with `input_ranges`).
    smooth: Option<f32>,
    /// The stored name of every tensor read so far (see [`QuantLoader::check_all_read`]).
    read: Mutex<HashSet<String>>,
    /// Where the layers built run.
    placement: Placement,
}

impl QuantLoader {
    /// Memory-maps the float safetensors `files` of one model, to be quantized per `plan`.
    pub fn from_safetensors(files: &[impl AsRef<Path>], plan: Plan) -> Result<Self> {
        Self::open(files, Source::Float(plan))
    }

    /// The loader of a model folder whose `config.json` is `config`: a float model is quantized per `plan` (or
    /// `default_plan()` when `None`); a pre-quantized checkpoint ([`crate::checkpoint`]) or an optimum-quanto one
    /// ([`crate::quanto`]) is read as saved, and a `plan` other than the one it was saved with is an error.
    pub fn open_folder(
        dir: &Path,
        config: &serde_json::Value,
        plan: Option<Plan>,
        default_plan: impl FnOnce() -> Plan,
    ) -> Result<Self> {
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.exists() {
            bail!("{} has no {WEIGHTS_FILE}", dir.display());
        }
        if let Some(saved) = QuantizationConfig::from_config(config)? {
            if let Some(plan) = plan.filter(|p| *p != saved.plan) {
                bail!(
                    "{} is a checkpoint quantized with plan {}; it cannot run plan {plan} (quantize the float model)",
                    dir.display(),
                    saved.plan
                );
            }
            Self::from_quantized(&[&weights], saved.layers()?)
        } else if dir.join(QMAP_FILE).exists() {
            if plan.is_some() {
                bail!("{} is an optimum-quanto checkpoint; it runs as saved, without a plan", dir.display());
            }
            Self::from_quanto(&[&weights], QuantoMap::read(dir)?)
        } else {
            Self::from_safetensors(&[&weights], plan.unwrap_or_else(default_plan))
        }
    }

    /// Reads the tensors of a Llama GGUF file (by their HF names), to be quantized per `plan`.
    pub fn from_gguf(weights: GgufWeights, plan: Plan) -> Self {
        Self::with_store(Store::Gguf(weights), Source::Float(plan))
    }

    /// Reads float tensors already in memory (by name, as [`QuantLoader::take_recorded`] lists them), to be
    /// quantized per `plan`: rebuilding a model under many plans then reads and dequantizes its file once.
    pub fn from_tensors(tensors: Arc<HashMap<String, Tensor>>, plan: Plan) -> Self {
        Self::with_store(Store::Memory(tensors), Source::Float(plan))
    }

    /// Reads float tensors through a candle `VarBuilder` of any backend (its names are the model's, as in a
    /// safetensors file of it), to be quantized per `plan`.
    pub fn from_var_builder(vb: VarBuilder<'static>, plan: Plan) -> Self {
        Self::with_store(Store::Candle(vb), Source::Float(plan))
    }

    /// The GGUF file the loader reads, if it reads one.
    pub fn gguf(&self) -> Option<&GgufWeights> {
        match &self.tensors {
            Store::Gguf(g) => Some(g),
            Store::Safetensors(_) | Store::Memory(_) | Store::Candle(_) => None,
        }
    }

    /// Memory-maps a checkpoint written by [`crate::checkpoint::save`] whose layers are `layers`.
    pub(crate) fn from_quantized(files: &[impl AsRef<Path>], layers: QuantizedLayers) -> Result<Self> {
        Self::open(files, Source::Quantized(layers))
    }

    /// Memory-maps an optimum-quanto checkpoint described by `map`.
    pub(crate) fn from_quanto(files: &[impl AsRef<Path>], map: QuantoMap) -> Result<Self> {
        Self::open(files, Source::Quanto(map))
    }

    fn open(files: &[impl AsRef<Path>], source: Source) -> Result<Self> {
        for f in files {
            safetensors_header_ok(f.as_ref())?;
        }
        // SAFETY: the files are not modified while mapped (they are model files in a cache or folder).
        let tensors = unsafe { MmapedSafetensors::multi(files) }.context("cannot map the model's safetensors")?;
        Ok(Self::with_store(Store::Safetensors(tensors), source))
    }

    fn with_store(tensors: Store, source: Source) -> Self {
        Self {
            tensors,
            source,
            report: Mutex::new(Vec::new()),
            recorded: None,
            schemes: Mutex::new(Vec::new()),
            progress: None,
            aliases: Vec::new(),
            row_parts: Mutex::new(Vec::new()),
            observers: None,
            input_ranges: None,
            smooth: None,
            read: Mutex::new(HashSet::new()),
            placement: Placement::Kernels,
        }
    }

    /// Builds every later layer to run as `placement` says (this crate's CPU kernels by default).
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Where the layers built run.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Makes every layer built record the largest `|x|` of each input channel it sees
    /// ([`QuantLoader::input_ranges`] reads them after the model has run on calibration data).
    pub fn observing(mut self) -> Self {
        self.observers = Some(Mutex::new(Vec::new()));
        self
    }

    /// The input channel maxima each observed layer has seen so far, by layer name (each layer of a fused
    /// projection under its own name).
    pub fn input_ranges(&self) -> HashMap<String, Vec<f32>> {
        let Some(observers) = &self.observers else { return HashMap::new() };
        lock(observers)
            .iter()
            .flat_map(|(name, range)| expand_braces(name).into_iter().map(move |n| (n, range.absmax())))
            .collect()
    }

    /// SmoothQuant for every W8A8 layer (see [`qlayers::layers::smoothing_factors`]): weights scaled per input
    /// channel by factors from `input_ranges` (by layer name, as [`QuantLoader::input_ranges`] gives them) and
    /// `alpha`, inputs divided by them. Fused projections share one set of factors, from their stacked weights.
    /// Static W8A8 layers take their steps from the same ranges.
    pub fn with_smoothing(self, input_ranges: InputRanges, alpha: f32) -> Self {
        Self { smooth: Some(alpha), ..self.with_calibration(input_ranges) }
    }

    /// The input ranges static W8A8 layers (`w8a8-static`) take their activation steps from: each layer's step is
    /// the largest value of its range (divided by the layer's smoothing factors, when smoothed) over 127.
    pub fn with_calibration(mut self, input_ranges: InputRanges) -> Self {
        self.input_ranges = Some(input_ranges);
        self
    }

    /// The SmoothQuant strength of the plan a float checkpoint is quantized with, when the plan asks for one (a
    /// saved checkpoint carries its smoothing already).
    pub fn planned_smoothing(&self) -> Option<f32> {
        match &self.source {
            Source::Float(plan) => plan.smooth,
            Source::Quantized(_) | Source::Quanto(_) => None,
        }
    }

    /// Whether the plan needs calibration ranges: it smooths, or has static W8A8 layers. The caller then runs
    /// calibration text through the float model and hands the ranges to [`QuantLoader::with_smoothing`] (or
    /// [`QuantLoader::with_calibration`]) before building.
    pub fn planned_calibration(&self) -> bool {
        match &self.source {
            Source::Float(plan) => plan.smooth.is_some() || plan.uses_static_activations(),
            Source::Quantized(_) | Source::Quanto(_) => false,
        }
    }

    /// Whether layers of `scheme` are smoothed.
    fn smooths(&self, scheme: LayerScheme) -> bool {
        self.smooth.is_some() && self.input_ranges.is_some() && scheme.is_w8a8()
    }

    /// Whether a float layer of `scheme` is quantized when built, from calibration: smoothed, or static.
    fn calibrates(&self, scheme: LayerScheme) -> bool {
        self.smooths(scheme) || scheme == LayerScheme::W8A8Static
    }

    /// Reads tensor `name` from tensor `target` when the checkpoint has no `name` of its own (tied embeddings:
    /// `lm_head.weight` from `model.embed_tokens.weight`). Layers read through an alias are quantized and saved
    /// under their own name.
    pub fn with_alias(mut self, name: &str, target: &str) -> Self {
        if !self.tensors.contains(name) {
            self.aliases.push((name.to_string(), target.to_string()));
        }
        self
    }

    /// Whether the fused layer `whole` (Phi-3's `qkv_proj`) is to be read as the layers `parts` (`q_proj`, `k_proj`,
    /// `v_proj`, of `widths` outputs each), and from then on serves each part's weight and bias as its rows of the
    /// whole's. It is when the checkpoint stores the parts (one saved after a split) or when a rule of the plan
    /// gives a part a scheme other than the whole's (a part no rule names takes the whole's); otherwise the whole is
    /// one layer, planned and quantized as one.
    pub fn split_fused(&self, whole: &str, parts: &[String], widths: &[usize]) -> Result<bool> {
        let has =
            |layer: &str| self.contains(&format!("{layer}.weight")) || self.contains(&format!("{layer}.weight.codes"));
        if !has(whole) {
            return Ok(parts.iter().all(|p| has(p)));
        }
        let Source::Float(plan) = &self.source else { return Ok(false) };
        let scheme = plan.scheme_for(whole)?;
        let schemes =
            parts.iter().map(|p| Ok(plan.named_scheme_for(p)?.unwrap_or(scheme))).collect::<Result<Vec<_>>>()?;
        if schemes.iter().all(|s| *s == scheme) {
            return Ok(false);
        }
        let total = widths.iter().sum();
        let mut start = 0;
        for ((part, &width), &scheme) in parts.iter().zip(widths).zip(&schemes) {
            for tensor in ["weight", "bias"] {
                lock(&self.row_parts).push(RowPart {
                    name: format!("{part}.{tensor}"),
                    whole: format!("{whole}.{tensor}"),
                    rows: start..start + width,
                    whole_rows: total,
                    scheme,
                });
            }
            start += width;
        }
        Ok(true)
    }

    /// Keeps every tensor handed out (as [`Stored`]) so that the model can be saved as a checkpoint.
    pub fn recording(mut self) -> Self {
        self.recorded = Some(Mutex::new(Vec::new()));
        self
    }

    /// Calls `progress` with each Linear layer's name as it is read.
    pub fn with_progress(mut self, progress: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// The tensors recorded so far (empty unless [`QuantLoader::recording`]), in read order.
    pub fn take_recorded(&self) -> Vec<(String, Stored)> {
        self.recorded.as_ref().map(|r| std::mem::take(&mut *lock(r))).unwrap_or_default()
    }

    /// The tensors recorded so far as a name-to-tensor map for [`QuantLoader::from_tensors`]; an error if any
    /// was quantized (the model must have been read in f32).
    pub fn take_float_tensors(&self) -> Result<Arc<HashMap<String, Tensor>>> {
        let mut tensors = HashMap::new();
        for (name, stored) in self.take_recorded() {
            match stored {
                Stored::Float(t) => tensors.insert(name, t),
                Stored::Quantized(_) => bail!("{name} is quantized: a float model is needed here"),
            };
        }
        Ok(Arc::new(tensors))
    }

    /// Reads the float tensor `name`, checking its `shape`, as f32.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self.read_float(name, shape)?;
        self.record(name, Stored::Float(tensor.clone()));
        Ok(tensor)
    }

    /// Whether the checkpoint holds `name` (or an alias of it, or the whole it is rows of).
    pub fn contains(&self, name: &str) -> bool {
        match self.row_part(name) {
            Some(part) => self.tensors.contains(&part.whole),
            None => self.tensors.contains(self.resolve(name)),
        }
    }

    /// The whole tensor `name` is rows of, if it is a part of a split fused layer.
    fn row_part(&self, name: &str) -> Option<RowPart> {
        lock(&self.row_parts).iter().find(|p| p.name == name).cloned()
    }

    /// The tensor `name` is read from.
    fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        self.aliases.iter().find(|(from, _)| from == name).map_or(name, |(_, to)| to)
    }

    /// The scheme layer `name` runs: the plan's for float checkpoints (for a part of a fused layer it split, the one
    /// [`QuantLoader::split_fused`] chose), the stored one for quantized checkpoints.
    pub fn scheme_for(&self, name: &str) -> Result<LayerScheme> {
        if let Some(part) = self.row_part(&format!("{name}.weight")) {
            return Ok(part.scheme);
        }
        match &self.source {
            Source::Float(plan) => plan.scheme_for(name),
            Source::Quantized(layers) => layers.scheme_for(name),
            Source::Quanto(map) => Ok(map.scheme_for(name)),
        }
    }

    /// Reads the parameters of Linear layer `name` (`[out_dim, in_dim]` weight, and a `[out_dim]` bias as `bias`
    /// says), quantized per its scheme.
    pub fn linear_params(&self, name: &str, in_dim: usize, out_dim: usize, bias: Bias) -> Result<LinearParams> {
        if let Some(progress) = &self.progress {
            progress(name);
        }
        let scheme = self.scheme_for(name)?;
        self.read_params(name, scheme, in_dim, out_dim, bias)
    }

    /// Reads the token-embedding table `name` (weight `name.weight`, `[rows, width]`) under its scheme: the
    /// plan's [`Plan::embedding_scheme`] for float checkpoints, the stored one for quantized checkpoints (f32 where
    /// they list none). A quantized table is saved with a checkpoint like a quantized layer.
    pub fn table_params(&self, name: &str, rows: usize, width: usize) -> Result<LinearParams> {
        let scheme = match &self.source {
            Source::Float(plan) => plan.embedding_scheme()?,
            Source::Quantized(layers) => layers.get(name).unwrap_or(LayerScheme::F32),
            Source::Quanto(_) => LayerScheme::F32,
        };
        self.read_params(name, scheme, width, rows, Bias::None)
    }

    /// Reads `name.weight` (`[out_dim, in_dim]`), quantized per `scheme`, and `name.bias` as `bias` says; records
    /// them and the scheme (which a checkpoint lists for the layer).
    fn read_params(
        &self,
        name: &str,
        scheme: LayerScheme,
        in_dim: usize,
        out_dim: usize,
        bias: Bias,
    ) -> Result<LinearParams> {
        let bias_name = format!("{name}.bias");
        let bias = match bias {
            Bias::Required => Some(self.read_float(&bias_name, &[out_dim])?),
            Bias::None if self.contains(&bias_name) => {
                // Named as the file names it (a GGUF file has names of its own).
                let stored = self.tensors.stored_name(self.resolve(&bias_name));
                bail!("unexpected tensor {stored}: this architecture has no bias in {name}")
            }
            Bias::None => None,
        };
        if self.input_ranges.is_none() && matches!(self.source, Source::Float(_)) {
            if self.planned_smoothing().is_some() && scheme.is_w8a8() {
                bail!("the plan asks for SmoothQuant (`smooth`), but {name} was built without calibration ranges");
            }
            if scheme == LayerScheme::W8A8Static {
                bail!("{name} is w8a8-static, but was built without calibration ranges for its activation step");
            }
        }
        let weight = match (&self.source, scheme) {
            (_, LayerScheme::F32) => {
                LinearWeight::Float(self.read_float(&format!("{name}.weight"), &[out_dim, in_dim])?)
            }
            // Smoothed and static layers are quantized when built, after fused projections have stacked their
            // weights.
            (Source::Float(_), scheme) if self.calibrates(scheme) => {
                LinearWeight::Float(self.read_float(&format!("{name}.weight"), &[out_dim, in_dim])?)
            }
            (Source::Float(_), _) => match self.native(name, scheme, [out_dim, in_dim])? {
                // A GGUF file's own codes, when the scheme holds its type exactly.
                Some(q) => LinearWeight::Quantized(q),
                None => {
                    let weight = self.read_float(&format!("{name}.weight"), &[out_dim, in_dim])?;
                    let (weight_scheme, _) = scheme.weight_scheme(in_dim)?.context("an integer scheme")?;
                    LinearWeight::Quantized(
                        QTensor::quantize(&weight, weight_scheme)
                            .with_context(|| format!("quantizing {name} as {scheme}"))?,
                    )
                }
            },
            (Source::Quantized(_), _) => {
                LinearWeight::Quantized(checkpoint::read_weight(&self.tracked()?, name, scheme, [out_dim, in_dim])?)
            }
            (Source::Quanto(_), _) => {
                LinearWeight::Quantized(crate::quanto::read_weight(&self.tracked()?, name, [out_dim, in_dim])?)
            }
        };
        let (input_scale, activation_step) = match &self.source {
            Source::Quantized(_) => (self.saved_input_scale(name, in_dim)?, self.saved_activation_step(name, scheme)?),
            Source::Float(_) | Source::Quanto(_) => (None, None),
        };
        if let Some(b) = &bias {
            self.record(&bias_name, Stored::Float(b.clone()));
        }
        match &weight {
            // A smoothed layer's weight is recorded as it is quantized, when built.
            LinearWeight::Float(_) if scheme != LayerScheme::F32 => {}
            LinearWeight::Float(w) => self.record(&format!("{name}.weight"), Stored::Float(w.clone())),
            LinearWeight::Quantized(q) => self.record(&format!("{name}.weight"), Stored::Quantized(q.clone())),
        }
        if let Some(scale) = &input_scale {
            self.record(&format!("{name}.input_scale"), Stored::Float(Tensor::new(scale.as_slice(), &Device::Cpu)?));
        }
        if let Some(step) = activation_step {
            self.record(&format!("{name}.activation_step"), Stored::Float(Tensor::new(&[step], &Device::Cpu)?));
        }
        lock(&self.schemes).push((name.to_string(), scheme));
        let parts = vec![(name.to_string(), out_dim)];
        Ok(LinearParams { scheme, weight, bias, input_scale, activation_step, parts })
    }

    /// The activation step a checkpoint saved for layer `name` (`name.activation_step`, `[1]`): present exactly
    /// when the layer is static W8A8.
    fn saved_activation_step(&self, name: &str, scheme: LayerScheme) -> Result<Option<f32>> {
        let step_name = format!("{name}.activation_step");
        match (self.contains(&step_name), scheme == LayerScheme::W8A8Static) {
            (true, true) => {
                // The layer checks the value when it takes it.
                Ok(Some(self.read_float(&step_name, &[1])?.to_vec1::<f32>()?[0]))
            }
            (false, false) => Ok(None),
            (true, false) => bail!("unexpected tensor {step_name}: {name} is {scheme}, not w8a8-static"),
            (false, true) => bail!("{name} is w8a8-static, but the checkpoint has no {step_name}"),
        }
    }

    /// The input scale a checkpoint saved for smoothed layer `name` (`name.input_scale`, `[in_dim]`), if any.
    fn saved_input_scale(&self, name: &str, in_dim: usize) -> Result<Option<Vec<f32>>> {
        let scale_name = format!("{name}.input_scale");
        match self.contains(&scale_name) {
            true => Ok(Some(self.read_float(&scale_name, &[in_dim])?.to_vec1()?)),
            false => Ok(None),
        }
    }

    /// Builds a layer from parameters read by [`QuantLoader::linear_params`]; `name` is what the report calls it.
    pub fn build_linear(&self, name: &str, params: LinearParams) -> Result<QLinear> {
        let LinearParams { scheme, weight, bias, input_scale, activation_step, parts } = params;
        let layer = match weight {
            LinearWeight::Float(w) if self.calibrates(scheme) => {
                self.calibrated(name, &w, bias.as_ref(), scheme, &parts)
            }
            LinearWeight::Float(w) => self.placed_layer(&w, bias.as_ref(), scheme),
            LinearWeight::Quantized(q) => {
                let k = q.shape().get(1).copied().unwrap_or(0);
                let (_, block) = scheme.weight_scheme(k)?.context("a quantized weight needs an integer scheme")?;
                let layer = match &self.placement {
                    Placement::Kernels => QLinear::from_qtensor(&q, bias.as_ref(), scheme, block)?,
                    Placement::Candle(device) => QLinear::on_candle(&q, bias.as_ref(), scheme, device)?,
                };
                let layer = match input_scale {
                    Some(scale) => layer.with_input_scale(scale)?,
                    None => layer,
                };
                match activation_step {
                    Some(step) => layer.with_activation_step(step).map_err(anyhow::Error::from),
                    None => Ok(layer),
                }
            }
        }
        .with_context(|| format!("building {name} as {scheme}"))?;
        let mut layer = layer;
        if let Some(observers) = &self.observers {
            lock(observers).push((name.to_string(), layer.observe_inputs()));
        }
        let report = LayerReport { name: name.to_string(), scheme, bytes: layer.storage_bytes(), path: layer.path() };
        lock(&self.report).push(report);
        Ok(layer)
    }

    /// The layer of float `weight` under `scheme`, where the placement says.
    fn placed_layer(&self, weight: &Tensor, bias: Option<&Tensor>, scheme: LayerScheme) -> Result<QLinear> {
        let layer = match (&self.placement, scheme.weight_scheme(weight.dims().last().copied().unwrap_or(0))?) {
            (Placement::Kernels, _) => QLinear::new(weight, bias, scheme)?,
            (Placement::Candle(device), None) => {
                let bias = bias.map(|b| b.to_device(device)).transpose()?;
                QLinear::new(&weight.to_device(device)?, bias.as_ref(), scheme)?
            }
            (Placement::Candle(device), Some((weight_scheme, _))) => {
                QLinear::on_candle(&QTensor::quantize(weight, weight_scheme)?, bias, scheme, device)?
            }
        };
        Ok(layer)
    }

    /// Layer `name` (possibly fused from `parts`) quantized from calibration: smoothed with the factors its input
    /// ranges and weight give, when the plan smooths, and given its activation step, when static. A recording
    /// loader records each part's codes, input scale and step.
    fn calibrated(
        &self,
        name: &str,
        weight: &Tensor,
        bias: Option<&Tensor>,
        scheme: LayerScheme,
        parts: &[(String, usize)],
    ) -> Result<QLinear> {
        let ranges = self.input_ranges.as_ref().context("calibration ranges are given")?;
        let first = expand_braces(name).swap_remove(0);
        let range = ranges.get(&first).with_context(|| format!("no input statistics for {first} to calibrate it"))?;
        let (weight, input_scale) = match self.smooth.filter(|_| self.smooths(scheme)) {
            Some(alpha) => {
                let factors = qlayers::layers::smoothing_factors(range, weight, alpha)?;
                let input_scale: Vec<f32> = factors.iter().map(|f| 1.0 / f).collect();
                (qlayers::layers::smoothed_weight(weight, &factors)?, Some(input_scale))
            }
            None => (weight.clone(), None),
        };
        let step = (scheme == LayerScheme::W8A8Static).then(|| static_step(range, input_scale.as_deref()));
        if self.recorded.is_some() {
            let (weight_scheme, _) =
                scheme.weight_scheme(range.len())?.context("calibration applies to integer schemes")?;
            let scale = input_scale.as_deref().map(|s| Tensor::new(s, &Device::Cpu)).transpose()?;
            let mut start = 0;
            // Every row is quantized on its own (W8A8 weights have a scale per row, or per row and block), so each
            // part's codes are its rows of the fused layer's.
            for (part, rows) in parts {
                let codes = QTensor::quantize(&weight.narrow(0, start, *rows)?, weight_scheme)?;
                self.record(&format!("{part}.weight"), Stored::Quantized(codes));
                if let Some(scale) = &scale {
                    self.record(&format!("{part}.input_scale"), Stored::Float(scale.clone()));
                }
                if let Some(step) = step {
                    self.record(&format!("{part}.activation_step"), Stored::Float(Tensor::new(&[step], &Device::Cpu)?));
                }
                start += rows;
            }
        }
        let mut layer = self.placed_layer(&weight, bias, scheme)?;
        if let Some(scale) = input_scale {
            layer = layer.with_input_scale(scale)?;
        }
        if let Some(step) = step {
            layer = layer.with_activation_step(step)?;
        }
        Ok(layer)
    }

    /// The Linear layer `name` (with a bias as `bias` says), read and quantized per its scheme.
    pub fn linear(&self, name: &str, in_dim: usize, out_dim: usize, bias: Bias) -> Result<QLinear> {
        let params = self.linear_params(name, in_dim, out_dim, bias)?;
        self.build_linear(name, params)
    }

    /// The shape of float tensor `name` (or the tensor it is an alias of), when the checkpoint holds it as floats
    /// and the store can tell without reading it (a candle `VarBuilder` cannot; quantized layers have codes instead).
    pub fn dims(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.dims(self.resolve(name))
    }

    /// Checks that the model built from this loader read every tensor of the checkpoint, but those matching one of
    /// the globs `unused` (what its architecture knows it does not need: a pooler, the MLM head, `position_ids`
    /// buffers). Any other tensor is an error naming the first few: a renamed or stray tensor means the file is
    /// not the model its config describes. A candle `VarBuilder`, which cannot list its tensors, is not checked.
    pub fn check_all_read(&self, unused: &[&str]) -> Result<()> {
        let Some(mut names) = self.tensors.names() else { return Ok(()) };
        let read = lock(&self.read);
        names.retain(|n| !read.contains(n) && !unused.iter().any(|p| crate::plan::glob_match(p, n)));
        names.sort();
        if names.is_empty() {
            return Ok(());
        }
        let more = match names.len().saturating_sub(LISTED_NAMES) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        let (plural, pronoun) = if names.len() == 1 { ("", "it") } else { ("s", "them") };
        let listed = names.iter().take(LISTED_NAMES).cloned().collect::<Vec<_>>().join(", ");
        bail!("unexpected tensor{plural} {listed}{more} in the checkpoint: the model does not read {pronoun}")
    }

    /// The quantized checkpoint's tensors, noting each one read.
    fn tracked(&self) -> Result<TrackedTensors<'_>> {
        Ok(TrackedTensors::new(self.tensors.safetensors()?, &self.read))
    }

    /// The name and scheme of every Linear layer read so far (fused layers by their own names), in read order.
    pub fn layer_schemes(&self) -> Vec<(String, LayerScheme)> {
        lock(&self.schemes).clone()
    }

    /// What every layer built so far became, in build order.
    pub fn report(&self) -> Vec<LayerReport> {
        lock(&self.report).clone()
    }

    /// A GGUF file's own codes for layer `name`, when `scheme` holds its type exactly (see [`GgufWeights::native`]).
    fn native(&self, name: &str, scheme: LayerScheme, shape: [usize; 2]) -> Result<Option<QTensor>> {
        let Store::Gguf(gguf) = &self.tensors else { return Ok(None) };
        let stored = self.resolve(&format!("{name}.weight")).to_string();
        let Some(q) = gguf.native(&stored, scheme)? else { return Ok(None) };
        lock(&self.read).insert(self.tensors.stored_name(&stored));
        if q.shape() != shape {
            bail!("weight {name} has shape {:?}, expected {shape:?}", q.shape());
        }
        Ok(Some(q))
    }

    fn read_float(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some(part) = self.row_part(name) {
            let whole_shape: Vec<usize> = [part.whole_rows].into_iter().chain(shape.iter().skip(1).copied()).collect();
            let whole = self.read_float(&part.whole, &whole_shape)?;
            return Ok(whole.narrow(0, part.rows.start, part.rows.len())?.contiguous()?);
        }
        let stored = self.resolve(name);
        let tensor = self.tensors.load(stored, shape)?;
        lock(&self.read).insert(self.tensors.stored_name(stored));
        if tensor.dims() != shape {
            bail!("weight {name} has shape {:?}, expected {shape:?}", tensor.dims());
        }
        if !tensor.dtype().is_float() {
            bail!("weight {name} is {:?}, expected floats", tensor.dtype());
        }
        Ok(tensor.to_dtype(DType::F32)?)
    }

    fn record(&self, name: &str, stored: Stored) {
        if let Some(recorded) = &self.recorded {
            lock(recorded).push((name.to_string(), stored));
        }
    }
}

/// A tensor read as rows of another: a part of a fused layer split per the plan.
#[derive(Debug, Clone)]
struct RowPart {
    /// The part's name (`model.layers.0.self_attn.q_proj.weight`).
    name: String,
    /// The whole's name (`model.layers.0.self_attn.qkv_proj.weight`).
    whole: String,
    /// The part's rows of the whole.
    rows: std::ops::Range<usize>,
    /// The whole's rows.
    whole_rows: usize,
    /// The scheme the part runs: the plan's rule for it, or the whole's.
    scheme: LayerScheme,
}

/// The layer names a fused layer's name stands for: `prefix{a,b,c}suffix` is three layers.
pub(crate) fn expand_braces(name: &str) -> Vec<String> {
    match (name.find('{'), name.find('}')) {
        (Some(open), Some(close)) if open < close => name[open + 1..close]
            .split(',')
            .map(|part| format!("{}{part}{}", &name[..open], &name[close + 1..]))
            .collect(),
        _ => vec![name.to_string()],
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks that a safetensors file is complete before it is mapped: a truncated or corrupt file gets a clear error
/// (with the file's length and the length its header needs, when that is what is wrong) instead of a fault when a
/// tensor past its end is read.
fn safetensors_header_ok(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: read-only map of a model file.
    let data = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
    safetensors::SafeTensors::deserialize(&data).map(|_| ()).map_err(|e| {
        let why = safetensors_length_error(&data).unwrap_or_else(|| e.to_string());
        anyhow::anyhow!("{} is not a valid safetensors file: {why}", path.display())
    })
}

/// Bytes of a safetensors file's header length field.
const SAFETENSORS_LENGTH_FIELD: u64 = 8;

/// What is wrong with the length of a safetensors file `data`, if its length is what is wrong: shorter than its
/// header length field, than the header that field announces, or than (or not as long as) the tensors its header
/// lists.
fn safetensors_length_error(data: &[u8]) -> Option<String> {
    let len = data.len() as u64;
    let Some(field) = data.get(..SAFETENSORS_LENGTH_FIELD as usize) else {
        return Some(format!("it is {len} bytes; a safetensors file needs at least {SAFETENSORS_LENGTH_FIELD}"));
    };
    let header_len = u64::from_le_bytes(field.try_into().ok()?);
    let header_end = SAFETENSORS_LENGTH_FIELD.saturating_add(header_len);
    if header_end > len {
        return Some(format!("it is {len} bytes; its header needs at least {header_end}"));
    }
    let header: serde_json::Value =
        serde_json::from_slice(&data[SAFETENSORS_LENGTH_FIELD as usize..header_end as usize]).ok()?;
    let data_end = header
        .as_object()?
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, info)| info.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let needed = header_end.saturating_add(data_end);
    (needed != len).then(|| format!("it is {len} bytes; its header describes {needed}"))
}

/// The static activation step of a layer whose inputs reached `range` (per channel) on calibration text: the
/// largest input the quantizer sees (times `input_scale`, when smoothed) over 127, so that no calibration value
/// clamps. A layer that saw only zeros gets step 1.
fn static_step(range: &[f32], input_scale: Option<&[f32]>) -> f32 {
    let largest = match input_scale {
        Some(scale) => range.iter().zip(scale).map(|(r, s)| r * s).fold(0f32, f32::max),
        None => range.iter().copied().fold(0f32, f32::max),
    };
    match largest.is_finite() && largest > 0.0 {
        true => largest / 127.0,
        false => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters of a `[rows, 64]` layer quantized under `scheme`, from weights that depend on `seed`.
    fn params(scheme: &str, rows: usize, seed: f32) -> LinearParams {
        let scheme: LayerScheme = scheme.parse().unwrap();
        let values: Vec<f32> = (0..rows * 64).map(|i| (i as f32 * seed).sin() * (1.0 + (i % 5) as f32)).collect();
        let w = Tensor::from_vec(values, (rows, 64), &Device::Cpu).unwrap();
        let (weight_scheme, _) = scheme.weight_scheme(64).unwrap().unwrap();
        LinearParams {
            scheme,
            weight: LinearWeight::Quantized(QTensor::quantize(&w, weight_scheme).unwrap()),
            bias: None,
            input_scale: None,
            activation_step: None,
            parts: vec![("layer".into(), rows)],
        }
    }

    #[test]
    fn layers_stack_only_with_one_scheme_and_one_codebook() {
        let nf4 = vec![params("nf4-g64", 8, 0.3), params("nf4-g64", 4, 0.7)];
        assert!(LinearParams::stackable(&nf4));
        let stacked = LinearParams::concat_rows(nf4).unwrap();
        let LinearWeight::Quantized(q) = &stacked.weight else { panic!("quantized") };
        assert_eq!(q.shape(), [12, 64]);
        // k-means learns a codebook per layer: different weights, different codebooks, separate matmuls.
        let kmeans = vec![params("kmeans-g64", 8, 0.3), params("kmeans-g64", 4, 0.7)];
        assert!(!LinearParams::stackable(&kmeans));
        assert!(LinearParams::concat_rows(kmeans).unwrap_err().to_string().contains("different codebooks"));
        assert!(!LinearParams::stackable(&[params("int4-g64", 8, 0.3), params("nf4-g64", 8, 0.3)]));
    }

    #[test]
    fn fused_names_expand_to_their_layers() {
        assert_eq!(expand_braces("l.0.self.{query,key,value}"), ["l.0.self.query", "l.0.self.key", "l.0.self.value"]);
        assert_eq!(expand_braces("m.0.{gate,up}_proj"), ["m.0.gate_proj", "m.0.up_proj"]);
        assert_eq!(expand_braces("lm_head"), ["lm_head"]);
    }
}
