//! `runner serve`: an HTTP server for embedding models (OpenAI's `/v1/embeddings`, text-embeddings-inference's
//! `/embed`) and rerankers (text-embeddings-inference's `/rerank`, Cohere's and Jina's `/v1/rerank`), with dynamic
//! batching, a bounded queue, bounded work and time per request and per connection, and graceful shutdown.

mod api;
mod batcher;
mod connections;
mod error;
mod intake;
mod metrics;
mod rerank_api;
mod routes;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use crate::model_args::ModelArgs;
use api::Limits;
use batcher::{Batcher, ServedModel};
use connections::ConnectionLimits;
use intake::RequestLimits;
use metrics::Metrics;
use routes::{AppState, Served};
use swap::{Embedder, Reranker, Task};

/// Options of `runner serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (`0.0.0.0` to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the one taken is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Tokens per model batch: queued inputs are packed into batches up to this many tokens.
    #[arg(long, default_value_t = 4096)]
    max_batch_tokens: usize,
    /// Model requests admitted at once (their bodies being read, queued or running); more are answered 503 at
    /// once, before their bodies are read.
    #[arg(long, default_value_t = 64)]
    max_concurrent: usize,
    /// Inputs per request.
    #[arg(long, default_value_t = 2048)]
    max_inputs: usize,
    /// Tokens per request, all its inputs together (more: 413).
    #[arg(long, default_value_t = 65_536)]
    max_request_tokens: usize,
    /// Bytes per request body.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Connections open at once (more are answered 503 and closed); lowered to fit the open-file limit.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds for a request's line and headers, from its first byte.
    #[arg(long, default_value = "10", value_parser = seconds)]
    header_timeout: Duration,
    /// Seconds for a request's body, from the end of its headers (slower: 408).
    #[arg(long, default_value = "30", value_parser = seconds)]
    body_timeout: Duration,
    /// Seconds a keep-alive connection may wait for its next request.
    #[arg(long, default_value = "60", value_parser = seconds)]
    idle_timeout: Duration,
    /// Seconds from a request's body to its answer (later: 504, and its remaining inputs are dropped).
    #[arg(long, default_value = "60", value_parser = seconds)]
    request_timeout: Duration,
    /// Seconds that half-sent requests get after SIGTERM or SIGINT before their connections are dropped.
    #[arg(long, default_value = "10", value_parser = seconds)]
    shutdown_grace: Duration,
    /// Require `Authorization: Bearer KEY` on every route but `/health`.
    #[arg(long)]
    api_key: Option<String>,
}

/// Loads the model, serves until SIGINT or SIGTERM, then finishes the requests in flight and returns.
pub fn run(args: ServeArgs) -> Result<()> {
    args.model.apply_threads()?;
    for (name, value) in [
        ("--max-batch-tokens", args.max_batch_tokens),
        ("--max-concurrent", args.max_concurrent),
        ("--max-inputs", args.max_inputs),
        ("--max-request-tokens", args.max_request_tokens),
        ("--max-body-bytes", args.max_body_bytes),
        ("--max-connections", args.max_connections),
    ] {
        if value == 0 {
            bail!("{name} must be at least 1");
        }
    }
    if args.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!("--api-key must not be empty");
    }
    let plan = args.model.plan()?;
    let placement = args.model.quant.placement()?;
    let dir = args.model.dir()?;
    let name = model_name(&args.model.model);
    let (kind, _) = swap::ModelKind::of_folder(&dir)?;
    let (model, served, limits, layers, mut info) = match kind.task {
        Task::Embedding => {
            let embedder = Embedder::open_on(&dir, plan.clone(), &placement)?;
            let limits = Limits {
                max_inputs: args.max_inputs,
                max_input_tokens: embedder.pipeline().max_seq_length,
                vocab_size: embedder.vocab_size(),
                max_request_tokens: args.max_request_tokens,
            };
            let info = json!({
                "dimensions": embedder.dimensions(),
                "pooling": format!("{:?}", embedder.pipeline().pooling).to_lowercase(),
                "normalize": embedder.pipeline().normalize,
                "prompts": embedder.pipeline().prompts,
                "default_prompt_name": embedder.pipeline().default_prompt_name,
            });
            let served = Served::Embedder {
                tokenizer: Box::new(embedder.tokenizer().clone()),
                prompts: embedder.pipeline().prompts.clone(),
                default_prompt: embedder.pipeline().default_prompt_name.clone(),
                normalize: embedder.pipeline().normalize,
                dimensions: embedder.dimensions(),
            };
            let layers = embedder.layers().to_vec();
            (ServedModel::Embedder(Box::new(embedder)), served, limits, layers, info)
        }
        Task::Reranking => {
            let reranker = Arc::new(Reranker::open_on(&dir, plan.clone(), &placement)?);
            let limits = Limits {
                max_inputs: args.max_inputs,
                max_input_tokens: reranker.max_tokens(),
                vocab_size: reranker.vocab_size(),
                max_request_tokens: args.max_request_tokens,
            };
            let layers = reranker.layers().to_vec();
            let served = Served::Reranker(Arc::clone(&reranker));
            (ServedModel::Reranker(reranker), served, limits, layers, json!({}))
        }
        Task::Generation => {
            bail!("{} is a text generator; `serve` runs embedding models and rerankers", args.model.model)
        }
    };
    let mut schemes = BTreeMap::<String, usize>::new();
    for layer in &layers {
        *schemes.entry(layer.scheme.to_string()).or_default() += 1;
    }
    info.as_object_mut().context("info is an object")?.extend(
        json!({
            "model_id": name,
            "model_dir": dir.display().to_string(),
            "model_type": kind.arch.name,
            "task": kind.task.to_string(),
            "quantization": {"plan": plan, "layer_schemes": schemes},
            "max_input_length": limits.max_input_tokens,
            "max_batch_tokens": args.max_batch_tokens,
            "max_concurrent_requests": args.max_concurrent,
            "max_client_batch_size": args.max_inputs,
            "max_request_tokens": args.max_request_tokens,
            "max_body_bytes": args.max_body_bytes,
            "version": env!("CARGO_PKG_VERSION"),
        })
        .as_object()
        .context("an object")?
        .clone(),
    );
    eprintln!(
        "runner serve: {name} ({} {}), up to {} tokens per input, layers {}",
        kind.arch.name,
        kind.task,
        limits.max_input_tokens,
        serde_json::to_string(&info["quantization"]["layer_schemes"])?
    );

    let metrics = Arc::new(Metrics::default());
    let (batcher, worker) = Batcher::start(model, args.max_batch_tokens, args.max_concurrent, Arc::clone(&metrics))?;
    let state = Arc::new(AppState {
        batcher,
        served,
        limits,
        request_limits: RequestLimits {
            max_body_bytes: args.max_body_bytes,
            body_timeout: args.body_timeout,
            request_timeout: args.request_timeout,
        },
        model_names: vec![name, args.model.model.clone()],
        info,
        api_key: args.api_key,
        metrics,
    });

    let connection_limits = ConnectionLimits {
        max_connections: connections::fit_to_open_files(args.max_connections),
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        idle_timeout: args.idle_timeout,
        shutdown_grace: args.shutdown_grace,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        println!("listening on http://{address}");
        std::io::stdout().flush()?;
        connections::serve(listener, routes::router(state), connection_limits, shutdown).await
    })?;
    // Every handler is done and the router (with the queue's sender) is dropped: the worker stops when idle.
    worker.join().map_err(|_| anyhow::anyhow!("the model thread panicked"))?;
    eprintln!("runner serve: stopped");
    Ok(())
}

/// The name the server reports and accepts for `--model`: its last path component without `@revision`
/// (`models/cache/all-MiniLM-L6-v2` and `sentence-transformers/all-MiniLM-L6-v2` are both `all-MiniLM-L6-v2`).
fn model_name(model: &str) -> String {
    let last = model.trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next().unwrap_or(model);
    last.split('@').next().unwrap_or(last).to_string()
}

/// A duration given in seconds (`10`, `0.5`).
fn seconds(text: &str) -> std::result::Result<Duration, String> {
    let value: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(value > 0.0 && value <= 86_400.0) {
        return Err(format!("{text} s: give more than 0 and at most a day (86400)"));
    }
    Ok(Duration::from_secs_f64(value))
}

/// Listens for SIGINT (Ctrl-C) and SIGTERM from now on (so that a signal sent as soon as the address is printed is
/// not missed); the future resolves at the first, and the server then stops accepting and finishes what is in flight.
/// A second signal ends the process at once, with status 1.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut signals = Signals::new()?;
    Ok(async move {
        signals.next().await;
        eprintln!("runner serve: shutting down, finishing the requests in flight (a second signal stops at once)");
        tokio::spawn(async move {
            signals.next().await;
            eprintln!("runner serve: second signal, stopping now");
            std::process::exit(1);
        });
    })
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere than on Unix).
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{model_name, seconds};
    use std::time::Duration;

    #[test]
    fn durations_are_positive_seconds() {
        assert_eq!(seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "NaN", "inf", "1e9", "ten", ""] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_names_drop_folders_and_revisions() {
        assert_eq!(model_name("models/cache/all-MiniLM-L6-v2/"), "all-MiniLM-L6-v2");
        assert_eq!(model_name("sentence-transformers/all-MiniLM-L6-v2@main"), "all-MiniLM-L6-v2");
        assert_eq!(model_name("minilm"), "minilm");
    }
}
