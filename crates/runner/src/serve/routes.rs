//! The HTTP routes, the API-key check and the per-request metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use swap::{PairTokens, Reranker};
use tokenizers::Tokenizer;

use super::api::{self, EmbedRequest, EmbeddingsRequest, EmbeddingsResponse, Input, Limits};
use super::batcher::Batcher;
use super::error::ApiError;
use super::intake::{self, RequestLimits};
use super::metrics::Metrics;
use super::rerank_api::{self, CohereRerankRequest, CohereRerankResponse, TeiRank, TeiRerankRequest};

/// What the server's model does, and what its routes need of it.
pub enum Served {
    /// Embeddings: `/v1/embeddings` and `/embed`.
    Embedder {
        /// The model's tokenizer (truncating to its maximum, as `runner embed` does).
        tokenizer: Box<Tokenizer>,
        /// The model's named prompts and the default one (`config_sentence_transformers.json`).
        prompts: BTreeMap<String, String>,
        /// The prompt used when a request names none.
        default_prompt: Option<String>,
        /// Whether the model's pipeline L2-normalises its embeddings.
        normalize: bool,
        /// Width of the embeddings.
        dimensions: usize,
    },
    /// Cross-encoder scores: `/rerank` and `/v1/rerank` (the reranker here tokenizes the pairs).
    Reranker(Arc<Reranker>),
}

/// What the handlers share.
pub struct AppState {
    /// The queue to the model.
    pub batcher: Batcher,
    /// The model's task.
    pub served: Served,
    /// What one request may hold.
    pub limits: Limits,
    /// A model request's body size and time limits.
    pub request_limits: RequestLimits,
    /// Names the `model` field of `/v1/embeddings` and `/v1/rerank` may take; the first is the one reported.
    pub model_names: Vec<String>,
    /// The body of `GET /info`.
    pub info: Value,
    /// `--api-key`.
    pub api_key: Option<String>,
    /// Counters for `GET /metrics`.
    pub metrics: Arc<Metrics>,
}

/// The router: the embedding and rerank routes (those of the other task answer 400) behind
/// [`intake::admit`], `/health`, `/info`, `/metrics`, JSON errors for unknown paths and methods.
pub fn router(state: Arc<AppState>) -> Router {
    let model_routes = Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/embed", post(embed))
        .route("/rerank", post(rerank))
        .route("/v1/rerank", post(v1_rerank))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), intake::admit));
    Router::new()
        .merge(model_routes)
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("not_found", "no such path") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // The intake has read the body within its limit already.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(Arc::clone(&state), authorize))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), track))
        .with_state(state)
}

/// Counts every answer by route and status and times it.
async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let path = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let response = next.run(request).await;
    state.metrics.record_request(&path, response.status().as_u16(), start.elapsed());
    response
}

/// With `--api-key`, every route but `/health` needs `Authorization: Bearer KEY` (the scheme in any case).
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
        if request.uri().path() != "/health" && !same_secret(given.unwrap_or("").as_bytes(), key.as_bytes()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// The token of an `Authorization` header of the `Bearer` scheme, whose name is case-insensitive (RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether `given` is `key`, in a time that depends only on the key's length: neither how much of the key was
/// right nor the length of what was given changes how long the comparison takes.
fn same_secret(given: &[u8], key: &[u8]) -> bool {
    let mut difference = u8::from(given.len() != key.len());
    for (i, k) in key.iter().enumerate() {
        difference |= k ^ given.get(i).copied().unwrap_or(!k);
    }
    std::hint::black_box(difference) == 0
}

/// `POST /v1/embeddings`, OpenAI's API.
async fn embeddings(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let (_, normalize, dimensions) = embedder(&state)?;
    let request: EmbeddingsRequest = api::parse_body(&body)?;
    check_model(&state, Some(&request.model))?;
    if let Some(d) = request.dimensions.filter(|&d| d == 0 || d > dimensions) {
        return Err(ApiError::bad_request(
            "invalid_dimensions",
            format!("`dimensions` is {d}; this model gives 1 to {dimensions} dimensions"),
        ));
    }
    let inputs = api::parse_inputs(&request.input, "input", state.limits.max_inputs)?;
    // Texts too long for the model are cut, as `runner embed` and sentence-transformers do.
    let prompt = prompt(&state, request.prompt_name.as_deref())?;
    let (pooled, tokens) = run_model(&state, inputs, prompt, true, "input").await?;
    let rows = api::finish(pooled, request.dimensions, normalize);
    let format = request.encoding_format.unwrap_or_default();
    Ok(Json(EmbeddingsResponse::new(rows, format, &state.model_names[0], tokens)))
}

/// `POST /embed`, text-embeddings-inference's API: a list of embeddings.
async fn embed(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    embedder(&state)?;
    let request: EmbedRequest = api::parse_body(&body)?;
    let inputs = api::parse_inputs(&request.inputs, "inputs", state.limits.max_inputs)?;
    let prompt = prompt(&state, request.prompt_name.as_deref())?;
    let (pooled, _) = run_model(&state, inputs, prompt, request.truncate.unwrap_or(false), "inputs").await?;
    Ok(Json(api::finish(pooled, None, request.normalize.unwrap_or(true))))
}

/// Tokenizes off the async threads, checks the request's token budget, and waits for the pooled embeddings and
/// their token count (the intake holds the request's place in the queue).
async fn run_model(
    state: &Arc<AppState>,
    inputs: Vec<Input>,
    prompt: String,
    truncate: bool,
    field: &'static str,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let shared = Arc::clone(state);
    let sequences = tokio::task::spawn_blocking(move || {
        let (tokenizer, _, _) = embedder(&shared)?;
        api::to_sequences(inputs, tokenizer, &prompt, &shared.limits, truncate, field)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
    let tokens = state.limits.check_request_tokens(sequences.iter().map(Vec::len).sum())?;
    let sequences = sequences.into_iter().map(|ids| PairTokens { ids, ..Default::default() }).collect();
    Ok((state.batcher.run(sequences).await?, tokens))
}

/// `POST /rerank`, text-embeddings-inference's API: every text scored against the query, best first.
async fn rerank(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Vec<TeiRank>>, ApiError> {
    reranker(&state)?;
    let request: TeiRerankRequest = api::parse_body(&body)?;
    if let Some(direction) = request.truncation_direction.as_deref().filter(|d| !d.eq_ignore_ascii_case("right")) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`truncation_direction` {direction:?} is not supported here: pairs are cut on the right"),
        ));
    }
    rerank_api::check_inputs(&request.query, &request.texts, "texts", state.limits.max_inputs)?;
    let (scores, _) = score_pairs(&state, request.query, request.texts.clone(), request.truncate, "texts").await?;
    Ok(Json(rerank_api::tei_response(&scores, request.texts, request.raw_scores, request.return_text)))
}

/// `POST /v1/rerank`, the Cohere / Jina API: the best `top_n` documents with relevance scores in (0, 1).
async fn v1_rerank(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<CohereRerankResponse>, ApiError> {
    reranker(&state)?;
    let request: CohereRerankRequest = api::parse_body(&body)?;
    check_model(&state, request.model.as_deref())?;
    let documents = rerank_api::document_texts(&request.documents)?;
    rerank_api::check_inputs(&request.query, &documents, "documents", state.limits.max_inputs)?;
    // Pairs too long for the model are cut, as Cohere's API does.
    let (scores, tokens) = score_pairs(&state, request.query, documents.clone(), true, "documents").await?;
    let (top_n, back) = (request.top_n, request.return_documents);
    Ok(Json(rerank_api::cohere_response(&scores, documents, top_n, back, &state.model_names[0], tokens)))
}

/// Tokenizes the pairs off the async threads, checks the request's token budget, and waits for their raw scores
/// and token count (the intake holds the request's place in the queue).
async fn score_pairs(
    state: &Arc<AppState>,
    query: String,
    documents: Vec<String>,
    truncate: bool,
    field: &'static str,
) -> Result<(Vec<f32>, usize), ApiError> {
    let shared = Arc::clone(state);
    let pairs = tokio::task::spawn_blocking(move || {
        rerank_api::to_pairs(reranker(&shared)?, &query, &documents, truncate, field)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
    let tokens = state.limits.check_request_tokens(pairs.iter().map(|p| p.ids.len()).sum())?;
    let rows = state.batcher.run(pairs).await?;
    Ok((rows.into_iter().map(|row| row[0]).collect(), tokens))
}

/// The text of the embedder's prompt `name` (`None`: the default prompt, or none), or a 400 naming the prompts.
fn prompt(state: &AppState, name: Option<&str>) -> Result<String, ApiError> {
    let Served::Embedder { prompts, default_prompt, .. } = &state.served else { return Ok(String::new()) };
    match name.or(default_prompt.as_deref()) {
        None => Ok(String::new()),
        Some(name) => prompts.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = prompts.keys().map(String::as_str).collect();
            ApiError::bad_request(
                "invalid_prompt_name",
                format!("`prompt_name` {name:?} is not one of this model's prompts: [{}]", known.join(", ")),
            )
        }),
    }
}

/// The embedder's tokenizer, normalisation and width, or a 400 that says this server reranks.
fn embedder(state: &AppState) -> Result<(&Tokenizer, bool, usize), ApiError> {
    match &state.served {
        Served::Embedder { tokenizer, normalize, dimensions, .. } => Ok((tokenizer, *normalize, *dimensions)),
        Served::Reranker(_) => Err(ApiError::bad_request(
            "wrong_task",
            format!("this server runs the reranker `{}`: POST /rerank or /v1/rerank", state.model_names[0]),
        )),
    }
}

/// The reranker, or a 400 that says this server embeds.
fn reranker(state: &AppState) -> Result<&Reranker, ApiError> {
    match &state.served {
        Served::Reranker(r) => Ok(r),
        Served::Embedder { .. } => Err(ApiError::bad_request(
            "wrong_task",
            format!("this server runs the embedding model `{}`: POST /v1/embeddings or /embed", state.model_names[0]),
        )),
    }
}

/// A request's `model` must be one of this server's names when given.
fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(name) if !state.model_names.iter().any(|n| n == name) => Err(ApiError::not_found(
            "model_not_found",
            format!("this server runs model `{}`, not `{name}`", state.model_names[0]),
        )),
        _ => Ok(()),
    }
}

/// `GET /health`: the server is up and takes requests.
async fn health() -> Json<Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// `GET /info`: the model, its quantization, dimensions and the limits.
async fn info(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.info.clone())
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let text = state.metrics.render(state.batcher.depth(), state.batcher.capacity());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}

#[cfg(test)]
mod tests {
    use super::{bearer_token, same_secret};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer k3y", "bearer k3y", "BEARER  k3y ", " Bearer k3y"] {
            assert_eq!(bearer_token(header), Some("k3y"), "{header:?}");
        }
        for header in ["k3y", "Basic k3y", "Bearerk3y", ""] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }

    #[test]
    fn secrets_match_only_whole() {
        assert!(same_secret(b"sesame", b"sesame"));
        for given in [&b"sesam"[..], b"sesame!", b"sesamf", b"", b"SESAME"] {
            assert!(!same_secret(given, b"sesame"), "{given:?}");
        }
        // A byte that is the complement of the key's is still a difference, not a match.
        assert!(!same_secret(&[!b's'], b"s"));
    }
}
