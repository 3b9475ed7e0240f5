//! `--model org/name[@revision]`: download a model from the Hugging Face hub into the standard HF cache.
//!
//! Layout, environment and behaviour follow `huggingface_hub`:
//! `{cache}/models--{org}--{name}/blobs/{etag}`, `snapshots/{commit}/{file}` (a relative symlink to the blob; a hard link
//! or copy where symlinks are unavailable) and `refs/{revision}` holding the commit sha.
//! Endpoint from `HF_ENDPOINT`, cache from `HF_HUB_CACHE` / `$HF_HOME/hub` / `~/.cache/huggingface/hub`, token from `HF_TOKEN`,
//! `HF_HUB_OFFLINE=1` never touches the network.
//!
//! Differences from `huggingface_hub`, chosen for a multi-GB model: a revision whose snapshot is already complete in the cache
//! is used without any request (delete `refs/{revision}` to pick up a newer commit); only the files the model needs are fetched.
//! Interrupted downloads resume from `blobs/{etag}.incomplete` with an HTTP Range request (automatically, up to
//! `HubConfig::retries` times, then on the next run); a finished blob is checked against
//! its size and, when the etag is a sha256 (LFS files), against its sha256, then renamed into place atomically.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// The model `dsvl-gpu run` uses when `--model` is not given.
pub const DEFAULT_MODEL: &str = "deepseek-ai/deepseek-vl-1.3b-chat";
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where to download from and where to cache; `from_env` reads the usual `HF_*` variables.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// e.g. `https://huggingface.co` (no trailing slash needed).
    pub endpoint: String,
    /// The hub cache root (the folder holding `models--org--name`).
    pub cache: PathBuf,
    /// Sent as `Authorization: Bearer {token}` to the endpoint (never to a redirect target).
    pub token: Option<String>,
    /// Never use the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// How many times an interrupted transfer is resumed automatically before giving up (`from_env`: 3).
    pub retries: u32,
}

impl HubConfig {
    /// `HF_ENDPOINT`, `HF_HUB_CACHE` / `HF_HOME` / `~/.cache/huggingface/hub`, `HF_TOKEN`, `HF_HUB_OFFLINE`.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let cache = if let Some(c) = var("HF_HUB_CACHE") {
            PathBuf::from(c)
        } else if let Some(h) = var("HF_HOME") {
            PathBuf::from(h).join("hub")
        } else {
            let home = var("HOME").or_else(|| var("USERPROFILE")).ok_or_else(|| Error::Invalid("cannot find the HF cache: set HF_HUB_CACHE, HF_HOME or HOME".into()))?;
            PathBuf::from(home).join(".cache").join("huggingface").join("hub")
        };
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        Ok(HubConfig { endpoint, cache, token: var("HF_TOKEN"), offline, retries: 3 })
    }
}

/// Download progress: the file (repo-relative), bytes done in it (including resumed bytes) and its size.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub file: &'a str,
    pub done: u64,
    pub total: u64,
}

/// A hub id with its revision (`main` when `@revision` is absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoId {
    pub id: String,
    pub revision: String,
}

impl RepoId {
    /// Parses `org/name[@revision]`.
    pub fn parse(arg: &str) -> Result<Self> {
        let (id, revision) = match arg.split_once('@') {
            Some((id, rev)) => (id, rev),
            None => (arg, "main"),
        };
        let ok_part = |s: &str| !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() != 2 || !parts.iter().all(|p| ok_part(p)) {
            return Err(Error::Invalid(format!("--model {arg}: neither a folder nor a hub id of the form org/name[@revision]")));
        }
        if revision.is_empty() || !safe_rel_path(revision) {
            return Err(Error::Invalid(format!("--model {arg}: bad revision `{revision}`")));
        }
        Ok(RepoId { id: id.to_string(), revision: revision.to_string() })
    }

    /// `models--org--name`.
    pub fn cache_dir_name(&self) -> String {
        format!("models--{}", self.id.replace('/', "--"))
    }
}

/// `--model`: an existing folder is used as is; otherwise a hub id, downloaded (once) with the settings from the environment.
pub fn resolve_model(arg: &str, progress: &mut dyn FnMut(&Progress)) -> Result<PathBuf> {
    let dir = Path::new(arg);
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    resolve_model_with(arg, &HubConfig::from_env()?, progress)
}

/// As `resolve_model`, with explicit settings (tests use this instead of the process environment).
pub fn resolve_model_with(arg: &str, cfg: &HubConfig, progress: &mut dyn FnMut(&Progress)) -> Result<PathBuf> {
    let dir = Path::new(arg);
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let repo = RepoId::parse(arg)?;
    let root = cfg.cache.join(repo.cache_dir_name());
    if let Some(snap) = cached_snapshot(&root, &repo.revision) {
        return Ok(snap);
    }
    if cfg.offline {
        return Err(Error::Hub { id: arg.to_string(), message: format!("HF_HUB_OFFLINE is set and no complete snapshot of revision {} is in {}", repo.revision, root.display()) });
    }
    download(&repo, cfg, &root, progress)
}

/// The snapshot folder of `revision` (a ref name or a commit sha) when it holds a loadable model.
pub fn cached_snapshot(root: &Path, revision: &str) -> Option<PathBuf> {
    let commit = if is_commit(revision) { revision.to_string() } else { fs::read_to_string(root.join("refs").join(revision)).ok()?.trim().to_string() };
    if !is_commit(&commit) {
        return None;
    }
    let snap = root.join("snapshots").join(&commit);
    snapshot_complete(&snap).then_some(snap)
}

/// config.json, tokenizer.json, and the weights: every shard of `model.safetensors.index.json`, else `model.safetensors`.
fn snapshot_complete(snap: &Path) -> bool {
    let is_file = |n: &str| snap.join(n).is_file();
    if !is_file("config.json") || !is_file("tokenizer.json") {
        return false;
    }
    if let Ok(index) = fs::read(snap.join("model.safetensors.index.json")) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&index) else { return false };
        let Some(map) = v.get("weight_map").and_then(|m| m.as_object()) else { return false };
        return map.values().all(|f| f.as_str().is_some_and(|f| safe_rel_path(f) && is_file(f)));
    }
    is_file("model.safetensors")
}

/// The files the model needs, out of a repository listing.
pub fn wanted(file: &str) -> bool {
    const NAMES: [&str; 7] = ["config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json", "processor_config.json"];
    NAMES.contains(&file) || (!file.contains('/') && file.ends_with(".safetensors"))
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A relative path with no `..`, no absolute part and no backslash (file names and revisions come from the server/user).
fn safe_rel_path(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.contains('\\') && !p.contains(':') && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn agent() -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .build();
    ureq::Agent::new_with_config(config)
}

/// Errors that mean the endpoint cannot be reached at all (only used for failures before any response: DNS, connect,
/// reset, timeout; std reports a failed name lookup as an uncategorised I/O error, so every transport I/O error counts).
fn unreachable(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::Timeout(_) | ureq::Error::Io(_))
}

/// `%`-encodes a path segment (a revision like `refs/pr/1` becomes `refs%2Fpr%2F1`).
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_path(p: &str) -> String {
    p.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
}

/// An etag as `huggingface_hub` stores it: quotes and a weak `W/` prefix removed.
fn clean_etag(s: &str) -> String {
    s.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

struct Hub<'a> {
    cfg: &'a HubConfig,
    repo: &'a RepoId,
    agent: ureq::Agent,
}

impl Hub<'_> {
    fn err(&self, message: String) -> Error {
        Error::Hub { id: format!("{}@{}", self.repo.id, self.repo.revision), message }
    }

    fn offline(&self) -> Error {
        Error::HubOffline { endpoint: self.cfg.endpoint.clone(), id: self.repo.id.clone() }
    }

    fn endpoint(&self) -> &str {
        self.cfg.endpoint.trim_end_matches('/')
    }

    fn request(&self, method: &str, url: &str, range_from: u64, auth: bool) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut req = ureq::http::Request::builder().method(method).uri(url).header("User-Agent", concat!("dsvl-gpu/", env!("CARGO_PKG_VERSION")));
        if auth && let Some(t) = &self.cfg.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if range_from > 0 {
            req = req.header("Range", format!("bytes={range_from}-"));
        }
        let req = req.body(()).map_err(ureq::Error::Http)?;
        self.agent.run(req)
    }

    fn status_error(&self, what: &str, status: u16) -> Error {
        let hint = match status {
            401 | 403 => "; if the model is private or gated, set HF_TOKEN",
            404 => "; check the id and revision",
            _ => "",
        };
        self.err(format!("{what}: HTTP {status}{hint}"))
    }

    /// `GET /api/models/{id}/revision/{rev}`: the commit sha and the file list.
    fn listing(&self) -> Result<(String, Vec<String>)> {
        let mut url = format!("{}/api/models/{}/revision/{}", self.endpoint(), self.repo.id, encode_segment(&self.repo.revision));
        // A renamed repository answers with a same-host redirect.
        let mut hops = 0;
        let (mut resp, status) = loop {
            let resp = self.request("GET", &url, 0, true).map_err(|e| if unreachable(&e) { self.offline() } else { self.err(format!("{url}: {e}")) })?;
            let status = resp.status().as_u16();
            match header(&resp, "location") {
                Some(loc) if (300..400).contains(&status) && loc.starts_with('/') && hops < 5 => {
                    hops += 1;
                    url = format!("{}{loc}", origin(self.endpoint()));
                }
                _ => break (resp, status),
            }
        };
        if status != 200 {
            return Err(self.status_error(&url, status));
        }
        let body = resp.body_mut().read_to_string().map_err(|e| self.err(format!("{url}: {e}")))?;
        #[derive(serde::Deserialize)]
        struct Sibling {
            rfilename: String,
        }
        #[derive(serde::Deserialize)]
        struct Info {
            sha: String,
            #[serde(default)]
            siblings: Vec<Sibling>,
        }
        let info: Info = serde_json::from_str(&body).map_err(|e| self.err(format!("{url}: bad JSON: {e}")))?;
        if !is_commit(&info.sha) {
            return Err(self.err(format!("{url}: `sha` is not a commit id: {:?}", info.sha)));
        }
        let files = info.siblings.into_iter().map(|s| s.rfilename).filter(|f| wanted(f)).collect();
        Ok((info.sha, files))
    }

    /// Fetches one file into `blobs/` and links it from the snapshot.
    fn fetch(&self, root: &Path, commit: &str, file: &str, progress: &mut dyn FnMut(&Progress)) -> Result<()> {
        let pointer = root.join("snapshots").join(commit).join(file);
        if pointer.is_file() {
            return Ok(());
        }
        let url = format!("{}/{}/resolve/{}/{}", self.endpoint(), self.repo.id, commit, encode_path(file));
        let net = |e: ureq::Error| if unreachable(&e) { self.offline() } else { self.err(format!("{file}: {e}")) };
        // Metadata first (redirects not followed), as huggingface_hub: the etag names the blob.
        // A relative redirect without file metadata (a renamed repository) is followed on the same host, as huggingface_hub does.
        let mut url = url;
        let mut hops = 0;
        let (head, location) = loop {
            let head = self.request("HEAD", &url, 0, true).map_err(net)?;
            let status = head.status().as_u16();
            if status == 200 {
                break (head, None);
            }
            if !(300..400).contains(&status) {
                return Err(self.status_error(file, status));
            }
            let loc = header(&head, "location").ok_or_else(|| self.err(format!("{file}: redirect without a Location")))?;
            let loc = if loc.starts_with('/') { format!("{}{loc}", origin(self.endpoint())) } else { loc };
            if header(&head, "x-linked-etag").is_none() && loc.starts_with(origin(self.endpoint())) && hops < 5 {
                hops += 1;
                url = loc;
                continue;
            }
            break (head, Some(loc));
        };
        let etag = header(&head, "x-linked-etag").or_else(|| header(&head, "etag")).map(|e| clean_etag(&e)).unwrap_or_default();
        if etag.is_empty() || etag.len() > 128 || !etag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(self.err(format!("{file}: the server gave no usable etag ({etag:?})")));
        }
        let size = header(&head, "x-linked-size").or_else(|| if location.is_none() { header(&head, "content-length") } else { None }).and_then(|s| s.parse::<u64>().ok());
        let blob = root.join("blobs").join(&etag);
        let io = |p: &Path, e: std::io::Error| Error::Io { path: p.display().to_string(), message: e.to_string() };
        fs::create_dir_all(root.join("blobs")).map_err(|e| io(&root.join("blobs"), e))?;
        if !blob.is_file() {
            let mut attempt = 0;
            // `Some(message)`: the transfer broke off; the bytes so far stay in `.incomplete` and the next attempt resumes.
            while let Some(message) = self.download_blob(&blob, &etag, size, location.as_deref().unwrap_or(&url), location.is_none(), file, progress)? {
                if attempt >= self.cfg.retries {
                    return Err(self.err(format!("{message}; run again to resume")));
                }
                attempt += 1;
                std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
            }
        }
        link(&blob, &pointer, file).map_err(|e| io(&pointer, e))
    }

    #[allow(clippy::too_many_arguments)]
    fn download_blob(&self, blob: &Path, etag: &str, size: Option<u64>, url: &str, auth: bool, file: &str, progress: &mut dyn FnMut(&Progress)) -> Result<Option<String>> {
        let io = |p: &Path, e: std::io::Error| Error::Io { path: p.display().to_string(), message: e.to_string() };
        let part = blob.with_file_name(format!("{etag}.incomplete"));
        let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|s| have > s) {
            have = 0;
        }
        let mut resp = self.request("GET", url, have, auth).map_err(|e| if unreachable(&e) { self.offline() } else { self.err(format!("{file}: {e}")) })?;
        let status = resp.status().as_u16();
        let resumed = match status {
            206 if have > 0 => true,
            200 => false,
            416 if size == Some(have) => true,
            s => return Err(self.status_error(file, s)),
        };
        let mut out = fs::OpenOptions::new().create(true).append(resumed).write(true).truncate(!resumed).open(&part).map_err(|e| io(&part, e))?;
        let check_sha = etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit());
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        if resumed {
            done = have;
            if check_sha {
                let mut f = fs::File::open(&part).map_err(|e| io(&part, e))?;
                let mut buf = vec![0u8; 1 << 20];
                let mut left = have;
                while left > 0 {
                    let n = f.read(&mut buf[..left.min(1 << 20) as usize]).map_err(|e| io(&part, e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    left -= n as u64;
                }
            }
        }
        let total = size.unwrap_or(0);
        progress(&Progress { file, done, total });
        if status != 416 {
            let mut reader = resp.body_mut().as_reader();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = out.flush();
                        return Ok(Some(format!("{file}: download interrupted after {done} of {total} bytes ({e})")));
                    }
                };
                if size.is_some_and(|s| done + n as u64 > s) {
                    return Err(self.err(format!("{file}: the server sent more than the announced {total} bytes")));
                }
                out.write_all(&buf[..n]).map_err(|e| io(&part, e))?;
                if check_sha {
                    hasher.update(&buf[..n]);
                }
                done += n as u64;
                progress(&Progress { file, done, total });
            }
        }
        out.sync_all().map_err(|e| io(&part, e))?;
        drop(out);
        if let Some(s) = size
            && done != s
        {
            return Ok(Some(format!("{file}: download interrupted after {done} of {s} bytes")));
        }
        if check_sha {
            let got = hex(&hasher.finish());
            if !got.eq_ignore_ascii_case(etag) {
                let _ = fs::remove_file(&part);
                return Err(self.err(format!("{file}: sha256 {got} does not match the server's {etag}; the partial download was removed")));
            }
        }
        fs::rename(&part, blob).map_err(|e| io(blob, e))?;
        Ok(None)
    }
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    match url[start..].find('/') {
        Some(i) => &url[..start + i],
        None => url,
    }
}

/// Points `pointer` at `blob`: a relative symlink (unix), else a hard link, else a copy.
fn link(blob: &Path, pointer: &Path, file: &str) -> std::io::Result<()> {
    if let Some(parent) = pointer.parent() {
        fs::create_dir_all(parent)?;
    }
    let _ = fs::remove_file(pointer);
    #[cfg(unix)]
    {
        // snapshots/{commit}/{file} -> ../../blobs/{etag}, one more `..` per folder in `file`.
        let depth = 2 + file.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        if let Some(name) = blob.file_name() {
            target.push(name);
        }
        if std::os::unix::fs::symlink(&target, pointer).is_ok() {
            return Ok(());
        }
    }
    let _ = file;
    if fs::hard_link(blob, pointer).is_ok() {
        return Ok(());
    }
    fs::copy(blob, pointer).map(|_| ())
}

fn download(repo: &RepoId, cfg: &HubConfig, root: &Path, progress: &mut dyn FnMut(&Progress)) -> Result<PathBuf> {
    let hub = Hub { cfg, repo, agent: agent() };
    let (commit, files) = hub.listing()?;
    if !files.iter().any(|f| f == "config.json") {
        return Err(hub.err("the repository has no config.json".into()));
    }
    for f in &files {
        if !safe_rel_path(f) {
            return Err(hub.err(format!("unsafe file name in the listing: {f:?}")));
        }
    }
    for f in &files {
        hub.fetch(root, &commit, f, progress)?;
    }
    let io = |p: &Path, e: std::io::Error| Error::Io { path: p.display().to_string(), message: e.to_string() };
    if repo.revision != commit {
        let r = root.join("refs").join(&repo.revision);
        if let Some(parent) = r.parent() {
            fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        fs::write(&r, &commit).map_err(|e| io(&r, e))?;
    }
    let snap = root.join("snapshots").join(&commit);
    if !snapshot_complete(&snap) {
        return Err(hub.err(format!("{} lacks the model files (config.json, tokenizer.json, *.safetensors)", snap.display())));
    }
    Ok(snap)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (FIPS 180-4), to check LFS downloads without another dependency.
pub struct Sha256 {
    h: [u32; 8],
    buf: [u8; 64],
    len: usize,
    total: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    pub fn new() -> Self {
        Sha256 { h: [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19], buf: [0; 64], len: 0, total: 0 }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.len > 0 {
            let n = (64 - self.len).min(data.len());
            self.buf[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len < 64 {
                return;
            }
            let block = self.buf;
            self.block(&block);
            self.len = 0;
        }
        let mut chunks = data.chunks_exact(64);
        for c in &mut chunks {
            let mut block = [0u8; 64];
            block.copy_from_slice(c);
            self.block(&block);
        }
        let rest = chunks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.len = rest.len();
    }

    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8);
        let mut pad = vec![0x80u8];
        let zeros = (64 + 56 - (self.len + 1) % 64) % 64;
        pad.extend(std::iter::repeat_n(0u8, zeros));
        pad.extend_from_slice(&bits.to_be_bytes());
        let total = self.total;
        self.update(&pad);
        self.total = total;
        let mut out = [0u8; 32];
        for (o, h) in out.chunks_exact_mut(4).zip(self.h) {
            o.copy_from_slice(&h.to_be_bytes());
        }
        out
    }

    fn block(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.h.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }
}

/// SHA-256 of a byte slice, as lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut s = Sha256::new();
    s.update(data);
    hex(&s.finish())
}
