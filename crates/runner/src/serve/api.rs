//! The request and response bodies of `POST /v1/embeddings` (OpenAI) and `POST /embed` (text-embeddings-inference),
//! and the checks that turn a request's inputs into token sequences for the model.

use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::error::ApiError;

/// An OpenAI embeddings request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// A string, a list of strings, a list of token ids or a list of token-id lists.
    pub input: Value,
    /// The model's name (see `GET /info`).
    pub model: String,
    /// `float` (the default) or `base64` (little-endian f32 bytes).
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// Keep the first `dimensions` values of each embedding (normalised again when the model normalises).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// OpenAI's end-user id: accepted so that clients sending it work; not used.
    #[serde(default, rename = "user")]
    _user: Option<String>,
    /// The model's prompt of this name before each text (see `GET /info`'s `prompts`).
    #[serde(default)]
    pub prompt_name: Option<String>,
}

/// How `/v1/embeddings` writes each embedding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// A base64 string of the little-endian f32 bytes.
    Base64,
}

/// A text-embeddings-inference `/embed` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// A string, a list of strings, a list of token ids or a list of token-id lists.
    pub inputs: Value,
    /// L2-normalise the embeddings (default true).
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Cut inputs longer than the model's maximum instead of refusing them (default false).
    #[serde(default)]
    pub truncate: Option<bool>,
    /// The model's prompt of this name before each text (see `GET /info`'s `prompts`).
    #[serde(default)]
    pub prompt_name: Option<String>,
}

/// One input: text to tokenize, or token ids (special tokens included, as the tokenizer adds them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text.
    Text(String),
    /// Token ids.
    Ids(Vec<u32>),
}

/// What one request may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Inputs per request.
    pub max_inputs: usize,
    /// Tokens per input (the model's `max_seq_length`).
    pub max_input_tokens: usize,
    /// Token ids must be below this.
    pub vocab_size: usize,
    /// Tokens per request, all inputs together.
    pub max_request_tokens: usize,
}

impl Limits {
    /// `tokens`, or a 413 when a request's inputs hold more than the budget together.
    pub fn check_request_tokens(&self, tokens: usize) -> Result<usize, ApiError> {
        if tokens > self.max_request_tokens {
            return Err(ApiError::too_large(
                "too_many_tokens",
                format!(
                    "the request's inputs hold {tokens} tokens together; this server takes at most {} per request: \
                     split it",
                    self.max_request_tokens
                ),
            ));
        }
        Ok(tokens)
    }
}

/// Parses a JSON body into `T`: the bytes must be UTF-8, the JSON well formed with no key twice in an object and
/// no lone surrogate escape, the fields known and typed right.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_utf8",
            format!("the request body is not UTF-8 text (invalid byte at offset {})", e.valid_up_to()),
        )
    })?;
    let value = serde_json::from_str::<UniqueKeys>(text).map_err(|e| json_error(text, e))?.0;
    if !value.is_object() {
        return Err(ApiError::bad_request("invalid_request", "the request body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = match e.path().to_string().as_str() {
            "." => format!("invalid request: {}", e.inner()),
            path => format!("invalid request: `{path}`: {}", e.inner()),
        };
        ApiError::bad_request("invalid_request", message)
    })
}

/// A JSON value read with every object's keys checked to be distinct (serde_json keeps the last of a repeated
/// key, which would let a request say two things at once).
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!("the key `{key}` appears twice in one object")));
            }
            let UniqueKeys(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A 400 for a body that is not acceptable JSON; a lone surrogate escape (`"\ud800"`), which JSON's grammar
/// allows but which is no Unicode text, is named as such instead of as serde_json's "unexpected end of hex escape".
fn json_error(text: &str, e: serde_json::Error) -> ApiError {
    if let Some(offset) = lone_surrogate_escape(text) {
        return ApiError::bad_request(
            "invalid_text",
            format!(
                "the request body holds `{}` at byte {offset}, a lone UTF-16 surrogate (\\ud800 to \\udfff \
                 without its pair): strings here must be Unicode text",
                &text[offset..offset + 6]
            ),
        );
    }
    ApiError::bad_request("invalid_json", format!("the request body is not valid JSON: {e}"))
}

/// The byte offset of the first `\uXXXX` escape of a surrogate that is not half of a pair, if any.
fn lone_surrogate_escape(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let unit = |at: usize| -> Option<u16> {
        let hex = bytes.get(at..at + 6).filter(|b| b.starts_with(b"\\u"))?;
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit(i) {
            Some(0xD800..=0xDBFF) if matches!(unit(i + 6), Some(0xDC00..=0xDFFF)) => i += 12,
            Some(0xD800..=0xDFFF) => return Some(i),
            Some(_) => i += 6,
            // Any other escape is two bytes.
            None => i += 2,
        }
    }
    None
}

/// Reads the inputs of `field`: a string, a list of strings, a list of token ids (one input) or a list of
/// token-id lists; at least one and at most `max_inputs`.
pub fn parse_inputs(value: &Value, field: &str, max_inputs: usize) -> Result<Vec<Input>, ApiError> {
    match value {
        Value::String(text) => Ok(vec![Input::Text(text.clone())]),
        Value::Array(items) if items.is_empty() => {
            Err(ApiError::bad_request("empty_input", format!("`{field}` is an empty list: send at least one input")))
        }
        Value::Array(items) if items[0].is_number() => Ok(vec![Input::Ids(token_ids(items, field)?)]),
        Value::Array(items) => {
            if items.len() > max_inputs {
                return Err(ApiError::too_large(
                    "too_many_inputs",
                    format!("`{field}` has {} items; this server takes at most {max_inputs} per request", items.len()),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(text) => Ok(Input::Text(text.clone())),
                    Value::Array(ids) => Ok(Input::Ids(token_ids(ids, &format!("{field}[{i}]"))?)),
                    _ => Err(ApiError::bad_request(
                        "invalid_input",
                        format!("`{field}[{i}]` must be a string or a list of token ids"),
                    )),
                })
                .collect()
        }
        _ => Err(ApiError::bad_request(
            "invalid_input",
            format!("`{field}` must be a string, a list of strings, a list of token ids or a list of token-id lists"),
        )),
    }
}

/// A list of token ids (whole numbers that fit in 32 bits).
fn token_ids(items: &[Value], field: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| ApiError::bad_request("invalid_input", format!("`{field}[{i}]` is not a token id: {v}")))
        })
        .collect()
}

/// The token sequences of `inputs`, each 1 to `max_input_tokens` ids long: texts are tokenized as `runner embed`
/// does, after `prompt`; an input longer than the maximum is cut when `truncate` is set, refused (413) otherwise.
pub fn to_sequences(
    inputs: Vec<Input>,
    tokenizer: &Tokenizer,
    prompt: &str,
    limits: &Limits,
    truncate: bool,
    field: &str,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let max = limits.max_input_tokens;
    let too_long = |i: usize| {
        ApiError::too_large(
            "input_too_long",
            format!(
                "`{field}[{i}]` is longer than the model's maximum of {max} tokens: send less, or split it \
                 (`/embed` also takes \"truncate\": true)"
            ),
        )
    };
    let texts: Vec<String> = inputs
        .iter()
        .filter_map(|input| match input {
            Input::Text(text) => Some(format!("{prompt}{text}")),
            Input::Ids(_) => None,
        })
        .collect();
    // The tokenizer truncates to the maximum itself and keeps what it cut as "overflowing".
    let mut encodings = tokenizer
        .encode_batch(texts, true)
        .map_err(|e| ApiError::bad_request("invalid_input", format!("the tokenizer failed: {e}")))?
        .into_iter();
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| match input {
            Input::Text(text) => {
                let encoding = encodings.next().expect("one encoding per text");
                if text.trim().is_empty() {
                    return Err(ApiError::bad_request(
                        "empty_input",
                        format!("`{field}[{i}]` is empty: there is nothing to embed"),
                    ));
                }
                if !truncate && !encoding.get_overflowing().is_empty() {
                    return Err(too_long(i));
                }
                Ok(encoding.get_ids().to_vec())
            }
            Input::Ids(mut ids) => {
                if ids.is_empty() {
                    return Err(ApiError::bad_request("empty_input", format!("`{field}[{i}]` has no token ids")));
                }
                if let Some(&id) = ids.iter().find(|&&id| id as usize >= limits.vocab_size) {
                    return Err(ApiError::bad_request(
                        "invalid_token_id",
                        format!("`{field}[{i}]` holds token id {id}; the vocabulary has {} ids", limits.vocab_size),
                    ));
                }
                if ids.len() > max {
                    if !truncate {
                        return Err(too_long(i));
                    }
                    ids.truncate(max);
                }
                Ok(ids)
            }
        })
        .collect()
}

/// Keeps the first `dimensions` values of each pooled embedding, then L2-normalises it when `normalize` is set:
/// the same steps, in the same order, as the sentence-transformers pipeline and `runner embed`.
pub fn finish(mut rows: Vec<Vec<f32>>, dimensions: Option<usize>, normalize: bool) -> Vec<Vec<f32>> {
    for row in &mut rows {
        if let Some(d) = dimensions {
            row.truncate(d);
        }
        if normalize {
            swap::normalize(row);
        }
    }
    rows
}

/// An OpenAI embeddings response.
#[derive(Debug, Serialize)]
pub struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<EmbeddingObject>,
    model: String,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct EmbeddingObject {
    object: &'static str,
    index: usize,
    embedding: EmbeddingData,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

impl EmbeddingsResponse {
    /// The response for `embeddings` of inputs that held `tokens` tokens together.
    pub fn new(embeddings: Vec<Vec<f32>>, format: EncodingFormat, model: &str, tokens: usize) -> Self {
        let data = embeddings
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| {
                let embedding = match format {
                    EncodingFormat::Float => EmbeddingData::Float(embedding),
                    EncodingFormat::Base64 => {
                        let bytes: Vec<u8> = embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
                        EmbeddingData::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                    }
                };
                EmbeddingObject { object: "embedding", index, embedding }
            })
            .collect();
        Self {
            object: "list",
            data,
            model: model.to_string(),
            usage: Usage { prompt_tokens: tokens, total_tokens: tokens },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code<T: std::fmt::Debug>(result: Result<T, ApiError>) -> (u16, &'static str, String) {
        let e = result.unwrap_err();
        (e.status.as_u16(), e.code, e.message)
    }

    #[test]
    fn inputs_come_in_four_shapes() {
        let text = |s: &str| Input::Text(s.into());
        assert_eq!(parse_inputs(&json!("a"), "input", 8).unwrap(), [text("a")]);
        assert_eq!(parse_inputs(&json!(["a", "b"]), "input", 8).unwrap(), [text("a"), text("b")]);
        assert_eq!(parse_inputs(&json!([101, 7, 102]), "input", 8).unwrap(), [Input::Ids(vec![101, 7, 102])]);
        assert_eq!(
            parse_inputs(&json!([[101, 102], "c"]), "input", 8).unwrap(),
            [Input::Ids(vec![101, 102]), text("c")]
        );
    }

    #[test]
    fn bad_inputs_are_refused_with_the_field_named() {
        assert_eq!(code(parse_inputs(&json!([]), "inputs", 8)).1, "empty_input");
        let (status, c, message) = code(parse_inputs(&Value::from(vec!["a"; 9]), "input", 8));
        assert_eq!((status, c), (413, "too_many_inputs"));
        assert!(message.contains("9 items") && message.contains("at most 8"), "{message}");
        assert!(code(parse_inputs(&json!(42), "input", 8)).2.contains("`input` must be a string"));
        assert!(code(parse_inputs(&json!(["a", 3]), "input", 8)).2.contains("`input[1]` must be a string"));
        assert!(code(parse_inputs(&json!([1, -2]), "input", 8)).2.contains("`input[1]` is not a token id: -2"));
        assert!(code(parse_inputs(&json!([[1, 2.5]]), "input", 8)).2.contains("`input[0][1]` is not a token id"));
        assert!(code(parse_inputs(&json!([[1, 4294967296u64]]), "input", 8)).2.contains("not a token id"));
    }

    #[test]
    fn bodies_are_checked_for_utf8_json_and_fields() {
        let (status, c, _) = code(parse_body::<EmbedRequest>(b"{\"inputs\": \"\xff\"}"));
        assert_eq!((status, c), (400, "invalid_utf8"));
        assert_eq!(code(parse_body::<EmbedRequest>(b"{\"inputs\": ")).1, "invalid_json");
        assert_eq!(code(parse_body::<EmbedRequest>(br#"["a"]"#)).2, "the request body must be a JSON object");
        let (_, c, message) = code(parse_body::<EmbedRequest>(br#"{"inputs": "a", "colour": 1}"#));
        assert_eq!(c, "invalid_request");
        assert!(message.contains("unknown field `colour`"), "{message}");
        let (_, _, message) = code(parse_body::<EmbeddingsRequest>(br#"{"input": "a", "model": 3}"#));
        assert_eq!(message, "invalid request: `model`: invalid type: integer `3`, expected a string");
        let (_, _, message) =
            code(parse_body::<EmbeddingsRequest>(br#"{"input": "a", "model": "m", "encoding_format": "hex"}"#));
        assert!(message.contains("unknown variant `hex`"), "{message}");
        let (_, c, message) = code(parse_body::<EmbedRequest>(br#"{"inputs": "a", "inputs": "b"}"#));
        assert_eq!(c, "invalid_json");
        assert!(message.contains("the key `inputs` appears twice"), "{message}");
        let nested = br#"{"inputs": [{"a": 1, "a": 2}]}"#;
        assert!(code(parse_body::<EmbedRequest>(nested)).2.contains("the key `a` appears twice"));
        let (_, c, message) = code(parse_body::<EmbedRequest>(br#"{"inputs": "\ud800"}"#));
        assert_eq!(c, "invalid_text");
        assert!(message.contains("`\\ud800` at byte 12, a lone UTF-16 surrogate"), "{message}");
        assert_eq!(lone_surrogate_escape(r#""\\ud800""#), None, "an escaped backslash, then text");
        assert_eq!(lone_surrogate_escape(r#""a\udc00""#), Some(2), "a trailing half alone");
        assert_eq!(lone_surrogate_escape(r#""\ud800\u0041""#), Some(1), "a leading half before a letter");
        let pair: EmbedRequest = parse_body(br#"{"inputs": "\ud83d\ude00", "normalize": false}"#).unwrap();
        assert_eq!((pair.inputs, pair.normalize), (Value::from("\u{1f600}"), Some(false)));
        let ok: EmbeddingsRequest =
            parse_body(br#"{"input": "a", "model": "m", "user": "u", "encoding_format": "base64"}"#).unwrap();
        assert_eq!(ok.encoding_format, Some(EncodingFormat::Base64));
    }

    #[test]
    fn base64_holds_the_little_endian_floats() {
        let rows = vec![vec![1.0f32, -0.5, 3.25e-3]];
        let v = serde_json::to_value(EmbeddingsResponse::new(rows.clone(), EncodingFormat::Base64, "m", 5)).unwrap();
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(v["data"][0]["embedding"].as_str().unwrap()).unwrap();
        let floats: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(floats, rows[0]);
        assert_eq!(v["usage"], json!({"prompt_tokens": 5, "total_tokens": 5}));
        assert_eq!((v["object"].as_str(), v["data"][0]["object"].as_str()), (Some("list"), Some("embedding")));
    }

    #[test]
    fn finish_cuts_then_normalises() {
        let rows = finish(vec![vec![3.0, 4.0, 12.0]], Some(2), true);
        assert_eq!(rows, [vec![0.6, 0.8]]);
        assert_eq!(finish(vec![vec![3.0, 4.0, 12.0]], None, false), [vec![3.0, 4.0, 12.0]]);
    }
}
