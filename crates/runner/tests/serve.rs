//! `runner serve` end to end on the real all-MiniLM-L6-v2 (`models/fetch minilm`): the binary is started on a free
//! port and spoken to over plain HTTP/1.1, and through the official `openai` Python client. Every embedding is
//! compared with what `runner embed` prints for the same texts.
//!
//! The load test times the server, so it runs alone: it takes [`EXCLUSIVE`] for writing, the others for reading.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn minilm() -> String {
    let dir = workspace().join("models/cache/all-MiniLM-L6-v2");
    assert!(dir.join("model.safetensors").exists(), "{} is missing: run models/fetch minilm", dir.display());
    dir.display().to_string()
}

/// `runner embed --quant int8` of `texts`: (tokens, embedding) per text.
fn runner_embed(texts: &[&str]) -> Vec<(usize, Vec<f32>)> {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["embed", "--model", &minilm(), "--quant", "int8"])
        .args(texts)
        .output()
        .unwrap();
    assert!(out.status.success(), "runner embed failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (v["tokens"].as_u64().unwrap() as usize, floats(&v["embedding"]))
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap_or_else(|| panic!("not an array: {v}")).iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// Exact equality of embeddings, reported by the first difference rather than by printing them all.
fn assert_same(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {} embeddings instead of {}", got.len(), want.len());
    for (row, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: embedding {row} has {} values instead of {}", g.len(), w.len());
        if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
            panic!("{what}: embedding {row} differs from runner embed's at {i}: {} vs {}", g[i], w[i]);
        }
    }
}

/// Short texts (16 words, about 20 to 30 tokens) from the corpus fixture.
fn corpus_texts() -> Vec<String> {
    std::fs::read_to_string(workspace().join("tests/fixtures/minilm_corpus.txt"))
        .unwrap()
        .lines()
        .filter(|line| line.split_whitespace().count() >= 8)
        .map(|line| line.split_whitespace().take(16).collect::<Vec<_>>().join(" "))
        .collect()
}

/// A running `runner serve`, stopped (SIGKILL) when dropped unless [`Server::terminate`] stopped it.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        Self::start_model(&minilm(), &[&["--quant", "int8"][..], extra].concat())
    }

    fn start_model(model: &str, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runner"));
        command.args(["serve", "--model", model, "--port", "0"]).args(extra);
        Self::spawn(command)
    }

    /// The int8 MiniLM server, started with at most `files` open files (`ulimit -n`).
    fn start_with_open_files(files: u32, extra: &[&str]) -> Self {
        let mut command = Command::new("sh");
        command
            .args(["-c", &format!("ulimit -n {files} && exec \"$0\" \"$@\"")])
            .arg(env!("CARGO_BIN_EXE_runner"))
            .args(["serve", "--model", &minilm(), "--quant", "int8", "--port", "0"])
            .args(extra);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            panic!("runner serve did not start: {line:?} {stderr}");
        };
        Self { addr: addr.to_string(), child }
    }

    fn conn(&self) -> Conn {
        Conn::open(&self.addr)
    }

    /// One request on a new connection.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.conn().send(method, path, headers, body)
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
    }

    fn metric(&self, line_prefix: &str) -> f64 {
        let text = self.call("GET", "/metrics", &[], b"").text();
        let line =
            text.lines().find(|l| l.starts_with(line_prefix)).unwrap_or_else(|| panic!("{line_prefix}?\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Sends `signal` (`TERM`, `INT`) to the server.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap().success());
    }

    /// The exit status, which must come within `limit`.
    fn exit_status(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "runner serve did not stop within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
}

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The OpenAI error shape; returns (code, message).
    fn error(&self) -> (String, String) {
        let v = self.json();
        let e = &v["error"];
        assert!(e["type"].is_string() && e["code"].is_string() && e["message"].is_string(), "{v}");
        (e["code"].as_str().unwrap().into(), e["message"].as_str().unwrap().into())
    }
}

impl Conn {
    fn open(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        // A stalled server fails the test instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Self { reader: BufReader::new(stream) }
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
        // Bodies are JSON unless a test says otherwise.
        if method == "POST" && !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
            request.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        if body.len() <= 1 << 16 {
            bytes.extend_from_slice(body);
            self.reader.get_mut().write_all(&bytes).unwrap();
        } else {
            // A big body is written from another thread: the server may answer (and close) before reading it all.
            let mut writer = self.reader.get_ref().try_clone().unwrap();
            bytes.extend_from_slice(body);
            std::thread::spawn(move || {
                let _ = writer.write_all(&bytes);
            });
        }
        self.read_reply()
    }

    /// Writes `bytes` as they are (a request, or part of one).
    fn write(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// Whether the server closes the connection within `limit` (reads return nothing or fail), and when.
    fn closed_within(&mut self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        self.reader.get_ref().set_read_timeout(Some(limit)).unwrap();
        let mut sink = Vec::new();
        let end = self.reader.read_to_end(&mut sink);
        let took = start.elapsed();
        let timed_out =
            matches!(&end, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
        (!timed_out).then_some(took)
    }

    fn read_reply(&mut self) -> Reply {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line.split(' ').nth(1).unwrap_or_else(|| panic!("bad status line {line:?}")).parse().unwrap();
        let mut headers = HashMap::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else { break };
            headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
        }
        let length: usize = headers["content-length"].parse().unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        Reply { status, headers, body }
    }
}

/// The interpreter for the OpenAI-client test: `QINFER_TEST_PYTHON`, else the virtual environment that
/// `scripts/setup-tests` makes, else `python3` when it can import `openai`.
fn python_with_openai() -> String {
    if let Ok(python) = std::env::var("QINFER_TEST_PYTHON") {
        return python;
    }
    let has_openai =
        |python: &str| Command::new(python).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success());
    let venv = workspace().join("target/test-venv/bin/python").display().to_string();
    for python in [venv.as_str(), "python3"] {
        if has_openai(python) {
            return python.to_string();
        }
    }
    panic!(
        "this test runs the official `openai` Python client: run scripts/setup-tests (a virtual environment in \
         target/test-venv), `pip install openai` for python3, or set QINFER_TEST_PYTHON to a Python that has it"
    );
}

#[test]
fn openai_client_gets_the_embeddings_of_runner_embed() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let texts = ["A cat sits on the mat.", "Quantized BERT is fast.", "Servers batch requests together."];
    let expected = runner_embed(&texts);
    let server = Server::start(&["--api-key", "sesame"]);
    let out = Command::new(python_with_openai())
        .arg(workspace().join("crates/runner/tests/openai_client.py"))
        .args([&format!("http://{}/v1", server.addr), "sesame", "all-MiniLM-L6-v2", &json!(texts).to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "openai_client.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<Vec<f32>> = expected.iter().map(|(_, e)| e.clone()).collect();
    for key in ["float", "default", "base64_decoded"] {
        let got: Vec<Vec<f32>> = v[key].as_array().unwrap().iter().map(floats).collect();
        assert_same(&got, &want, key);
    }
    assert_same(&[floats(&v["single"])], &want[..1], "single");
    let tokens: usize = expected.iter().map(|(t, _)| t).sum();
    assert_eq!(v["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    assert_eq!(v["model"], "all-MiniLM-L6-v2");
    // `dimensions`: the first 64 values, normalised again.
    let short = floats(&v["dimensions_64"]);
    let norm = want[0][..64].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert_eq!(short.len(), 64);
    for (s, w) in short.iter().zip(&want[0][..64]) {
        assert!((s - w / norm).abs() < 1e-6, "{s} vs {}", w / norm);
    }
    // Errors reach the client as its own exception types, with our status, code and message.
    assert_eq!(v["errors"]["empty"]["status"], 400, "{v}");
    assert_eq!(v["errors"]["empty"]["code"], "empty_input");
    assert_eq!(v["errors"]["wrong_key"]["status"], 401);
    assert_eq!(v["errors"]["wrong_model"]["status"], 404);
    assert!(v["errors"]["wrong_model"]["message"].as_str().unwrap().contains("all-MiniLM-L6-v2"), "{v}");
}

/// Sends `bodies` to `/v1/embeddings` over `clients` keep-alive connections at once (each client takes every
/// `clients`-th body, in turn); returns the replies in body order and the wall time.
fn load(server: &Server, bodies: &[String], clients: usize) -> (Vec<Reply>, Duration) {
    let start = Instant::now();
    let mut replies: Vec<(usize, Reply)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                scope.spawn(move || {
                    let mut conn = server.conn();
                    (client..bodies.len())
                        .step_by(clients)
                        .map(|i| (i, conn.send("POST", "/v1/embeddings", &[], bodies[i].as_bytes())))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    replies.sort_by_key(|(i, _)| *i);
    (replies.into_iter().map(|(_, r)| r).collect(), elapsed)
}

#[test]
fn concurrent_clients_are_batched_and_get_the_same_embeddings() {
    let _alone = EXCLUSIVE.write().unwrap_or_else(PoisonError::into_inner);
    let texts = corpus_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let expected = runner_embed(&refs);
    let server = Server::start(&["--threads", "2"]);
    let requests = 256;
    let bodies: Vec<String> = (0..requests)
        .map(|i| json!({"model": "all-MiniLM-L6-v2", "input": texts[i % texts.len()]}).to_string())
        .collect();
    // Warm up: the first requests pay for page faults and thread start-up.
    load(&server, &bodies[..32], 4);
    // Two interleaved rounds, the faster of each kind counted, so that a burst of other work on the machine
    // does not decide the comparison.
    let (mut one_at_a_time, mut together) = (Duration::MAX, Duration::MAX);
    let (mut sequential, mut concurrent, mut batches) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..2 {
        let (replies, took) = load(&server, &bodies, 1);
        one_at_a_time = one_at_a_time.min(took);
        sequential.extend(replies);
        let batches_before = server.metric("runner_batch_inputs_count");
        let (replies, took) = load(&server, &bodies, 32);
        together = together.min(took);
        concurrent.extend(replies);
        batches += server.metric("runner_batch_inputs_count") - batches_before;
    }
    let batches = batches / 2.0;
    for (i, reply) in sequential.iter().chain(&concurrent).enumerate() {
        assert_eq!(reply.status, 200, "{}", reply.text());
        let v = reply.json();
        let want = &expected[i % requests % texts.len()].1;
        assert_same(&[floats(&v["data"][0]["embedding"])], std::slice::from_ref(want), &format!("request {i}"));
    }
    let ratio = one_at_a_time.as_secs_f64() / together.as_secs_f64();
    println!(
        "{requests} single-text requests: one at a time {:.0} req/s, 32 clients {:.0} req/s ({ratio:.2}x) in {batches} \
         batches ({:.1} inputs per batch)",
        requests as f64 / one_at_a_time.as_secs_f64(),
        requests as f64 / together.as_secs_f64(),
        requests as f64 / batches
    );
    assert!(batches <= requests as f64 / 4.0, "{batches} batches for {requests} concurrent requests: no batching");
    // The model's throughput is flat in the batch size on a CPU (see the README), so batching can only save the
    // per-request overhead; it must not cost throughput.
    assert!(ratio >= 0.8, "32 clients get {ratio:.2}x the throughput of one at a time");
}

fn tokenize(text: &str) -> Vec<u32> {
    let mut tokenizer = tokenizers::Tokenizer::from_file(PathBuf::from(minilm()).join("tokenizer.json")).unwrap();
    // tokenizer.json pads to 128 tokens; the model runs unpadded.
    tokenizer.with_padding(None);
    tokenizer.encode(text, true).unwrap().get_ids().to_vec()
}

fn embeddings_of(reply: &Reply) -> Vec<Vec<f32>> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().as_array().unwrap().iter().map(floats).collect()
}

fn openai_embeddings_of(reply: &Reply) -> Vec<Vec<f32>> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["data"].as_array().unwrap().iter().map(|d| floats(&d["embedding"])).collect()
}

#[test]
fn tei_embed_token_ids_and_truncation_match_runner_embed() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let long = corpus_texts().join(" ");
    let texts = ["A cat sits on the mat.", "Quantized BERT is fast.", &long];
    let expected = runner_embed(&texts);
    assert_eq!(expected[2].0, 256, "the long text must be cut to the model's 256 tokens");
    let want: Vec<Vec<f32>> = expected.iter().map(|(_, e)| e.clone()).collect();
    let server = Server::start(&[]);

    assert_same(&embeddings_of(&server.post("/embed", &json!({"inputs": texts[..2]}))), &want[..2], "list");
    assert_same(&embeddings_of(&server.post("/embed", &json!({"inputs": texts[1]}))), &want[1..2], "string");
    // Too long: refused unless truncate is set; cut, it is what runner embed gives.
    let refused = server.post("/embed", &json!({"inputs": texts}));
    assert_eq!(refused.status, 413);
    let (code, message) = refused.error();
    assert_eq!(code, "input_too_long");
    assert!(message.contains("`inputs[2]`") && message.contains("256 tokens"), "{message}");
    let cut = server.post("/embed", &json!({"inputs": texts, "truncate": true}));
    assert_same(&embeddings_of(&cut), &want, "truncate");
    // /v1/embeddings cuts long texts, as runner embed does.
    let reply = server.post("/v1/embeddings", &json!({"model": "all-MiniLM-L6-v2", "input": texts}));
    assert_same(&openai_embeddings_of(&reply), &want, "/v1/embeddings");
    let tokens: usize = expected.iter().map(|(t, _)| t).sum();
    assert_eq!(reply.json()["usage"]["prompt_tokens"], tokens);

    // normalize: false gives the pooled vectors, whose direction is the normalised embedding.
    let raw = embeddings_of(&server.post("/embed", &json!({"inputs": texts[..2], "normalize": false})));
    for (raw, want) in raw.iter().zip(&want) {
        let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() > 0.01, "norm {norm}: not the raw pooled vector");
        raw.iter().zip(want).for_each(|(r, w)| assert!((r / norm - w).abs() < 1e-6));
    }

    // Token ids (special tokens included) give the embedding of the text they come from.
    let ids: Vec<Vec<u32>> = texts[..2].iter().map(|t| tokenize(t)).collect();
    assert_same(&embeddings_of(&server.post("/embed", &json!({"inputs": ids}))), &want[..2], "ids");
    let one = server.post("/v1/embeddings", &json!({"model": "all-MiniLM-L6-v2", "input": ids[0]}));
    assert_same(&openai_embeddings_of(&one), &want[..1], "one id list");
    let mixed = json!({"model": minilm(), "input": [ids[0], texts[1]], "encoding_format": "float"});
    assert_same(&openai_embeddings_of(&server.post("/v1/embeddings", &mixed)), &want[..2], "mixed");
}

#[test]
fn health_info_and_metrics() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let server = Server::start(&["--max-batch-tokens", "512", "--max-concurrent", "7"]);
    let health = server.call("GET", "/health", &[], b"");
    assert_eq!((health.status, health.json()), (200, json!({"status": "ok"})));
    let info = server.call("GET", "/info", &[], b"").json();
    assert_eq!(info["model_id"], "all-MiniLM-L6-v2");
    assert_eq!(info["dimensions"], 384);
    assert_eq!(info["max_input_length"], 256);
    assert_eq!(
        info["quantization"]["plan"],
        json!({"default": "w8a8-b64-pb", "embeddings": "int8-g32", "smooth": 0.5})
    );
    assert_eq!(info["quantization"]["layer_schemes"], json!({"w8a8-b64-pb": 24}));
    assert_eq!((info["max_batch_tokens"].as_u64(), info["max_concurrent_requests"].as_u64()), (Some(512), Some(7)));
    // Two inputs of 256 tokens cannot share a 512-token batch with a third.
    let long = corpus_texts().join(" ");
    assert_eq!(server.post("/embed", &json!({"inputs": [long, long, long], "truncate": true})).status, 200);
    assert_eq!(server.post("/embed", &json!({"inputs": []})).status, 400);
    let metrics = server.call("GET", "/metrics", &[], b"");
    assert!(metrics.headers["content-type"].starts_with("text/plain; version=0.0.4"), "{:?}", metrics.headers);
    let text = metrics.text();
    for line in [
        "runner_requests_total{path=\"/embed\",status=\"200\"} 1",
        "runner_request_errors_total{path=\"/embed\",status=\"400\"} 1",
        "runner_requests_total{path=\"/info\",status=\"200\"} 1",
        "runner_queue_depth 0",
        "runner_queue_capacity 7",
        "runner_batch_inputs_count 2",
        "runner_batch_inputs_sum 3",
        "runner_batch_tokens_sum 768",
        "runner_request_duration_seconds_count{path=\"/embed\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

#[test]
fn bad_requests_get_clear_4xx_answers_and_the_server_carries_on() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let server = Server::start(&[]);
    let model = "\"model\": \"all-MiniLM-L6-v2\"";
    let ten_thousand = json!({"model": "all-MiniLM-L6-v2", "input": vec!["x"; 10_000]}).to_string();
    let ten_megabytes = format!("{{{model}, \"input\": \"{}\"}}", "a".repeat(10 << 20));
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        ("/v1/embeddings", b"{\"input\": ".to_vec(), 400, "invalid_json", "not valid JSON"),
        ("/v1/embeddings", b"".to_vec(), 400, "invalid_json", "not valid JSON"),
        ("/v1/embeddings", format!("{{{model}, \"input\": 5}}").into(), 400, "invalid_input", "`input` must be"),
        ("/v1/embeddings", format!("{{{model}, \"input\": [\"a\", {{}}]}}").into(), 400, "invalid_input", "`input[1]`"),
        (
            "/v1/embeddings",
            b"{\"model\": 1, \"input\": \"a\"}".to_vec(),
            400,
            "invalid_request",
            "`model`: invalid type",
        ),
        ("/v1/embeddings", b"{\"input\": \"a\"}".to_vec(), 400, "invalid_request", "missing field `model`"),
        ("/v1/embeddings", format!("{{{model}, \"input\": []}}").into(), 400, "empty_input", "empty list"),
        ("/v1/embeddings", format!("{{{model}, \"input\": \" \"}}").into(), 400, "empty_input", "`input[0]` is empty"),
        ("/v1/embeddings", ten_megabytes.into(), 413, "body_too_large", "limit of 2097152 bytes"),
        ("/v1/embeddings", ten_thousand.into(), 413, "too_many_inputs", "10000 items"),
        (
            "/v1/embeddings",
            [&b"{\"model\": \"m\", \"input\": \"\xc3\xa9\xff\"}"[..]].concat(),
            400,
            "invalid_utf8",
            "UTF-8",
        ),
        (
            "/v1/embeddings",
            format!("{{{model}, \"input\": \"a\", \"tone\": 1}}").into(),
            400,
            "invalid_request",
            "unknown field `tone`",
        ),
        (
            "/v1/embeddings",
            format!("{{{model}, \"input\": [[101, 99999, 102]]}}").into(),
            400,
            "invalid_token_id",
            "99999",
        ),
        (
            "/v1/embeddings",
            format!("{{{model}, \"input\": \"a\", \"dimensions\": 385}}").into(),
            400,
            "invalid_dimensions",
            "1 to 384",
        ),
        (
            "/v1/embeddings",
            format!("{{{model}, \"input\": \"a\", \"encoding_format\": \"hex\"}}").into(),
            400,
            "invalid_request",
            "unknown variant",
        ),
        (
            "/v1/embeddings",
            b"{\"model\": \"gpt-4\", \"input\": \"a\"}".to_vec(),
            404,
            "model_not_found",
            "all-MiniLM-L6-v2",
        ),
        (
            "/embed",
            b"{\"inputs\": [\"a\"], \"normalize\": \"yes\"}".to_vec(),
            400,
            "invalid_request",
            "`normalize`: invalid type",
        ),
        ("/embed", b"[\"a\"]".to_vec(), 400, "invalid_request", "must be a JSON object"),
        ("/embed", br#"{"inputs": "a", "inputs": "b"}"#.to_vec(), 400, "invalid_json", "`inputs` appears twice"),
        ("/embed", br#"{"inputs": "\ud800"}"#.to_vec(), 400, "invalid_text", "lone UTF-16 surrogate"),
        ("/nowhere", b"{}".to_vec(), 404, "not_found", "no such path"),
    ];
    for (path, body, status, code, fragment) in cases {
        let start = Instant::now();
        let reply = server.call("POST", path, &[], &body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        assert_eq!(reply.status, status, "{shown}: {}", reply.text());
        let (got_code, message) = reply.error();
        assert_eq!(got_code, code, "{shown}: {message}");
        assert!(message.contains(fragment), "{shown}: {message:?} lacks {fragment:?}");
        assert!(start.elapsed() < Duration::from_secs(5), "{shown}: answered in {:?}", start.elapsed());
    }
    assert_eq!(server.call("GET", "/v1/embeddings", &[], b"").error().0, "method_not_allowed");
    // Bodies must be declared JSON.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let reply = server.call("POST", "/embed", &[("Content-Type", content_type)], br#"{"inputs": "a"}"#);
        assert_eq!((reply.status, reply.error().0.as_str()), (415, "unsupported_media_type"), "{content_type}");
    }
    let mut bare = server.conn();
    bare.write(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"inputs\": \"a\"}");
    let reply = bare.read_reply();
    assert_eq!(reply.status, 415);
    assert!(reply.error().1.contains("no Content-Type"), "{}", reply.text());
    // Still up, still right.
    let expected = runner_embed(&["Still here."]);
    let reply = server.post("/v1/embeddings", &json!({"model": "all-MiniLM-L6-v2", "input": "Still here."}));
    assert_same(&openai_embeddings_of(&reply), &[expected[0].1.clone()], "after bad requests");
}

#[test]
fn the_api_key_guards_every_route_but_health() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let server = Server::start(&["--api-key", "sesame"]);
    let body = json!({"model": "all-MiniLM-L6-v2", "input": "hello"}).to_string();
    for (method, path) in [("POST", "/v1/embeddings"), ("POST", "/embed"), ("GET", "/info"), ("GET", "/metrics")] {
        for headers in [&[][..], &[("Authorization", "Bearer open")], &[("Authorization", "sesame")]] {
            let reply = server.call(method, path, headers, body.as_bytes());
            assert_eq!(reply.status, 401, "{path} with {headers:?}");
            assert_eq!(reply.error().0, "invalid_api_key");
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
            assert_eq!(reply.json()["error"]["type"], "authentication_error");
        }
    }
    assert_eq!(server.call("GET", "/health", &[], b"").status, 200);
    let key = [("Authorization", "Bearer sesame")];
    assert_eq!(server.call("POST", "/v1/embeddings", &key, body.as_bytes()).status, 200);
    // The scheme's name is case-insensitive (RFC 9110); the key is not.
    for scheme in ["bearer", "BEARER"] {
        let key = format!("{scheme} sesame");
        assert_eq!(server.call("POST", "/embed", &[("Authorization", &key)], br#"{"inputs": "a"}"#).status, 200);
    }
    assert_eq!(server.call("GET", "/info", &[("Authorization", "Bearer SESAME")], b"").status, 401);
    assert_eq!(server.call("GET", "/info", &key, b"").status, 200);
}

#[test]
fn over_the_limit_requests_get_503_at_once_and_the_server_recovers() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let server = Server::start(&["--max-concurrent", "2"]);
    // Each request carries the corpus (114 texts), so admitted ones keep the model busy a while.
    let texts = corpus_texts();
    let body = json!({ "inputs": texts }).to_string();
    let replies: Vec<(Reply, Duration)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..24)
            .map(|_| {
                scope.spawn(|| {
                    let mut conn = server.conn();
                    let start = Instant::now();
                    let reply = conn.send("POST", "/embed", &[], body.as_bytes());
                    (reply, start.elapsed())
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let (busy, served): (Vec<_>, Vec<_>) = replies.iter().partition(|(r, _)| r.status == 503);
    assert!(busy.len() >= 12 && served.len() >= 2, "{} turned away, {} served", busy.len(), served.len());
    let fastest_served = served.iter().map(|(r, t)| (embeddings_of(r).len(), *t)).min_by_key(|(_, t)| *t).unwrap();
    assert_eq!(fastest_served.0, texts.len());
    for (reply, took) in &busy {
        assert_eq!(reply.error().0, "overloaded");
        assert_eq!(reply.headers["retry-after"], "1");
        assert!(*took < fastest_served.1, "a 503 took {took:?}; a served request {:?}", fastest_served.1);
    }
    let turned_away = server.metric("runner_request_errors_total{path=\"/embed\",status=\"503\"}");
    assert_eq!(turned_away, busy.len() as f64);
    assert_eq!(server.metric("runner_queue_depth"), 0.0);
    let expected = runner_embed(&["After the flood."]);
    let after = server.post("/embed", &json!({"inputs": "After the flood."}));
    assert_same(&embeddings_of(&after), &[expected[0].1.clone()], "after the flood");
}

#[test]
fn sigterm_finishes_the_requests_in_flight_then_exits_0() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let mut server = Server::start(&[]);
    let texts = corpus_texts();
    let doubled = [&texts[..], &texts[..]].concat();
    let body = json!({ "inputs": doubled }).to_string();
    let mut conn = server.conn();
    let reply = std::thread::scope(|scope| {
        let in_flight = scope.spawn(|| conn.send("POST", "/embed", &[], body.as_bytes()));
        let start = Instant::now();
        while server.metric("runner_queue_depth") < 1.0 {
            assert!(start.elapsed() < Duration::from_secs(10), "the request never reached the queue");
        }
        server.signal("TERM");
        // New connections are refused from now on, while the request in flight goes on.
        let start = Instant::now();
        while TcpStream::connect(&server.addr).is_ok() {
            assert!(start.elapsed() < Duration::from_secs(5), "still accepting connections after SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!in_flight.is_finished(), "the request was done before the server stopped accepting");
        in_flight.join().unwrap()
    });
    assert_eq!(embeddings_of(&reply).len(), 2 * texts.len());
    let status = server.exit_status(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "runner serve exit status {status:?}");

    // SIGINT (Ctrl-C) stops an idle server the same way.
    let mut idle = Server::start(&[]);
    idle.signal("INT");
    assert_eq!(idle.exit_status(Duration::from_secs(10)).code(), Some(0));
}

fn fixture(name: &str) -> String {
    workspace().join("tests/fixtures/architectures").join(name).display().to_string()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A reranker over both rerank APIs: the scores of transformers (raw, or through the sigmoid), best first, the
/// texts and documents given back when asked, `top_n`; `/info` names the task.
#[test]
fn reranker_serves_tei_and_cohere_rerank() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let model = fixture("bert-reranker");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{model}/reference.json")).unwrap()).unwrap();
    let pairs = reference["pairs"].as_array().unwrap();
    let (query, documents): (&str, Vec<&str>) = (
        pairs[0][0].as_str().unwrap(),
        pairs.iter().filter(|p| p[0] == pairs[0][0]).map(|p| p[1].as_str().unwrap()).collect(),
    );
    let expected: Vec<f32> = floats(&reference["scores"])[..documents.len()].to_vec();
    let server = Server::start_model(&model, &["--quant", "fp32"]);
    let info = server.call("GET", "/info", &[], b"").json();
    assert_eq!((info["task"].as_str(), info["model_type"].as_str()), (Some("reranking"), Some("BERT")), "{info}");

    let reply =
        server.post("/rerank", &json!({"query": query, "texts": documents, "raw_scores": true, "return_text": true}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let ranks = reply.json();
    let ranks = ranks.as_array().unwrap();
    assert_eq!(ranks.len(), documents.len());
    let scores: Vec<f32> = ranks.iter().map(|r| r["score"].as_f64().unwrap() as f32).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    for r in ranks {
        let index = r["index"].as_u64().unwrap() as usize;
        assert!((r["score"].as_f64().unwrap() as f32 - expected[index]).abs() <= 1e-4, "{r}");
        assert_eq!(r["text"], documents[index]);
    }
    let plain = server.post("/rerank", &json!({"query": query, "texts": documents})).json();
    for (raw, rel) in ranks.iter().zip(plain.as_array().unwrap()) {
        assert_eq!(raw["index"], rel["index"]);
        assert!(rel.get("text").is_none());
        let want = sigmoid(raw["score"].as_f64().unwrap() as f32);
        assert!((rel["score"].as_f64().unwrap() as f32 - want).abs() < 1e-6);
    }

    let docs = json!([documents[0], {"text": documents[1]}]);
    let reply =
        server.post("/v1/rerank", &json!({"query": query, "documents": docs, "top_n": 1, "return_documents": true}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let best = if expected[0] >= expected[1] { 0 } else { 1 };
    assert_eq!(results[0]["index"], best);
    assert_eq!(results[0]["document"], json!({"text": documents[best]}));
    assert!((results[0]["relevance_score"].as_f64().unwrap() as f32 - sigmoid(expected[best])).abs() < 1e-4);
    assert_eq!(v["model"], "bert-reranker");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

/// Bad rerank requests, and requests of the other task, are 4xx errors that say why.
#[test]
fn rerank_and_embedding_routes_refuse_the_other_task() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let reranker = Server::start_model(&fixture("xlm-roberta-reranker"), &[]);
    let bad = |path: &str, body: Value| {
        let reply = reranker.post(path, &body);
        (reply.status, reply.error())
    };
    let (status, (code, message)) = bad("/rerank", json!({"query": "q", "texts": []}));
    assert_eq!((status, code.as_str()), (400, "empty_input"), "{message}");
    let (status, (_, message)) = bad("/rerank", json!({"query": " ", "texts": ["a"]}));
    assert!(status == 400 && message.contains("`query` is empty"), "{message}");
    let (status, (_, message)) = bad("/v1/rerank", json!({"query": "q", "documents": ["a", ""]}));
    assert!(status == 400 && message.contains("`documents[1]` is empty"), "{message}");
    let (status, (_, message)) = bad("/v1/rerank", json!({"query": "q", "documents": [{"title": "a"}]}));
    assert!(status == 400 && message.contains("no string field `text`"), "{message}");
    let (status, (code, _)) = bad("/v1/rerank", json!({"model": "other", "query": "q", "documents": ["a"]}));
    assert_eq!((status, code.as_str()), (404, "model_not_found"));
    let long = "word ".repeat(400);
    let (status, (code, _)) = bad("/rerank", json!({"query": "q", "texts": [long]}));
    assert_eq!((status, code.as_str()), (413, "input_too_long"));
    assert_eq!(reranker.post("/rerank", &json!({"query": "q", "texts": [long], "truncate": true})).status, 200);
    let (status, (code, message)) = bad("/v1/embeddings", json!({"input": "a", "model": "xlm-roberta-reranker"}));
    assert_eq!((status, code.as_str()), (400, "wrong_task"));
    assert!(message.contains("/rerank"), "{message}");
    assert_eq!(bad("/embed", json!({"inputs": "a"})).1 .0, "wrong_task");

    let embedder = Server::start_model(&fixture("bert-cls"), &[]);
    let reply = embedder.post("/rerank", &json!({"query": "q", "texts": ["a"]}));
    assert_eq!(reply.status, 400);
    let (code, message) = reply.error();
    assert_eq!(code, "wrong_task");
    assert!(message.contains("/v1/embeddings"), "{message}");
}

/// A model with `config_sentence_transformers.json` prompts: `prompt_name` on both embedding routes puts the prompt
/// before each text, exactly as `runner embed --prompt-name` does; an unknown name is a 400 that lists them.
#[test]
fn prompt_names_reach_both_embedding_apis() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let dir = std::env::temp_dir().join(format!("runner-serve-prompts-{}", std::process::id()));
    let source = PathBuf::from(fixture("qwen3-embedding"));
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(source.join("1_Pooling/config.json"), dir.join("1_Pooling/config.json")).unwrap();
    let prompt = "Instruct: find passages that answer the question\nQuery:";
    std::fs::write(dir.join("config_sentence_transformers.json"), json!({"prompts": {"query": prompt}}).to_string())
        .unwrap();
    let model = dir.display().to_string();
    let text = "Which engine runs quantized models?";
    let cli = |extra: &[&str]| -> Vec<f32> {
        let out =
            Command::new(env!("CARGO_BIN_EXE_runner")).args(["embed", "--model", &model]).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        floats(&serde_json::from_slice::<Value>(&out.stdout).unwrap()["embedding"])
    };
    let with_prompt = cli(&["--prompt-name", "query", text]);
    assert_eq!(with_prompt, cli(&[&format!("{prompt}{text}")]));
    let server = Server::start_model(&model, &[]);
    let name = dir.file_name().unwrap().to_str().unwrap();
    let v1 = server.post("/v1/embeddings", &json!({"model": name, "input": [text], "prompt_name": "query"})).json();
    assert_same(&[floats(&v1["data"][0]["embedding"])], std::slice::from_ref(&with_prompt), "/v1/embeddings");
    let tei = server.post("/embed", &json!({"inputs": text, "prompt_name": "query"})).json();
    assert_same(&[floats(&tei[0])], &[with_prompt], "/embed");
    let reply = server.post("/embed", &json!({"inputs": text, "prompt_name": "passage"}));
    assert_eq!(reply.status, 400);
    let (code, message) = reply.error();
    assert_eq!(code, "invalid_prompt_name");
    assert!(message.contains("[query]"), "{message}");
    assert_eq!(server.call("GET", "/info", &[], b"").json()["prompts"]["query"], prompt);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every embedder fixture through `/embed` and `/v1/embeddings` in fp32: sentence-transformers' embeddings
/// (cosine >= 0.99999), and `/info` names the architecture and the task.
#[test]
fn every_embedder_architecture_serves_the_reference_embeddings() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    for name in ["bert-cls", "xlm-roberta", "distilbert", "mpnet", "modernbert", "qwen3-embedding"] {
        let model = fixture(name);
        let reference: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{model}/reference.json")).unwrap()).unwrap();
        let texts: Vec<&str> =
            reference["inputs"].as_array().unwrap().iter().map(|i| i["text"].as_str().unwrap()).collect();
        let server = Server::start_model(&model, &["--quant", "fp32"]);
        assert_eq!(server.call("GET", "/info", &[], b"").json()["task"], "embedding", "{name}");
        let tei = server.post("/embed", &json!({"inputs": texts})).json();
        let v1 = server.post("/v1/embeddings", &json!({"model": name, "input": texts})).json();
        for (i, want) in reference["embeddings"].as_array().unwrap().iter().enumerate() {
            let want = floats(want);
            for got in [floats(&tei[i]), floats(&v1["data"][i]["embedding"])] {
                let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
                let norms =
                    got.iter().map(|x| x * x).sum::<f32>().sqrt() * want.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!(dot / norms >= 0.99999, "{name}: text {i}: cosine {}", dot / norms);
            }
        }
    }
}

/// Resident memory of process `pid`, in MiB.
fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

#[test]
fn slow_clients_are_cut_off_by_the_header_body_and_idle_limits() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let server = Server::start(&["--header-timeout", "1", "--body-timeout", "1", "--idle-timeout", "1"]);
    let limit = Duration::from_secs(8);
    let within =
        |took: Option<Duration>, low: f64, high: f64| took.is_some_and(|t| (low..high).contains(&t.as_secs_f64()));

    // Headers that never end, five bytes a second: the connection is closed once the header limit has passed.
    let mut dribble = server.conn();
    let mut writer = dribble.reader.get_ref().try_clone().unwrap();
    let dribbler = std::thread::spawn(move || {
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().chain([b'a'; 100].iter()) {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let took = dribble.closed_within(limit);
    assert!(within(took, 0.9, 4.0), "a dribbling client was cut off after {took:?}");
    dribbler.join().unwrap();

    // A body that stops short of its Content-Length: 408 once the body limit has passed, and the connection closes.
    let mut short = server.conn();
    let start = Instant::now();
    short.write(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inputs\": \"a\"");
    let reply = short.read_reply();
    assert!((0.9..4.0).contains(&start.elapsed().as_secs_f64()), "408 after {:?}", start.elapsed());
    assert_eq!((reply.status, reply.error().0.as_str()), (408, "body_timeout"), "{}", reply.text());
    assert_eq!(reply.headers["connection"], "close");
    assert!(short.closed_within(limit).is_some());

    // An idle keep-alive connection is closed after the idle limit, a silent new one after the header limit.
    let mut idle = server.conn();
    assert_eq!(idle.send("GET", "/health", &[], b"").status, 200);
    let took = idle.closed_within(limit);
    assert!(within(took, 0.9, 4.0), "an idle connection was closed after {took:?}");
    let took = server.conn().closed_within(limit);
    assert!(within(took, 0.9, 4.0), "a silent connection was closed after {took:?}");

    // A client that keeps to the limits is served as before.
    let expected = runner_embed(&["On time."]);
    assert_same(
        &embeddings_of(&server.post("/embed", &json!({"inputs": "On time."}))),
        &[expected[0].1.clone()],
        "after",
    );
}

#[test]
fn connections_over_the_cap_are_turned_away_and_the_cap_fits_the_open_file_limit() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    // 128 open files leave room for 96 connections.
    let server = Server::start_with_open_files(128, &["--header-timeout", "2"]);
    let mut silent: Vec<Conn> = (0..200).map(|_| server.conn()).collect();
    // Over the cap: a 503 in the OpenAI shape at once, and the connection is closed.
    let start = Instant::now();
    let mut health = server.conn();
    let reply = health.send("GET", "/health", &[], b"");
    assert!(start.elapsed() < Duration::from_secs(2), "answered after {:?}", start.elapsed());
    assert_eq!((reply.status, reply.error().0.as_str()), (503, "too_many_connections"), "{}", reply.text());
    assert!(reply.error().1.contains("limit of 96 connections"), "{}", reply.text());
    assert_eq!(reply.headers["retry-after"], "1");
    // The silent ones are closed by the header limit, and the server takes connections again.
    let closed = silent.iter_mut().map(|c| c.closed_within(Duration::from_secs(6))).filter(Option::is_some).count();
    assert_eq!(closed, 200, "every silent connection, taken or turned away, was closed");
    assert_eq!(server.call("GET", "/health", &[], b"").status, 200);
}

#[test]
fn bodies_wait_for_admission_so_memory_stays_bounded() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let server = Server::start(&["--max-concurrent", "2"]);
    assert_eq!(server.post("/embed", &json!({"inputs": "warm up"})).status, 200);
    let before = resident_mib(server.child.id());
    let head = |length: usize| {
        format!("POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n")
    };
    // Two requests are admitted and send their bodies slowly...
    let mut holders: Vec<Conn> = (0..2).map(|_| server.conn()).collect();
    for holder in &mut holders {
        holder.write(format!("{}{{\"inputs\": \"", head(2_000_000)).as_bytes());
    }
    std::thread::sleep(Duration::from_millis(300));
    // ...so the next is answered 503 as soon as its headers are in, with its body unread.
    let start = Instant::now();
    let mut next = server.conn();
    next.write(head(1_000_000).as_bytes());
    let reply = next.read_reply();
    assert_eq!((reply.status, reply.error().0.as_str()), (503, "overloaded"), "{}", reply.text());
    assert!(start.elapsed() < Duration::from_secs(1), "503 after {:?}", start.elapsed());

    // 60 clients sending 1.5 MB bodies meanwhile: none is buffered.
    let peak = std::thread::scope(|scope| {
        for _ in 0..60 {
            scope.spawn(|| {
                let mut conn = server.conn();
                let mut bytes = head(2_000_000).into_bytes();
                bytes.resize(bytes.len() + 1_500_000, b'a');
                let _ = conn.reader.get_mut().write_all(&bytes);
                std::thread::sleep(Duration::from_millis(1500));
            });
        }
        let start = Instant::now();
        let mut peak: f64 = 0.0;
        while start.elapsed() < Duration::from_millis(1500) {
            peak = peak.max(resident_mib(server.child.id()));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    assert!(peak - before < 40.0, "resident memory grew from {before:.0} to {peak:.0} MiB");
    drop(holders);
    assert_eq!(server.post("/embed", &json!({"inputs": "after"})).status, 200);
}

#[test]
fn big_requests_meet_a_token_budget_and_a_deadline() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let texts = corpus_texts();
    let server = Server::start(&["--max-request-tokens", "500"]);
    let reply = server.post("/embed", &json!({ "inputs": texts }));
    assert_eq!((reply.status, reply.error().0.as_str()), (413, "too_many_tokens"), "{}", reply.text());
    assert!(reply.error().1.contains("at most 500 per request"), "{}", reply.text());
    let reply = server.post("/v1/embeddings", &json!({"model": "all-MiniLM-L6-v2", "input": texts}));
    assert_eq!(reply.error().0, "too_many_tokens");
    assert_eq!(server.post("/embed", &json!({ "inputs": &texts[..3] })).status, 200);
    drop(server);

    let server = Server::start(&["--request-timeout", "0.2", "--max-batch-tokens", "256"]);
    let eightfold: Vec<&String> = texts.iter().cycle().take(8 * texts.len()).collect();
    let start = Instant::now();
    let reply = server.post("/embed", &json!({ "inputs": eightfold }));
    assert_eq!((reply.status, reply.error().0.as_str()), (504, "timeout"), "{}", reply.text());
    assert!(start.elapsed() < Duration::from_secs(2), "504 after {:?}", start.elapsed());
    // The request's remaining inputs were dropped: the next one is answered at once, and right (the reference
    // embedding comes from a `runner embed` process of its own, whose model load is no part of the wait).
    let expected = runner_embed(&["Next."]);
    let start = Instant::now();
    let reply = server.post("/embed", &json!({"inputs": "Next."}));
    assert!(start.elapsed() < Duration::from_secs(2), "answered after {:?}", start.elapsed());
    assert_same(&embeddings_of(&reply), &[expected[0].1.clone()], "after a timeout");
}

#[test]
fn a_one_text_request_is_not_stuck_behind_a_big_one() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let server = Server::start(&["--max-batch-tokens", "256"]);
    let texts = corpus_texts();
    let fourfold: Vec<&String> = texts.iter().cycle().take(4 * texts.len()).collect();
    let body = json!({ "inputs": fourfold }).to_string();
    let expected = runner_embed(&["Me first."]);
    std::thread::scope(|scope| {
        let big = scope.spawn(|| server.call("POST", "/embed", &[], body.as_bytes()));
        let start = Instant::now();
        while server.metric("runner_queue_depth") < 1.0 {
            assert!(start.elapsed() < Duration::from_secs(10), "the big request never reached the queue");
        }
        let small = server.post("/embed", &json!({"inputs": "Me first."}));
        assert!(!big.is_finished(), "the big request was done before the small one");
        assert_same(&embeddings_of(&small), &[expected[0].1.clone()], "beside a big request");
        assert_eq!(embeddings_of(&big.join().unwrap()).len(), fourfold.len());
    });
}

#[test]
fn shutdown_drops_half_sent_requests_after_the_grace_period_and_a_second_signal_stops_at_once() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let mut server = Server::start(&["--shutdown-grace", "1"]);
    let mut half = server.conn();
    half.write(b"GET /health HTTP/1.1\r\nHost: x\r\n");
    let mut idle = server.conn();
    assert_eq!(idle.send("GET", "/health", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    server.signal("TERM");
    let took = idle.closed_within(Duration::from_secs(5));
    assert!(took.is_some_and(|t| t < Duration::from_millis(900)), "an idle connection closed after {took:?}");
    assert_eq!(server.exit_status(Duration::from_secs(6)).code(), Some(0));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "exited after {took:?}, before the grace period ended");
    assert!(half.closed_within(Duration::from_secs(1)).is_some());

    // A second signal does not wait for the grace period.
    let mut server = Server::start(&["--shutdown-grace", "60"]);
    let mut half = server.conn();
    half.write(b"GET /health HTTP/1.1\r\nHost: x\r\n");
    std::thread::sleep(Duration::from_millis(100));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.child.try_wait().unwrap().is_none(), "the first signal waits for the half-sent request");
    server.signal("TERM");
    assert_eq!(server.exit_status(Duration::from_secs(2)).code(), Some(1));
}

#[test]
fn mutated_requests_get_4xx_or_200_never_a_5xx_or_a_hang() {
    let _shared = EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner);
    let server = Server::start(&[]);
    let seeds = [
        json!({"model": "all-MiniLM-L6-v2", "input": ["A cat sits.", "Zwei Hunde"], "dimensions": 8}).to_string(),
        json!({"inputs": [[101, 2023, 102], "text \u{e9}"], "normalize": false, "truncate": true}).to_string(),
    ];
    // A fixed-seed xorshift: the same 400 mutations every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let alphabet = b"{}[]\",:0123456789-.eE \\u\xff\x00atrue";
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for case in 0..400 {
        let seed = &seeds[case % 2];
        let mut body = seed.as_bytes().to_vec();
        for _ in 0..1 + next(3) {
            let at = next(body.len().max(1));
            match next(4) {
                0 => body[at] = alphabet[next(alphabet.len())],
                1 => body.insert(at, alphabet[next(alphabet.len())]),
                2 => body.truncate(at),
                _ => {
                    // A piece of the request again, inside itself.
                    let tail = body.split_off(at);
                    body.extend_from_slice(&seed.as_bytes()[..next(seed.len())]);
                    body.extend(tail);
                }
            }
            if body.is_empty() {
                body.push(b'{');
            }
        }
        let path = if case % 2 == 0 { "/v1/embeddings" } else { "/embed" };
        let reply = server.call("POST", path, &[], &body);
        let shown = String::from_utf8_lossy(&body);
        assert!(reply.status == 200 || (400..500).contains(&reply.status), "{path} {shown}: {}", reply.status);
        if reply.status != 200 {
            reply.error();
        }
        *statuses.entry(reply.status).or_default() += 1;
    }
    eprintln!("answers to 400 mutated requests by status: {statuses:?}");
    assert!(statuses.len() >= 2, "the mutations did not reach both answers: {statuses:?}");
    let expected = runner_embed(&["Unshaken."]);
    assert_same(
        &embeddings_of(&server.post("/embed", &json!({"inputs": "Unshaken."}))),
        &[expected[0].1.clone()],
        "after",
    );
}
