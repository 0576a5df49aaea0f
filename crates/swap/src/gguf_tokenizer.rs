//! The tokenizer of a GGUF file, built from its `tokenizer.ggml.*` metadata, so that a GGUF model needs no other
//! file: byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the file's vocabulary and merges, control tokens
//! (`token_type` 3, such as `<|im_start|>`) matched whole, and the pre-tokenizer `tokenizer.ggml.pre` names.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// `token_type` of control tokens in GGUF (llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`).
const CONTROL: i32 = 3;

/// Builds the tokenizer described by a GGUF file's metadata.
pub fn tokenizer_from_gguf(metadata: &HashMap<String, Value>) -> Result<Tokenizer> {
    let get = |key: &str| metadata.get(key).with_context(|| format!("the GGUF file has no {key}"));
    let model = get("tokenizer.ggml.model")?.to_string()?;
    if model != "gpt2" {
        bail!("tokenizer.ggml.model is {model:?}; only byte-level BPE (\"gpt2\") is read");
    }
    let tokens = strings(get("tokenizer.ggml.tokens")?, "tokenizer.ggml.tokens")?;
    let merges = strings(get("tokenizer.ggml.merges")?, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .with_context(|| format!("merge #{i} {m:?} is not two tokens separated by a space"))
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow::anyhow!("the GGUF vocabulary and merges do not make a BPE model: {e}"))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer(metadata)?));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    if let Some(types) = metadata.get("tokenizer.ggml.token_type") {
        let types = types.to_vec()?;
        let control: Vec<AddedToken> = types
            .iter()
            .zip(&tokens)
            .filter(|(t, _)| t.to_i32().is_ok_and(|t| t == CONTROL))
            .map(|(_, token)| AddedToken::from(token.clone(), true))
            .collect();
        tokenizer.add_special_tokens(control).map_err(|e| anyhow::anyhow!("control tokens: {e}"))?;
    }
    Ok(tokenizer)
}

/// Qwen2's (and Qwen2.5's, Qwen3's) split before the byte-level mapping, as its `tokenizer.json` writes it: like
/// GPT-4's, with digits one at a time.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer of `tokenizer.ggml.pre`: GPT-2's byte-level split, after splitting digits one by one for
/// the models that do (`smollm`), or after Qwen2's split (`qwen2`).
fn pre_tokenizer(metadata: &HashMap<String, Value>) -> Result<PreTokenizerWrapper> {
    let byte_level = ByteLevel::new(false, true, true);
    let pre = metadata.get("tokenizer.ggml.pre").map(|v| v.to_string().cloned()).transpose()?;
    Ok(match pre.as_deref() {
        Some("smollm") => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        Some("qwen2") => {
            let split = Split::new(SplitPattern::Regex(QWEN2_SPLIT.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| anyhow::anyhow!("the qwen2 split does not compile: {e}"))?;
            Sequence::new(vec![split.into(), ByteLevel::new(false, false, false).into()]).into()
        }
        None | Some("default") | Some("gpt2") => byte_level.into(),
        Some(other) => bail!("tokenizer.ggml.pre {other:?} is not supported (smollm, qwen2, gpt2 and default are)"),
    })
}

/// The strings of a GGUF string array.
fn strings(value: &Value, key: &str) -> Result<Vec<String>> {
    value
        .to_vec()
        .with_context(|| format!("{key} is not an array"))?
        .iter()
        .map(|v| v.to_string().cloned().with_context(|| format!("{key} holds a value that is not a string")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::PreTokenizer;

    #[test]
    fn qwen2_splits_words_single_digits_contractions_and_newlines() {
        let pre = Value::String("qwen2".into());
        let metadata = HashMap::from([("tokenizer.ggml.pre".to_string(), pre)]);
        let mut text = tokenizers::PreTokenizedString::from("Hello world 123 it's\n\nok");
        pre_tokenizer(&metadata).unwrap().pre_tokenize(&mut text).unwrap();
        let pieces: Vec<String> = text
            .get_splits(tokenizers::OffsetReferential::Original, tokenizers::OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect();
        assert_eq!(pieces, ["Hello", "Ġworld", "Ġ", "1", "2", "3", "Ġit", "'s", "ĊĊ", "ok"]);
    }
}
