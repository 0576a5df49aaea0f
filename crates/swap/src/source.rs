//! Where a model comes from: a local folder, or a Hugging Face Hub repo id (`owner/name[@revision]`) resolved
//! through the standard hf-hub cache (`models--owner--name/{refs,snapshots,blobs}`), downloading missing files
//! with hf-hub's sync API unless offline.
//!
//! Lookup order for a Hub id: the local cache first (`refs/<revision>` → `snapshots/<commit>/`); only when a
//! wanted file is missing (and we are not offline) the Hub is asked for the commit and file list (of the cached
//! commit if there is one, so a cached revision is never moved, else of the revision), and the missing files are
//! downloaded into that commit's snapshot. Optional files that the repo does not have are
//! remembered as empty markers in `.no_exist/<commit>/`, as `huggingface_hub` does, so later runs stay offline.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

/// The default Hub endpoint, used when neither [`ResolveOptions::endpoint`] nor `HF_ENDPOINT` is set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Which files a model needs from its folder or snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFiles<'a> {
    /// Files that must exist; resolution fails without them.
    pub required: &'a [&'a str],
    /// Files fetched when the repo has them; their absence is not an error.
    pub optional: &'a [&'a str],
}

/// The files of a BERT sentence-transformers model.
pub const SENTENCE_BERT_FILES: ModelFiles<'static> = ModelFiles {
    required: &["config.json", "tokenizer.json", "model.safetensors"],
    optional: &[
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
        "quanto_qmap.json",
    ],
};

/// How Hub ids are resolved; every `None` falls back to the Hugging Face environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    /// The hf-hub cache folder (the one holding `models--*`); `None`: [`default_hub_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network; `None`: [`offline_from_env`] (`HF_HUB_OFFLINE`).
    pub offline: Option<bool>,
    /// The Hub URL; `None`: `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// Show hf-hub's progress bars while downloading.
    pub progress: bool,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        Self { cache_dir: None, offline: None, endpoint: None, progress: true }
    }
}

/// A parsed `--model` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// An existing local folder with the model files.
    Dir(PathBuf),
    /// A Hub model repo `owner/name` at a revision (branch, tag or commit; `main` when not given).
    Hub {
        /// `owner/name`.
        repo_id: String,
        /// What followed `@`, or `main`.
        revision: String,
    },
}

impl ModelSource {
    /// Classifies `arg`: an existing directory, else a Hub id `owner/name[@revision]`, else an error.
    pub fn parse(arg: &str) -> Result<Self> {
        if arg.is_empty() {
            bail!("empty model argument: expected a model folder or a Hub id like `owner/name[@revision]`");
        }
        let path = Path::new(arg);
        if path.is_dir() {
            return Ok(Self::Dir(path.to_path_buf()));
        }
        if path.exists() {
            bail!("model argument `{arg}` is a file, not a folder; give the model folder or a Hub id `owner/name`");
        }
        let (repo_id, revision) = match arg.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (arg, None),
        };
        let valid_id = match repo_id.split_once('/') {
            Some((owner, name)) => is_valid_repo_part(owner) && is_valid_repo_part(name),
            None => false,
        };
        if !valid_id || !revision.is_none_or(is_valid_revision) {
            bail!(
                "model argument `{arg}` is not a folder and not a Hub id: expected an existing folder or \
                 `owner/name[@revision]` (letters, digits, `-`, `_`, `.`), e.g. `sentence-transformers/all-MiniLM-L6-v2`"
            );
        }
        Ok(Self::Hub { repo_id: repo_id.to_string(), revision: revision.unwrap_or("main").to_string() })
    }

    /// The local folder holding `files`: the folder itself, or the Hub snapshot folder (downloading if allowed).
    pub fn resolve(&self, files: &ModelFiles<'_>, opts: &ResolveOptions) -> Result<PathBuf> {
        match self {
            Self::Dir(dir) => {
                if !dir.join("config.json").is_file() {
                    bail!("model folder {} has no config.json", dir.display());
                }
                Ok(dir.clone())
            }
            Self::Hub { repo_id, revision } => resolve_hub(repo_id, revision, files, opts)
                .with_context(|| format!("resolving Hub model {self} (no local folder of that name exists)")),
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "{}", dir.display()),
            Self::Hub { repo_id, revision } => write!(f, "{repo_id}@{revision}"),
        }
    }
}

impl FromStr for ModelSource {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Resolves a `--model ID|DIR` argument to a local folder holding `files` (see [`ModelSource`]).
pub fn resolve_model(arg: &str, files: &ModelFiles<'_>, opts: &ResolveOptions) -> Result<PathBuf> {
    ModelSource::parse(arg)?.resolve(files, opts)
}

/// The hf-hub cache folder from the environment: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn default_hub_cache_dir() -> Result<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("HF_HUB_CACHE") {
        return Ok(dir);
    }
    if let Some(home) = var("HF_HOME") {
        return Ok(home.join("hub"));
    }
    if let Some(cache) = var("XDG_CACHE_HOME") {
        return Ok(cache.join("huggingface").join("hub"));
    }
    match std::env::home_dir() {
        Some(home) => Ok(home.join(".cache").join("huggingface").join("hub")),
        None => bail!("cannot locate the Hugging Face cache: no home folder; set HF_HOME or HF_HUB_CACHE"),
    }
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes` or `on`).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// One `owner` or `name` part of a repo id, following the Hub's naming rules.
fn is_valid_repo_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 96
        && part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !part.starts_with(['-', '.'])
        && !part.ends_with(['-', '.'])
        && !part.contains("--")
        && !part.contains("..")
}

/// A branch, tag or commit; `/` is allowed (`refs/pr/1`) but nothing that escapes the `refs` folder.
fn is_valid_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && rev.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// A commit as written in `refs/*` or returned by the Hub: one safe path segment.
fn is_valid_commit(commit: &str) -> bool {
    !commit.is_empty()
        && commit != "."
        && commit != ".."
        && commit.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The cached commit of `revision`: `refs/<revision>`, or the revision itself when it is a commit hash.
fn cached_commit(repo_dir: &Path, revision: &str) -> Result<Option<String>> {
    let ref_path = repo_dir.join("refs").join(revision);
    match std::fs::read_to_string(&ref_path) {
        Ok(text) => {
            let commit = text.trim();
            if !is_valid_commit(commit) {
                bail!("cache ref file {} does not hold a commit hash", ref_path.display());
            }
            Ok(Some(commit.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(is_commit_hash(revision).then(|| revision.into())),
        Err(e) => Err(e).with_context(|| format!("reading cache ref file {}", ref_path.display())),
    }
}

fn no_exist_marker(repo_dir: &Path, commit: &str, file: &str) -> PathBuf {
    repo_dir.join(".no_exist").join(commit).join(file)
}

fn resolve_hub(repo_id: &str, revision: &str, files: &ModelFiles<'_>, opts: &ResolveOptions) -> Result<PathBuf> {
    let cache_dir = match &opts.cache_dir {
        Some(dir) => dir.clone(),
        None => default_hub_cache_dir()?,
    };
    // hf-hub links blobs with relative paths computed from absolute ones; keep everything absolute.
    let cache_dir = std::path::absolute(&cache_dir).unwrap_or(cache_dir);
    let offline = opts.offline.unwrap_or_else(offline_from_env);
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let repo_dir = cache_dir.join(repo.folder_name());

    // 1. The cache.
    let commit = cached_commit(&repo_dir, revision)?;
    if let Some(commit) = &commit {
        let snapshot = repo_dir.join("snapshots").join(commit);
        let missing_required: Vec<&str> =
            files.required.iter().copied().filter(|f| !snapshot.join(f).exists()).collect();
        let unknown_optional = files
            .optional
            .iter()
            .any(|f| !snapshot.join(f).exists() && !no_exist_marker(&repo_dir, commit, f).exists());
        if missing_required.is_empty() && (offline || !unknown_optional) {
            return Ok(snapshot);
        }
        if offline {
            bail!(
                "offline (HF_HUB_OFFLINE or the offline option): {} missing from the cached snapshot {} \
                 (Hugging Face cache {}); download the model first or turn offline mode off",
                quote_list(&missing_required),
                snapshot.display(),
                cache_dir.display()
            );
        }
    } else if offline {
        bail!(
            "offline (HF_HUB_OFFLINE or the offline option): {} not in the Hugging Face cache {} \
             (no cached revision `{revision}`: {} does not exist); download the model first or turn offline mode off",
            quote_list(files.required),
            cache_dir.display(),
            repo_dir.join("refs").join(revision).display()
        );
    }

    // 2. The Hub: which commit the revision is now, which files it has, then the missing ones.
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let endpoint = endpoint.trim_end_matches('/').to_string();
    let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir.clone()))
        .with_endpoint(endpoint.clone())
        .with_progress(opts.progress);
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.trim().is_empty()) {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    let api = builder.build().map_err(flat).context("building the hf-hub client")?;
    let network_hint = "check the network and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only the cache";
    // A cached commit stays pinned (only its missing files are fetched); otherwise the revision is looked up.
    let asked = commit.unwrap_or_else(|| revision.to_string());
    let info_repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, asked.clone());
    let info = api.repo(info_repo).info().map_err(flat).with_context(|| {
        format!(
            "could not ask {endpoint} about {repo_id}@{asked} (does the repo exist? gated or private repos need \
             HF_TOKEN; {network_hint})"
        )
    })?;
    if !is_valid_commit(&info.sha) {
        bail!("{endpoint} answered an invalid commit `{}` for {repo_id}@{revision}", info.sha);
    }
    let sha = info.sha;
    let listed: HashSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let absent: Vec<&str> = files.required.iter().copied().filter(|f| !listed.contains(f)).collect();
    if !absent.is_empty() {
        bail!("the Hub repo {repo_id}@{revision} (commit {sha}) has no {}", quote_list(&absent));
    }

    let snapshot = repo_dir.join("snapshots").join(&sha);
    // Pin downloads to the commit so that every file lands in the same snapshot folder.
    let pinned = api.repo(Repo::with_revision(repo_id.to_string(), RepoType::Model, sha.clone()));
    let wanted = files.required.iter().chain(files.optional).copied();
    for file in wanted {
        let target = snapshot.join(file);
        if target.exists() {
            continue;
        }
        if !listed.contains(file) {
            // Optional and absent upstream: remember it, so that later runs need no network.
            let marker = no_exist_marker(&repo_dir, &sha, file);
            if let Some(parent) = marker.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
            continue;
        }
        let path = pinned.download(file).map_err(flat).with_context(|| {
            format!(
                "downloading `{file}` of {repo_id}@{revision} from {endpoint} into {} ({network_hint})",
                cache_dir.display()
            )
        })?;
        if !target.exists() {
            bail!(
                "downloaded `{file}` of {repo_id} to {}, not to the snapshot of commit {sha} ({})",
                path.display(),
                snapshot.display()
            );
        }
    }
    if revision != sha {
        Cache::new(cache_dir.clone())
            .repo(repo)
            .create_ref(&sha)
            .with_context(|| format!("writing the cache ref {}", repo_dir.join("refs").join(revision).display()))?;
    }
    Ok(snapshot)
}

fn quote_list(files: &[&str]) -> String {
    files.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
}

/// hf-hub's errors repeat their source in their message; keep one copy so `{:#}` does not print it three times.
fn flat(e: hf_hub::api::sync::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
