//! A GGUF file of a Llama-family decoder (llama.cpp's architectures `llama`, `qwen2`, `qwen3`, `phi3`) read as if
//! it were a Hugging Face checkpoint: tensors by their HF names (`model.layers.0.self_attn.q_proj.weight`),
//! dequantized to f32, with the Q and K projections' rows of the `llama` architecture put back in the HF order that
//! llama.cpp's converter permutes away (the others keep HF's rotary halves). A layer whose plan scheme holds the file's own type exactly
//! (Q4_1, Q4_0, Q8_0) keeps the file's codes and scales instead ([`GgufWeights::native`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use qlayers::{Bits, Granularity, LayerScheme, LinearScheme, QTensor, Scheme};

/// The llama.cpp architectures read here: their metadata keys start with the name.
pub const GGUF_ARCHITECTURES: [&str; 6] = ["llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"];

/// An open GGUF file of a Llama-family model.
pub struct GgufWeights {
    path: PathBuf,
    content: Content,
    file: Mutex<std::fs::File>,
    /// `general.architecture`, one of [`GGUF_ARCHITECTURES`].
    arch: String,
    heads: usize,
    kv_heads: usize,
}

impl GgufWeights {
    /// Reads the header and metadata of `path`; a file that is not GGUF, not a Llama, or shorter than its header
    /// says (a truncated download) is an error that says so.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
        let content = Content::read(&mut file).map_err(|e| header_error(path, len, e))?;
        check_extent(path, len, &content)?;
        let arch = metadata_str(&content.metadata, "general.architecture")?.to_string();
        if !GGUF_ARCHITECTURES.contains(&arch.as_str()) {
            bail!("the GGUF file holds a {arch:?} model; the architectures read are {}", GGUF_ARCHITECTURES.join(", "));
        }
        let count = |key: &str| -> Result<usize> {
            let key = format!("{arch}.{key}");
            let value = content.metadata.get(&key).with_context(|| format!("the GGUF file has no {key}"))?;
            Ok(value.to_u32()? as usize)
        };
        let heads = count("attention.head_count")?;
        let kv_heads = count("attention.head_count_kv").or_else(|_| count("attention.head_count"))?;
        Ok(Self { path: path.to_path_buf(), content, file: Mutex::new(file), arch, heads, kv_heads })
    }

    /// The llama.cpp architecture, `general.architecture` (its metadata keys start with it).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The file's metadata (`general.*`, `llama.*`, `tokenizer.ggml.*`).
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// Whether the output matrix is the embedding matrix (the file has no `output.weight`).
    pub fn ties_embeddings(&self) -> bool {
        !self.content.tensor_infos.contains_key("output.weight")
    }

    /// Whether the file holds the tensor of HF name `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.stored_name(name).is_some()
    }

    /// The name of every tensor of the file (GGUF names: `blk.0.attn_q.weight`).
    pub fn names(&self) -> Vec<String> {
        self.content.tensor_infos.keys().cloned().collect()
    }

    /// The shape of the tensor of HF name `name`, in HF order (`[rows, cols]`), if the file has it.
    pub fn dims(&self, name: &str) -> Option<Vec<usize>> {
        Some(self.content.tensor_infos.get(&self.stored_name(name)?)?.shape.dims().to_vec())
    }

    /// The GGUF name of the tensor that holds HF tensor `name`, if the file has it: `lm_head.weight` is the
    /// embedding matrix when the file ties them (it has no `output.weight`).
    pub fn stored_name(&self, name: &str) -> Option<String> {
        let gguf = gguf_name(name, self.arch.starts_with("gemma"))?;
        match self.content.tensor_infos.contains_key(&gguf) {
            true => Some(gguf),
            false if name == "lm_head.weight" => {
                Some("token_embd.weight".to_string()).filter(|e| self.content.tensor_infos.contains_key(e))
            }
            false => None,
        }
    }

    /// The heads of a rotary projection (`q_proj`, `k_proj`) whose rows llama.cpp's converter permutes (for its
    /// `llama` architecture only).
    fn rotary_heads(&self, name: &str) -> Option<usize> {
        if self.arch != "llama" {
            return None;
        }
        match name {
            n if n.ends_with("self_attn.q_proj.weight") => Some(self.heads),
            n if n.ends_with("self_attn.k_proj.weight") => Some(self.kv_heads),
            _ => None,
        }
    }

    /// The stored (possibly quantized) tensor `gguf`.
    fn read(&self, gguf: &str) -> Result<candle_core::quantized::QTensor> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        self.content
            .tensor(&mut *file, gguf, &Device::Cpu)
            .with_context(|| format!("GGUF tensor {gguf} of {}", self.path.display()))
    }

    /// The codes of weight `name` as the file stores them, when `scheme` holds the file's type exactly: Q4_1 as
    /// min-max int4 in groups of 32 (`int4-g32-asym`), Q4_0 as symmetric int4 in groups of 32 (`int4-g32`, codes
    /// `q - 8`, scales with their sign: llama.cpp's Q4_0 divides by the signed extreme, `d = max / -8`), Q8_0 as
    /// symmetric int8 in groups of 32 (`int8-g32`); `None` for any other pairing. Rows are put in HF order as
    /// [`GgufWeights::tensor`] does.
    pub fn native(&self, name: &str, scheme: LayerScheme) -> Result<Option<QTensor>> {
        let Some(gguf) = self.stored_name(name) else { return Ok(None) };
        let dtype = self.content.tensor_infos[&gguf].ggml_dtype;
        let Some(block) = NativeBlock::of(dtype).filter(|b| b.scheme() == scheme) else { return Ok(None) };
        let bits = block.bits();
        let raw = self.read(&gguf)?;
        let (rows, cols) = raw.shape().dims2()?;
        let bytes = raw.data()?;
        let mut codes = Vec::with_capacity(rows * cols);
        let (mut scales, mut mins) = (Vec::with_capacity(rows * cols / 32), Vec::new());
        for b in bytes.chunks_exact(block.bytes()) {
            block.decode(b, &mut codes, &mut scales, &mut mins);
        }
        if let Some(heads) = self.rotary_heads(name) {
            let order = hf_row_order(rows, heads)?;
            codes = gather_rows(&codes, cols, &order);
            scales = gather_rows(&scales, cols / 32, &order);
            mins = if mins.is_empty() { mins } else { gather_rows(&mins, cols / 32, &order) };
        }
        let packed = qlayers::pack::pack(&codes, bits)?;
        let q = match block {
            NativeBlock::Q4_1 => QTensor::from_min_max_parts(vec![rows, cols], bits, 32, scales, mins, packed),
            _ => {
                let scheme = Scheme::Linear(LinearScheme::symmetric(bits, Granularity::PerGroup { size: 32 }));
                QTensor::from_parts(vec![rows, cols], scheme, scales.clone(), vec![0; scales.len()], packed)
            }
        };
        Ok(Some(q.with_context(|| format!("the {dtype:?} blocks of {gguf}"))?))
    }

    /// The scheme that holds the stored blocks of the tensor of HF name `name` exactly (see [`GgufWeights::native`]):
    /// `int8-g32` for Q8_0, `int4-g32` for Q4_0, `int4-g32-asym` for Q4_1; `None` for any other type, and for a
    /// tensor the file lacks.
    pub fn native_scheme(&self, name: &str) -> Option<LayerScheme> {
        let gguf = self.stored_name(name)?;
        NativeBlock::of(self.content.tensor_infos[&gguf].ggml_dtype).map(NativeBlock::scheme)
    }

    /// The 1-D tensor the file names `gguf` (a GGUF name, for the tensors no HF name maps to: LongRoPE's
    /// `rope_factors_long.weight`) in f32, if the file has it.
    pub fn vector(&self, gguf: &str) -> Result<Option<Vec<f32>>> {
        if !self.content.tensor_infos.contains_key(gguf) {
            return Ok(None);
        }
        let tensor = self.read(gguf)?.dequantize(&Device::Cpu)?;
        Ok(Some(tensor.flatten_all()?.to_vec1()?))
    }

    /// The tensor of HF name `name` in f32, in HF layout. `lm_head.weight` is the embedding matrix when the file
    /// ties them (it has no `output.weight`).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let gguf = self.stored_name(name).with_context(|| format!("the GGUF file has no tensor for {name}"))?;
        let tensor = self.read(&gguf)?.dequantize(&Device::Cpu)?;
        match self.rotary_heads(name) {
            Some(heads) => unpermute_rotary_rows(&tensor, heads),
            None => Ok(tensor),
        }
    }
}

/// The fixed start of a GGUF file: magic, version, tensor count and metadata count.
const GGUF_PREAMBLE: u64 = 24;

/// The error of a GGUF header that does not read, with the file's length when it is cut short.
fn header_error(path: &Path, len: u64, error: candle_core::Error) -> anyhow::Error {
    let file = path.display();
    let eof = matches!(&error, candle_core::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof);
    if len < GGUF_PREAMBLE {
        anyhow::anyhow!(
            "{file} is not a valid GGUF file: it is {len} bytes; a GGUF header needs at least {GGUF_PREAMBLE}"
        )
    } else if eof {
        anyhow::anyhow!(
            "{file} is not a valid GGUF file: it is {len} bytes and ends inside its header, which needs more"
        )
    } else {
        anyhow::anyhow!("{file} is not a valid GGUF file ({len} bytes): {error}")
    }
}

/// Checks that every tensor the header lists lies inside the file: a truncated file is an error that says how long
/// it is and how long its header says it is.
fn check_extent(path: &Path, len: u64, content: &Content) -> Result<()> {
    let mut needed = content.tensor_data_offset;
    for (name, info) in &content.tensor_infos {
        let bytes = tensor_bytes(info).with_context(|| {
            let (dims, dtype) = (info.shape.dims(), info.ggml_dtype);
            format!(
                "{} is not a valid GGUF file: tensor {name} of shape {dims:?} does not fill {dtype:?} blocks",
                path.display()
            )
        })?;
        let end = content.tensor_data_offset.checked_add(info.offset).and_then(|start| start.checked_add(bytes));
        needed = needed.max(end.with_context(|| format!("{}: tensor {name} ends past 2^64 bytes", path.display()))?);
    }
    if needed > len {
        bail!("{} is not a valid GGUF file: it is {len} bytes; its header needs at least {needed}", path.display());
    }
    Ok(())
}

/// Bytes of a tensor's data, or `None` when its shape does not fit its blocks or overflows.
fn tensor_bytes(info: &candle_core::quantized::gguf_file::TensorInfo) -> Option<u64> {
    let elements = info.shape.dims().iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64))?;
    let block = info.ggml_dtype.block_size() as u64;
    if !elements.is_multiple_of(block) {
        return None;
    }
    (elements / block).checked_mul(info.ggml_dtype.type_size() as u64)
}

/// The GGUF name of an HF tensor name of a Llama-family model (weights and biases); `gemma` for Gemma 2 and 3,
/// whose `post_attention_layernorm` norms the attention output (llama.cpp's `post_attention_norm`) and whose
/// feed-forward input norm is `pre_feedforward_layernorm`.
fn gguf_name(name: &str, gemma: bool) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let tail = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" if gemma => "post_attention_norm",
        "pre_feedforward_layernorm" if gemma => "ffn_norm",
        "post_feedforward_layernorm" if gemma => "post_ffw_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        // Phi-3's gate and up rows sit together in llama.cpp's `ffn_up`.
        "mlp.up_proj" | "mlp.gate_up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{tail}.{kind}"))
}

/// ggml block types our schemes hold exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NativeBlock {
    /// f16 scale, f16 minimum, 16 bytes of 4-bit codes: `x = q * d + m`.
    Q4_1,
    /// f16 scale, 16 bytes of 4-bit codes: `x = (q - 8) * d`.
    Q4_0,
    /// f16 scale, 32 signed bytes: `x = q * d`.
    Q8_0,
}

impl NativeBlock {
    /// The block form of ggml type `dtype`, if it is one of these.
    fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            GgmlDType::Q4_0 => Some(Self::Q4_0),
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            _ => None,
        }
    }

    /// The layer scheme that holds these blocks exactly.
    fn scheme(self) -> LayerScheme {
        LayerScheme::Weight { bits: self.bits(), group: 32, symmetric: self != Self::Q4_1 }
    }

    /// The width of the codes.
    fn bits(self) -> Bits {
        match self {
            Self::Q4_1 | Self::Q4_0 => Bits::B4,
            Self::Q8_0 => Bits::B8,
        }
    }

    /// Bytes of one block of 32 values.
    fn bytes(self) -> usize {
        match self {
            Self::Q4_1 => 20,
            Self::Q4_0 => 18,
            Self::Q8_0 => 34,
        }
    }

    /// Appends one block's 32 codes (two's complement bytes for signed codes) and its parameters. ggml's 4-bit
    /// blocks hold value `j` in the low nibble of byte `j` and value `j + 16` in its high nibble.
    /// The scale of block `b`: its first two bytes, an f16, in every form.
    fn scale(b: &[u8]) -> f32 {
        half::f16::from_le_bytes([b[0], b[1]]).to_f32()
    }

    fn decode(self, b: &[u8], codes: &mut Vec<u8>, scales: &mut Vec<f32>, mins: &mut Vec<f32>) {
        let half = |at: usize| half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
        scales.push(Self::scale(b));
        match self {
            Self::Q4_1 => {
                mins.push(half(2));
                codes.extend(b[4..20].iter().map(|q| q & 0x0F));
                codes.extend(b[4..20].iter().map(|q| q >> 4));
            }
            Self::Q4_0 => {
                codes.extend(b[2..18].iter().map(|q| (q & 0x0F).wrapping_sub(8) & 0x0F));
                codes.extend(b[2..18].iter().map(|q| (q >> 4).wrapping_sub(8) & 0x0F));
            }
            Self::Q8_0 => codes.extend_from_slice(&b[2..34]),
        }
    }
}

/// For each HF row of a rotary projection of `rows` rows and `heads` heads, the GGUF row it is stored in.
fn hf_row_order(rows: usize, heads: usize) -> Result<Vec<usize>> {
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        bail!("a rotary projection of {rows} rows cannot hold {heads} heads");
    }
    let d = rows / heads;
    Ok((0..rows).map(|r| (r / d) * d + 2 * (r % d % (d / 2)) + (r % d) / (d / 2)).collect())
}

/// The rows (`width` values each) of `values` in `order`.
fn gather_rows<T: Copy>(values: &[T], width: usize, order: &[usize]) -> Vec<T> {
    order.iter().flat_map(|&r| values[r * width..(r + 1) * width].iter().copied()).collect()
}

/// GGUF converters store each head's Q/K rows with the two rotary halves interleaved (row `2i + half` holds HF row
/// `half * d / 2 + i`); this puts them back in HF order.
fn unpermute_rotary_rows(weight: &Tensor, heads: usize) -> Result<Tensor> {
    let order: Vec<u32> = hf_row_order(weight.dims2()?.0, heads)?.into_iter().map(|r| r as u32).collect();
    Ok(weight.index_select(&Tensor::new(order.as_slice(), weight.device())?, 0)?)
}

/// A string value of the metadata.
pub(crate) fn metadata_str<'a>(metadata: &'a HashMap<String, Value>, key: &str) -> Result<&'a str> {
    match metadata.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => bail!("GGUF metadata {key} is {other:?}, expected a string"),
        None => bail!("the GGUF file has no {key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF file holding one Q4_0 matrix of `values` (rows of 64) as `blk.0.ffn_down.weight`.
    fn q4_0_file(values: &[f32]) -> (PathBuf, GgufWeights) {
        use candle_core::quantized::gguf_file;
        let path = std::env::temp_dir().join(format!("qinfer-q4_0-{}.gguf", std::process::id()));
        let weight = Tensor::from_slice(values, (values.len() / 64, 64), &Device::Cpu).unwrap();
        let tensor = candle_core::quantized::QTensor::quantize(&weight, GgmlDType::Q4_0).unwrap();
        let (arch, heads) = (Value::String("llama".into()), Value::U32(1));
        let metadata = [("general.architecture", &arch), ("llama.attention.head_count", &heads)];
        gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &metadata, &[("blk.0.ffn_down.weight", &tensor)])
            .unwrap();
        let weights = GgufWeights::open(&path).unwrap();
        (path, weights)
    }

    #[test]
    fn q4_0_blocks_keep_their_codes_whatever_the_sign_of_their_scales() {
        let int4 = LayerScheme::weight(Bits::B4);
        let name = "model.layers.0.mlp.down_proj.weight";
        // ggml divides by the signed extreme: a negative extreme gives a positive scale, a positive one a negative
        // scale, and an all-zero block a zero one. One row has the first two blocks, the other the third.
        let negative_extreme = (0..32).map(|i| 1.0 - i as f32 / 8.0);
        let positive_extreme = (0..32).map(|i| i as f32 / 8.0 - 1.0);
        let values: Vec<f32> = negative_extreme.chain(positive_extreme).chain([0.0; 32]).chain([0.0; 32]).collect();
        let (path, weights) = q4_0_file(&values);
        let kept = weights.native(name, int4).unwrap().expect("the file's codes");
        let scales = kept.scales();
        assert!(scales[0] > 0.0 && scales[1] < 0.0 && scales[2] == 0.0, "{scales:?}");
        let dequantized = weights.tensor(name).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&kept.dequantize(&Device::Cpu).unwrap()), flat(&dequantized));
        // The kernels take the signs too: the layer's product is the float product of the file's values.
        let layer = qlayers::QLinear::from_qtensor(&kept, None, int4, 32).unwrap();
        let x: Vec<f32> = (0..64).map(|i| ((i * 7) % 11) as f32 / 4.0 - 1.0).collect();
        let y = layer.forward_f32(&x, 1).unwrap();
        let w = flat(&dequantized);
        for (row, &got) in y.iter().enumerate() {
            let want: f32 = w[row * 64..][..64].iter().zip(&x).map(|(w, x)| w * x).sum();
            assert!((got - want).abs() <= 1e-2 * want.abs().max(1.0), "row {row}: {got} against {want}");
        }
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn names_map_to_gguf() {
        assert_eq!(gguf_name("model.layers.3.self_attn.k_proj.weight", false).unwrap(), "blk.3.attn_k.weight");
        assert_eq!(gguf_name("model.layers.0.mlp.down_proj.weight", false).unwrap(), "blk.0.ffn_down.weight");
        assert_eq!(gguf_name("model.layers.1.self_attn.q_proj.bias", false).unwrap(), "blk.1.attn_q.bias");
        assert_eq!(gguf_name("model.layers.0.self_attn.k_norm.weight", false).unwrap(), "blk.0.attn_k_norm.weight");
        assert_eq!(gguf_name("model.layers.2.self_attn.qkv_proj.weight", false).unwrap(), "blk.2.attn_qkv.weight");
        assert_eq!(gguf_name("model.layers.2.mlp.gate_up_proj.weight", false).unwrap(), "blk.2.ffn_up.weight");
        let gemma = |name: &str| gguf_name(&format!("model.layers.1.{name}.weight"), true).unwrap();
        assert_eq!(gemma("post_attention_layernorm"), "blk.1.post_attention_norm.weight");
        assert_eq!(gemma("pre_feedforward_layernorm"), "blk.1.ffn_norm.weight");
        assert_eq!(gemma("post_feedforward_layernorm"), "blk.1.post_ffw_norm.weight");
        assert_eq!(gguf_name("model.layers.1.pre_feedforward_layernorm.weight", false), None);
        assert_eq!(gguf_name("model.layers.2.mlp.up_proj.scale", false), None);
        assert_eq!(gguf_name("model.norm.weight", false).unwrap(), "output_norm.weight");
        assert!(gguf_name("model.layers.x.mlp.down_proj.weight", false).is_none());
        assert!(gguf_name("encoder.layer.0.attention.self.query.weight", false).is_none());
    }

    #[test]
    fn rotary_rows_go_back_to_hf_order() {
        // One head of width 4 (halves of 2), one column: GGUF rows [h0, h2, h1, h3] -> HF [h0, h1, h2, h3].
        let w = Tensor::new(&[[0f32], [2.0], [1.0], [3.0], [4.0], [6.0], [5.0], [7.0]], &Device::Cpu).unwrap();
        let hf = unpermute_rotary_rows(&w, 2).unwrap();
        assert_eq!(hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 1., 2., 3., 4., 5., 6., 7.]);
    }
}
