//! The request and response bodies of `POST /rerank` (text-embeddings-inference) and `POST /v1/rerank` (Cohere and
//! Jina), and the checks that turn a request into (query, document) token pairs for a cross-encoder.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use swap::{ranked, PairTokens, Reranker};

use super::error::ApiError;

/// A text-embeddings-inference `/rerank` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeiRerankRequest {
    /// The query.
    pub query: String,
    /// The documents to score.
    pub texts: Vec<String>,
    /// Answer the raw logits instead of sigmoid scores (default false).
    #[serde(default)]
    pub raw_scores: bool,
    /// Give each document's text back (default false).
    #[serde(default)]
    pub return_text: bool,
    /// Cut pairs longer than the model's maximum instead of refusing them (default false).
    #[serde(default)]
    pub truncate: bool,
    /// Which end to cut: only `Right` is done here.
    #[serde(default)]
    pub truncation_direction: Option<String>,
}

/// One result of `/rerank`.
#[derive(Debug, Serialize)]
pub struct TeiRank {
    index: usize,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// A Cohere / Jina `/v1/rerank` request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohereRerankRequest {
    /// The model's name (optional; when given it must be this server's).
    #[serde(default)]
    pub model: Option<String>,
    /// The query.
    pub query: String,
    /// The documents: strings, or objects with a `text` field.
    pub documents: Vec<Value>,
    /// Return only the best `top_n` (default: all).
    #[serde(default)]
    pub top_n: Option<usize>,
    /// Give each document back as `{"text": ...}` (default false).
    #[serde(default)]
    pub return_documents: bool,
}

/// A Cohere / Jina `/v1/rerank` response.
#[derive(Debug, Serialize)]
pub struct CohereRerankResponse {
    model: String,
    results: Vec<CohereRank>,
    usage: Usage,
}

#[derive(Debug, Serialize)]
struct CohereRank {
    index: usize,
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<Value>,
}

#[derive(Debug, Serialize)]
struct Usage {
    total_tokens: usize,
}

/// The texts of `/v1/rerank`'s `documents`: strings or `{"text": string}` objects.
pub fn document_texts(documents: &[Value]) -> Result<Vec<String>, ApiError> {
    documents
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Value::String(text) => Ok(text.clone()),
            Value::Object(o) => o.get("text").and_then(Value::as_str).map(str::to_string).ok_or_else(|| {
                ApiError::bad_request("invalid_input", format!("`documents[{i}]` has no string field `text`"))
            }),
            _ => Err(ApiError::bad_request(
                "invalid_input",
                format!("`documents[{i}]` must be a string or an object with a `text` field"),
            )),
        })
        .collect()
}

/// Checks a rerank request's query and documents (`field` names the list): a non-empty query, 1 to `max_inputs`
/// documents, none empty.
pub fn check_inputs(query: &str, documents: &[String], field: &str, max_inputs: usize) -> Result<(), ApiError> {
    if query.trim().is_empty() {
        return Err(ApiError::bad_request("empty_input", "`query` is empty: there is nothing to rank against"));
    }
    if documents.is_empty() {
        return Err(ApiError::bad_request("empty_input", format!("`{field}` is empty: send at least one document")));
    }
    if documents.len() > max_inputs {
        return Err(ApiError::too_large(
            "too_many_inputs",
            format!("`{field}` has {} items; this server takes at most {max_inputs} per request", documents.len()),
        ));
    }
    if let Some(i) = documents.iter().position(|d| d.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "empty_input",
            format!("`{field}[{i}]` is empty: there is nothing to score"),
        ));
    }
    Ok(())
}

/// Tokenizes the pairs; a pair longer than the model's maximum is cut when `truncate` is set, refused (413)
/// otherwise.
pub fn to_pairs(
    reranker: &Reranker,
    query: &str,
    documents: &[String],
    truncate: bool,
    field: &str,
) -> Result<Vec<PairTokens>, ApiError> {
    let refs: Vec<&str> = documents.iter().map(String::as_str).collect();
    let pairs = reranker.encode(query, &refs).map_err(|e| ApiError::bad_request("invalid_input", format!("{e:#}")))?;
    if let Some(i) = pairs.iter().position(|p| p.truncated).filter(|_| !truncate) {
        return Err(ApiError::too_large(
            "input_too_long",
            format!(
                "the query with `{field}[{i}]` is longer than the model's maximum of {} tokens: send less, or set \
                 \"truncate\": true",
                reranker.max_tokens()
            ),
        ));
    }
    Ok(pairs)
}

/// The `/rerank` answer: every document, best first, sigmoid scores unless `raw`.
pub fn tei_response(scores: &[f32], texts: Vec<String>, raw: bool, return_text: bool) -> Vec<TeiRank> {
    let mut texts: Vec<Option<String>> = texts.into_iter().map(Some).collect();
    ranked(scores)
        .into_iter()
        .map(|(index, score)| TeiRank {
            index,
            score: if raw { score } else { swap::sigmoid(score) },
            text: if return_text { texts[index].take() } else { None },
        })
        .collect()
}

/// The `/v1/rerank` answer: the best `top_n` documents (all when `None`), with sigmoid relevance scores.
pub fn cohere_response(
    scores: &[f32],
    texts: Vec<String>,
    top_n: Option<usize>,
    return_documents: bool,
    model: &str,
    tokens: usize,
) -> CohereRerankResponse {
    let mut texts: Vec<Option<String>> = texts.into_iter().map(Some).collect();
    let results = ranked(scores)
        .into_iter()
        .take(top_n.unwrap_or(usize::MAX))
        .map(|(index, score)| CohereRank {
            index,
            relevance_score: swap::sigmoid(score),
            document: if return_documents { texts[index].take().map(|t| serde_json::json!({"text": t})) } else { None },
        })
        .collect();
    CohereRerankResponse { model: model.to_string(), results, usage: Usage { total_tokens: tokens } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn results_come_best_first_with_ties_in_input_order() {
        assert_eq!(ranked(&[0.1, 0.7, 0.1, -2.0]), [(1, 0.7), (0, 0.1), (2, 0.1), (3, -2.0)]);
        let tei = serde_json::to_value(tei_response(&[0.0, 2.0], vec!["a".into(), "b".into()], false, true)).unwrap();
        assert_eq!(
            tei,
            json!([{"index": 1, "score": swap::sigmoid(2.0), "text": "b"}, {"index": 0, "score": 0.5, "text": "a"}])
        );
        let raw = serde_json::to_value(tei_response(&[0.0, 2.0], vec!["a".into(), "b".into()], true, false)).unwrap();
        assert_eq!(raw, json!([{"index": 1, "score": 2.0}, {"index": 0, "score": 0.0}]));
        let cohere = serde_json::to_value(cohere_response(
            &[0.0, 2.0, 1.0],
            vec!["a".into(), "b".into(), "c".into()],
            Some(2),
            true,
            "m",
            9,
        ))
        .unwrap();
        assert_eq!(cohere["results"].as_array().unwrap().len(), 2);
        assert_eq!(cohere["results"][0]["document"], json!({"text": "b"}));
        assert_eq!(cohere["results"][1]["index"], 2);
        assert_eq!(cohere["usage"], json!({"total_tokens": 9}));
    }

    #[test]
    fn bad_requests_name_the_field() {
        let code = |r: Result<(), ApiError>| r.unwrap_err().message;
        assert!(code(check_inputs(" ", &["a".into()], "texts", 8)).contains("`query` is empty"));
        assert!(code(check_inputs("q", &[], "texts", 8)).contains("`texts` is empty"));
        assert!(code(check_inputs("q", &["a".into(), "".into()], "documents", 8)).contains("`documents[1]` is empty"));
        assert_eq!(check_inputs("q", &vec!["a".into(); 9], "texts", 8).unwrap_err().status.as_u16(), 413);
        assert!(document_texts(&[json!({"text": "a"}), json!("b")]).is_ok());
        assert!(document_texts(&[json!({"title": "a"})]).unwrap_err().message.contains("`documents[0]` has no"));
        assert!(document_texts(&[json!(3)]).unwrap_err().message.contains("must be a string or an object"));
    }
}
