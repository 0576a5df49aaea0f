//! The HTTP routes, the API-key check and the per-request metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
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
    /// Per-request limits.
    pub limits: Limits,
    /// The most bytes a request body may have.
    pub max_body_bytes: usize,
    /// Names the `model` field of `/v1/embeddings` and `/v1/rerank` may take; the first is the one reported.
    pub model_names: Vec<String>,
    /// The body of `GET /info`.
    pub info: Value,
    /// `--api-key`.
    pub api_key: Option<String>,
    /// Counters for `GET /metrics`.
    pub metrics: Arc<Metrics>,
}

/// The router: the embedding and rerank routes (those of the other task answer 400), `/health`, `/info`,
/// `/metrics`, JSON errors for unknown paths and methods.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/embed", post(embed))
        .route("/rerank", post(rerank))
        .route("/v1/rerank", post(v1_rerank))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("not_found", "no such path") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
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

/// With `--api-key`, every route but `/health` needs `Authorization: Bearer KEY`.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if request.uri().path() != "/health" && !same_secret(given.trim().as_bytes(), key.as_bytes()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so timing does not reveal how much of a key was right.
fn same_secret(given: &[u8], key: &[u8]) -> bool {
    given.len() == key.len() && given.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `POST /v1/embeddings`, OpenAI's API.
async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let (_, normalize, dimensions) = embedder(&state)?;
    let request: EmbeddingsRequest = api::parse_body(&body.map_err(|e| body_error(&state, e))?)?;
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
async fn embed(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<f32>>>, ApiError> {
    embedder(&state)?;
    let request: EmbedRequest = api::parse_body(&body.map_err(|e| body_error(&state, e))?)?;
    let inputs = api::parse_inputs(&request.inputs, "inputs", state.limits.max_inputs)?;
    let prompt = prompt(&state, request.prompt_name.as_deref())?;
    let (pooled, _) = run_model(&state, inputs, prompt, request.truncate.unwrap_or(false), "inputs").await?;
    Ok(Json(api::finish(pooled, None, request.normalize.unwrap_or(true))))
}

/// Takes a place in the queue, tokenizes off the async threads, and waits for the pooled embeddings and their
/// token count.
async fn run_model(
    state: &Arc<AppState>,
    inputs: Vec<Input>,
    prompt: String,
    truncate: bool,
    field: &'static str,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let admission = state.batcher.admit()?;
    let shared = Arc::clone(state);
    let sequences = tokio::task::spawn_blocking(move || {
        let (tokenizer, _, _) = embedder(&shared)?;
        api::to_sequences(inputs, tokenizer, &prompt, &shared.limits, truncate, field)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
    let tokens = sequences.iter().map(Vec::len).sum();
    let sequences = sequences.into_iter().map(|ids| PairTokens { ids, ..Default::default() }).collect();
    Ok((admission.run(sequences).await?, tokens))
}

/// `POST /rerank`, text-embeddings-inference's API: every text scored against the query, best first.
async fn rerank(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<TeiRank>>, ApiError> {
    reranker(&state)?;
    let request: TeiRerankRequest = api::parse_body(&body.map_err(|e| body_error(&state, e))?)?;
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
async fn v1_rerank(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CohereRerankResponse>, ApiError> {
    reranker(&state)?;
    let request: CohereRerankRequest = api::parse_body(&body.map_err(|e| body_error(&state, e))?)?;
    check_model(&state, request.model.as_deref())?;
    let documents = rerank_api::document_texts(&request.documents)?;
    rerank_api::check_inputs(&request.query, &documents, "documents", state.limits.max_inputs)?;
    // Pairs too long for the model are cut, as Cohere's API does.
    let (scores, tokens) = score_pairs(&state, request.query, documents.clone(), true, "documents").await?;
    let (top_n, back) = (request.top_n, request.return_documents);
    Ok(Json(rerank_api::cohere_response(&scores, documents, top_n, back, &state.model_names[0], tokens)))
}

/// Takes a place in the queue, tokenizes the pairs off the async threads, and waits for their raw scores and
/// token count.
async fn score_pairs(
    state: &Arc<AppState>,
    query: String,
    documents: Vec<String>,
    truncate: bool,
    field: &'static str,
) -> Result<(Vec<f32>, usize), ApiError> {
    let admission = state.batcher.admit()?;
    let shared = Arc::clone(state);
    let pairs = tokio::task::spawn_blocking(move || {
        rerank_api::to_pairs(reranker(&shared)?, &query, &documents, truncate, field)
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))??;
    let tokens = pairs.iter().map(|p| p.ids.len()).sum();
    let rows = admission.run(pairs).await?;
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

/// A body that could not be read: over `--max-body-bytes` (413) or cut off.
fn body_error(state: &AppState, rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(
            "body_too_large",
            format!("the request body is over this server's limit of {} bytes", state.max_body_bytes),
        )
    } else {
        ApiError::bad_request("unreadable_body", format!("cannot read the request body: {}", rejection.body_text()))
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
