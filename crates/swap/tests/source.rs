//! `swap::source`: resolving `--model ID|DIR` against a fake hf-hub cache and a fake Hub on 127.0.0.1.
//! Nothing here touches the real network.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use swap::source::{resolve_model, ModelFiles, ModelSource, ResolveOptions, SENTENCE_BERT_FILES};

const REPO: &str = "owner/name";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A unique folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("swap-source-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn all_bert_files() -> Vec<(&'static str, Vec<u8>)> {
    SENTENCE_BERT_FILES
        .required
        .iter()
        .chain(SENTENCE_BERT_FILES.optional)
        .map(|f| (*f, format!("{{\"fake\": \"{f}\"}}").into_bytes()))
        .collect()
}

/// Writes `files` into `cache/models--owner--name/snapshots/<commit>/` the way hf-hub does (blobs plus relative
/// symlinks on Unix, plain copies elsewhere) and `refs/<name>` for each of `refs`.
fn fill_cache(cache: &Path, commit: &str, files: &[(&str, Vec<u8>)], refs: &[&str]) -> PathBuf {
    let repo_dir = cache.join("models--owner--name");
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    for (i, (name, content)) in files.iter().enumerate() {
        let target = snapshot.join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let blob = repo_dir.join("blobs").join(format!("blob{i}"));
        std::fs::write(&blob, content).unwrap();
        #[cfg(unix)]
        {
            let depth = Path::new(name).components().count() + 1; // up to `snapshots/<commit>/`, then to the repo.
            let mut rel = PathBuf::new();
            for _ in 0..depth {
                rel.push("..");
            }
            std::os::unix::fs::symlink(rel.join("blobs").join(format!("blob{i}")), &target).unwrap();
        }
        #[cfg(not(unix))]
        std::fs::copy(&blob, &target).unwrap();
    }
    for name in refs {
        let ref_path = repo_dir.join("refs").join(name);
        std::fs::create_dir_all(ref_path.parent().unwrap()).unwrap();
        std::fs::write(ref_path, commit).unwrap();
    }
    snapshot
}

fn offline(cache: &Path) -> ResolveOptions {
    ResolveOptions { cache_dir: Some(cache.to_path_buf()), offline: Some(true), endpoint: None, progress: false }
}

fn online(cache: &Path, endpoint: &str) -> ResolveOptions {
    ResolveOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline: Some(false),
        endpoint: Some(endpoint.to_string()),
        progress: false,
    }
}

/// An endpoint where nothing listens: any request fails at once with "connection refused".
fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn err_text(result: anyhow::Result<PathBuf>) -> String {
    format!("{:#}", result.expect_err("expected an error"))
}

#[test]
fn parse_classifies_arguments() {
    assert_eq!(
        ModelSource::parse("sentence-transformers/all-MiniLM-L6-v2").unwrap(),
        ModelSource::Hub { repo_id: "sentence-transformers/all-MiniLM-L6-v2".into(), revision: "main".into() }
    );
    assert_eq!(
        ModelSource::parse("sentence-transformers/all-MiniLM-L6-v2@v1.0").unwrap(),
        ModelSource::Hub { repo_id: "sentence-transformers/all-MiniLM-L6-v2".into(), revision: "v1.0".into() }
    );
    assert_eq!(
        ModelSource::parse("o/n@refs/pr/1").unwrap(),
        ModelSource::Hub { repo_id: "o/n".into(), revision: "refs/pr/1".into() }
    );
    let tmp = TempDir::new("parse");
    let dir = tmp.path().to_str().unwrap();
    assert_eq!(ModelSource::parse(dir).unwrap(), ModelSource::Dir(tmp.path().to_path_buf()));
    assert_eq!("o/n@main".parse::<ModelSource>().unwrap().to_string(), "o/n@main");
}

#[test]
fn bad_arguments_are_rejected() {
    for bad in [
        "a/b/c",
        "no-slash",
        "/a",
        "a/",
        "owner/name@",
        "owner/na me",
        "owner/name@../../etc",
        "owner/name@a//b",
        "--a/b",
        "a--b/c",
        "a/b@c@d",
        "./does-not-exist/x",
    ] {
        let err = format!("{:#}", ModelSource::parse(bad).expect_err(bad));
        assert!(err.contains("not a folder and not a Hub id"), "{bad}: {err}");
        let tmp = TempDir::new("bad");
        let err = err_text(resolve_model(bad, &SENTENCE_BERT_FILES, &offline(tmp.path())));
        assert!(err.contains("not a folder and not a Hub id"), "{bad}: {err}");
    }
    let err = format!("{:#}", ModelSource::parse("").unwrap_err());
    assert!(err.contains("empty model argument"), "{err}");
    assert!(resolve_model("", &SENTENCE_BERT_FILES, &ResolveOptions::default()).is_err());
}

#[test]
fn a_file_is_not_a_model_folder() {
    let tmp = TempDir::new("file");
    let file = tmp.path().join("config.json");
    std::fs::write(&file, "{}").unwrap();
    let err = err_text(resolve_model(file.to_str().unwrap(), &SENTENCE_BERT_FILES, &offline(tmp.path())));
    assert!(err.contains("is a file, not a folder"), "{err}");
}

#[test]
fn existing_folder_resolves_to_itself() {
    let tmp = TempDir::new("dir");
    std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
    let arg = tmp.path().to_str().unwrap();
    // Offline or not, a folder never looks at the cache or the network.
    let cache = TempDir::new("dir-cache");
    for opts in [offline(cache.path()), online(cache.path(), &dead_endpoint())] {
        assert_eq!(resolve_model(arg, &SENTENCE_BERT_FILES, &opts).unwrap(), tmp.path());
    }
}

#[test]
fn folder_without_config_json_errors() {
    let tmp = TempDir::new("noconfig");
    std::fs::write(tmp.path().join("tokenizer.json"), "{}").unwrap();
    let err = err_text(resolve_model(tmp.path().to_str().unwrap(), &SENTENCE_BERT_FILES, &offline(tmp.path())));
    assert!(err.contains("no config.json"), "{err}");
    assert!(err.contains(tmp.path().to_str().unwrap()), "{err}");
}

#[test]
fn offline_finds_the_snapshot_through_refs_main() {
    let cache = TempDir::new("refs");
    let snapshot = fill_cache(cache.path(), COMMIT, &all_bert_files(), &["main"]);
    let dir = resolve_model(REPO, &SENTENCE_BERT_FILES, &offline(cache.path())).unwrap();
    assert_eq!(dir, snapshot);
    assert_eq!(
        std::fs::read_to_string(dir.join("1_Pooling/config.json")).unwrap(),
        "{\"fake\": \"1_Pooling/config.json\"}"
    );
    assert_eq!(resolve_model("owner/name@main", &SENTENCE_BERT_FILES, &offline(cache.path())).unwrap(), snapshot);
    // A cache that has everything needs no network even when online: the endpoint is dead.
    assert_eq!(resolve_model(REPO, &SENTENCE_BERT_FILES, &online(cache.path(), &dead_endpoint())).unwrap(), snapshot);
    // Another branch that is not cached.
    let err = err_text(resolve_model("owner/name@dev", &SENTENCE_BERT_FILES, &offline(cache.path())));
    assert!(err.contains("config.json") && err.contains("`dev`"), "{err}");
}

#[test]
fn offline_commit_hash_revision_resolves_without_a_ref() {
    let cache = TempDir::new("commit");
    let snapshot = fill_cache(cache.path(), COMMIT, &all_bert_files(), &[]);
    let arg = format!("{REPO}@{COMMIT}");
    assert_eq!(resolve_model(&arg, &SENTENCE_BERT_FILES, &offline(cache.path())).unwrap(), snapshot);
    // Without refs/main, the plain id is not cached.
    let err = err_text(resolve_model(REPO, &SENTENCE_BERT_FILES, &offline(cache.path())));
    assert!(err.contains("config.json") && err.contains(cache.path().to_str().unwrap()), "{err}");
}

#[test]
fn offline_optional_files_may_be_missing() {
    let cache = TempDir::new("optional");
    let required: Vec<_> =
        all_bert_files().into_iter().filter(|(f, _)| SENTENCE_BERT_FILES.required.contains(f)).collect();
    let snapshot = fill_cache(cache.path(), COMMIT, &required, &["main"]);
    assert_eq!(resolve_model(REPO, &SENTENCE_BERT_FILES, &offline(cache.path())).unwrap(), snapshot);
}

#[test]
fn offline_missing_required_file_is_named() {
    let cache = TempDir::new("missing");
    let files: Vec<_> = all_bert_files().into_iter().filter(|(f, _)| *f != "tokenizer.json").collect();
    fill_cache(cache.path(), COMMIT, &files, &["main"]);
    let err = err_text(resolve_model(REPO, &SENTENCE_BERT_FILES, &offline(cache.path())));
    assert!(err.contains("`tokenizer.json`"), "{err}");
    assert!(!err.contains("`config.json`"), "{err}");
    assert!(err.contains(cache.path().to_str().unwrap()), "{err}");
    assert!(err.contains("offline"), "{err}");
}

#[test]
fn offline_empty_cache_names_the_file_and_cache() {
    let cache = TempDir::new("empty");
    let err = err_text(resolve_model(REPO, &SENTENCE_BERT_FILES, &offline(cache.path())));
    assert!(err.contains("`config.json`") && err.contains(cache.path().to_str().unwrap()), "{err}");
}

#[test]
fn custom_file_lists_are_honoured() {
    let cache = TempDir::new("custom");
    let files = [("config.json", b"{}".to_vec()), ("model-00001-of-00002.safetensors", b"x".to_vec())];
    let snapshot = fill_cache(cache.path(), COMMIT, &files, &["main"]);
    let llama = ModelFiles { required: &["config.json", "model-00001-of-00002.safetensors"], optional: &[] };
    assert_eq!(resolve_model(REPO, &llama, &offline(cache.path())).unwrap(), snapshot);
    let more = ModelFiles { required: &["config.json", "tokenizer.model"], optional: &[] };
    let err = err_text(resolve_model(REPO, &more, &offline(cache.path())));
    assert!(err.contains("`tokenizer.model`"), "{err}");
}

#[test]
fn network_failure_is_a_clear_error() {
    let cache = TempDir::new("dead");
    let endpoint = dead_endpoint();
    let err = err_text(resolve_model(REPO, &SENTENCE_BERT_FILES, &online(cache.path(), &endpoint)));
    assert!(err.contains(&endpoint) && err.contains("HF_HUB_OFFLINE"), "{err}");
}

// ---- A fake Hub: just what hf-hub 0.4's sync API asks for. ----

/// Serves `GET /api/models/<repo>/revision/<rev>` (commit and file list) and
/// `GET /<repo>/resolve/<rev>/<file>` (with `Range`, `ETag`, `X-Repo-Commit`, `Content-Range`), one request per
/// connection, and records every request path.
struct FakeHub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    /// `unserved`: listed in the repo's file list, but every download of them fails with 500.
    fn start(sha: &'static str, files: Vec<(&'static str, Vec<u8>)>, unserved: &'static [&'static str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let files: HashMap<&'static str, (usize, Vec<u8>)> =
            files.into_iter().enumerate().map(|(i, (name, content))| (name, (i, content))).collect();
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        // A failed exchange shows up as a failed resolve in the test; keep serving.
                        let _ = serve(stream, sha, &files, unserved, &requests);
                    }
                }
            })
        };
        Self { addr, requests, stop, thread: Some(thread) }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    sha: &str,
    files: &HashMap<&str, (usize, Vec<u8>)>,
    unserved: &[&str],
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("range") {
                range = Some(value.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_string());
    requests.lock().unwrap().push(path.clone());

    let revision_ok = |rev: &str| rev == "main" || rev == sha;
    let mut out = stream;
    if method != "GET" {
        return respond(&mut out, "405 Method Not Allowed", &[], b"");
    }
    if let Some(rev) = path.strip_prefix(&format!("/api/models/{REPO}/revision/")) {
        if !revision_ok(rev) {
            return respond(&mut out, "404 Not Found", &[], b"{\"error\": \"Revision Not Found\"}");
        }
        let names = files.keys().chain(unserved);
        let siblings: Vec<String> = names.map(|f| format!("{{\"rfilename\": \"{f}\"}}")).collect();
        let body = format!("{{\"id\": \"{REPO}\", \"sha\": \"{sha}\", \"siblings\": [{}]}}", siblings.join(", "));
        return respond(&mut out, "200 OK", &[("Content-Type", "application/json".into())], body.as_bytes());
    }
    if let Some(rest) = path.strip_prefix(&format!("/{REPO}/resolve/")) {
        let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        if unserved.contains(&file) {
            return respond(&mut out, "500 Internal Server Error", &[], b"");
        }
        let Some((index, content)) = files.get(file).filter(|_| revision_ok(rev)) else {
            return respond(&mut out, "404 Not Found", &[("X-Error-Code", "EntryNotFound".into())], b"");
        };
        let headers = vec![("ETag", format!("\"etag-{index}\"")), ("X-Repo-Commit", sha.to_string())];
        let Some(range) = range else {
            return respond(&mut out, "200 OK", &headers, content);
        };
        // `bytes=START-` or `bytes=START-END`, END inclusive.
        let spec = range.strip_prefix("bytes=").unwrap_or("");
        let (start, end) = spec.split_once('-').unwrap_or(("", ""));
        let last = content.len().saturating_sub(1);
        let start: usize = start.parse().unwrap_or(0);
        let end: usize = end.parse().map_or(last, |e: usize| e.min(last));
        let mut headers = headers;
        headers.push(("Content-Range", format!("bytes {start}-{end}/{}", content.len())));
        return respond(&mut out, "206 Partial Content", &headers, content.get(start..=end).unwrap_or(&[]));
    }
    respond(&mut out, "404 Not Found", &[], b"")
}

fn respond(out: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// hf-hub's HTTP client (ureq 2) sends even 127.0.0.1 through a proxy named in the environment (it ignores
/// `NO_PROXY`), so the fake Hub cannot be reached then.
fn proxy_in_env() -> Option<String> {
    ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .into_iter()
        .find(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
        .map(str::to_string)
}

#[test]
fn downloads_into_an_empty_cache_from_a_fake_hub() {
    if let Some(var) = proxy_in_env() {
        eprintln!("skipping the fake-Hub download test: {var} is set and hf-hub would proxy 127.0.0.1");
        return;
    }
    const SHA: &str = "fedcba9876543210fedcba9876543210fedcba98";
    // The repo has every required file and two of the four optional ones.
    let served: Vec<_> = all_bert_files()
        .into_iter()
        .filter(|(f, _)| !matches!(*f, "sentence_bert_config.json" | "config_sentence_transformers.json"))
        .collect();
    let hub = FakeHub::start(SHA, served.clone(), &[]);
    let cache = TempDir::new("download");
    let opts = online(cache.path(), &hub.endpoint());

    let dir = resolve_model(REPO, &SENTENCE_BERT_FILES, &opts).unwrap();
    let repo_dir = cache.path().join("models--owner--name");
    assert_eq!(dir, repo_dir.join("snapshots").join(SHA));
    for (name, content) in &served {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), content, "{name}");
    }
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap().trim(), SHA);
    for absent in ["sentence_bert_config.json", "config_sentence_transformers.json"] {
        assert!(!dir.join(absent).exists());
        assert!(repo_dir.join(".no_exist").join(SHA).join(absent).exists(), "{absent} marker");
    }
    let requests = hub.requests();
    assert!(requests.contains(&format!("/api/models/{REPO}/revision/main")), "{requests:?}");
    assert!(requests.iter().any(|r| r.ends_with("/1_Pooling/config.json")), "{requests:?}");
    assert!(!requests.iter().any(|r| r.ends_with("sentence_bert_config.json")), "{requests:?}");

    // Everything is cached now (the absent optional files as markers): no more requests, online or offline.
    let before = hub.requests().len();
    assert_eq!(resolve_model(REPO, &SENTENCE_BERT_FILES, &opts).unwrap(), dir);
    assert_eq!(resolve_model(REPO, &SENTENCE_BERT_FILES, &offline(cache.path())).unwrap(), dir);
    assert_eq!(resolve_model(&format!("{REPO}@{SHA}"), &SENTENCE_BERT_FILES, &offline(cache.path())).unwrap(), dir);
    assert_eq!(hub.requests().len(), before, "{:?}", hub.requests());

    // A file lost from the snapshot is fetched again, into the same snapshot.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(resolve_model(REPO, &SENTENCE_BERT_FILES, &opts).unwrap(), dir);
    assert!(dir.join("tokenizer.json").exists());
    assert!(hub.requests().contains(&format!("/api/models/{REPO}/revision/{SHA}")), "{:?}", hub.requests());
}

#[test]
fn a_required_file_missing_on_the_hub_is_named() {
    if let Some(var) = proxy_in_env() {
        eprintln!("skipping the fake-Hub test: {var} is set and hf-hub would proxy 127.0.0.1");
        return;
    }
    let served: Vec<_> = all_bert_files().into_iter().filter(|(f, _)| *f != "model.safetensors").collect();
    let hub = FakeHub::start("fedcba9876543210fedcba9876543210fedcba98", served, &[]);
    let cache = TempDir::new("hub-missing");
    let err = err_text(resolve_model(REPO, &SENTENCE_BERT_FILES, &online(cache.path(), &hub.endpoint())));
    assert!(err.contains("`model.safetensors`"), "{err}");
    // Asked for an unknown revision, the Hub answers 404: a clear error, not a panic.
    let err = err_text(resolve_model("owner/name@nope", &SENTENCE_BERT_FILES, &online(cache.path(), &hub.endpoint())));
    assert!(err.contains("nope") && err.contains("does the repo exist"), "{err}");
}

#[test]
fn a_failed_download_is_a_clear_error() {
    if let Some(var) = proxy_in_env() {
        eprintln!("skipping the fake-Hub test: {var} is set and hf-hub would proxy 127.0.0.1");
        return;
    }
    let served: Vec<_> = all_bert_files().into_iter().filter(|(f, _)| *f != "model.safetensors").collect();
    let hub = FakeHub::start("fedcba9876543210fedcba9876543210fedcba98", served, &["model.safetensors"]);
    let cache = TempDir::new("hub-500");
    let err = err_text(resolve_model(REPO, &SENTENCE_BERT_FILES, &online(cache.path(), &hub.endpoint())));
    assert!(err.contains("downloading `model.safetensors`") && err.contains("500"), "{err}");
    assert!(err.contains(&hub.endpoint()) && err.contains(cache.path().to_str().unwrap()), "{err}");
}
