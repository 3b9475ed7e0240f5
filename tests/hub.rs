//! Hub downloads against a tiny HTTP/1.1 server on 127.0.0.1 that serves the committed model
//! tests/fixtures/dsvl/tiny-orig the way huggingface.co does: the revision API, `resolve` URLs that
//! answer small files directly (git etag) and redirect LFS files (`x-linked-etag` = sha256,
//! `x-linked-size`) to a CDN path that honours Range requests, 404s, and a mode that drops the
//! connection half-way through a file. Settings go through `HubConfig`, never the process environment.
//! SHA-256 is checked against the FIPS 180-2 / NIST example vectors.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dsvl_gpu::hub::{resolve_model_with, sha256_hex, wanted, HubConfig, RepoId, Sha256};
use dsvl_gpu::Error;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dsvl/tiny-orig");

#[derive(Default)]
struct Stats {
    requests: AtomicUsize,
    /// Body bytes sent for LFS (CDN) files.
    lfs_bytes: AtomicU64,
    /// Drop the next CDN transfer after this many body bytes.
    drop_after: Mutex<Option<u64>>,
    /// Serve LFS files with their first byte flipped (sha256 mismatch).
    corrupt: Mutex<bool>,
    auth: Mutex<Vec<String>>,
}

struct Server {
    endpoint: String,
    stats: Arc<Stats>,
}

/// name -> bytes, and name -> sha256 (computed once; the server looks blobs up by it).
fn fixture_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(FIXTURE).unwrap() {
        let e = e.unwrap();
        files.insert(e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap());
    }
    files
}

fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let stats = Arc::new(Stats::default());
    let files = fixture_files();
    let shas: Arc<BTreeMap<String, String>> = Arc::new(files.iter().map(|(k, v)| (k.clone(), sha256_hex(v))).collect());
    let files = Arc::new(files);
    let s = stats.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (s, files, shas) = (s.clone(), files.clone(), shas.clone());
            std::thread::spawn(move || {
                let _ = serve(conn, &s, &files, &shas);
            });
        }
    });
    Server { endpoint, stats }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8], send_body: bool) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if send_body {
        conn.write_all(body)?;
    }
    conn.flush()
}

fn serve(mut conn: TcpStream, stats: &Stats, files: &BTreeMap<String, Vec<u8>>, shas: &BTreeMap<String, String>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let mut range_from = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or(("", ""));
        let v = v.trim();
        if k.eq_ignore_ascii_case("range") {
            range_from = v.strip_prefix("bytes=").and_then(|r| r.trim_end_matches('-').parse::<u64>().ok());
        }
        if k.eq_ignore_ascii_case("authorization") {
            stats.auth.lock().unwrap().push(format!("{path} {v}"));
        }
    }
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let body_too = method == "GET";
    let not_found = |conn: &mut TcpStream| respond(conn, "404 Not Found", &[("X-Error-Code".into(), "RepoNotFound".into())], b"{\"error\":\"Repository not found\"}", body_too);
    // A renamed repository: old/tiny redirects to org/tiny (API and resolve URLs), as the hub does.
    if let Some(rest) = path.strip_prefix("/api/models/old/tiny/").or_else(|| path.strip_prefix("/old/tiny/")) {
        let to = if path.starts_with("/api/") { format!("/api/models/org/tiny/{rest}") } else { format!("/org/tiny/{rest}") };
        return respond(&mut conn, "307 Temporary Redirect", &[("Location".into(), to)], b"", body_too);
    }
    if path == "/api/models/org/tiny/revision/main" {
        let siblings: Vec<_> = files.keys().map(|f| serde_json::json!({ "rfilename": f })).collect();
        let json = serde_json::json!({ "id": "org/tiny", "sha": COMMIT, "siblings": siblings }).to_string();
        return respond(&mut conn, "200 OK", &[("Content-Type".into(), "application/json".into())], json.as_bytes(), body_too);
    }
    if let Some(file) = path.strip_prefix(&format!("/org/tiny/resolve/{COMMIT}/")) {
        let Some(data) = files.get(file) else { return not_found(&mut conn) };
        let sha = &shas[file];
        if file.ends_with(".safetensors") {
            let headers = vec![
                ("Location".into(), format!("/cdn/{sha}")),
                ("X-Linked-Etag".into(), format!("\"{sha}\"")),
                ("X-Linked-Size".into(), data.len().to_string()),
                ("ETag".into(), "\"0000000000000000000000000000000000000000\"".into()),
                ("X-Repo-Commit".into(), COMMIT.into()),
            ];
            return respond(&mut conn, "302 Found", &headers, b"", body_too);
        }
        // A git-object etag (40 hex, not a sha256): stored under that name, size checked only.
        let headers = vec![("ETag".into(), format!("\"{}\"", &sha[..40])), ("X-Repo-Commit".into(), COMMIT.into())];
        return respond(&mut conn, "200 OK", &headers, data, body_too);
    }
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let Some(data) = shas.iter().find(|(_, v)| v.as_str() == sha).map(|(k, _)| &files[k]) else { return not_found(&mut conn) };
        let mut data = data.clone();
        if *stats.corrupt.lock().unwrap() {
            data[0] ^= 1;
        }
        let from = range_from.unwrap_or(0).min(data.len() as u64) as usize;
        let body = &data[from..];
        let mut headers = vec![("Content-Length".to_string(), body.len().to_string())];
        let status = if range_from.is_some() {
            headers.push(("Content-Range".into(), format!("bytes {from}-{}/{}", data.len() - 1, data.len())));
            "206 Partial Content"
        } else {
            "200 OK"
        };
        let drop_after = stats.drop_after.lock().unwrap().take();
        if let Some(n) = drop_after.filter(|_| body_too) {
            // Announce everything, send part, hang up.
            respond(&mut conn, status, &headers, b"", false)?;
            let n = (n as usize).min(body.len());
            conn.write_all(&body[..n])?;
            stats.lfs_bytes.fetch_add(n as u64, Ordering::SeqCst);
            conn.flush()?;
            return conn.shutdown(std::net::Shutdown::Both);
        }
        if body_too {
            stats.lfs_bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
        }
        return respond(&mut conn, status, &headers, body, body_too);
    }
    not_found(&mut conn)
}

fn temp_cache(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dsvl-hub-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig { endpoint: endpoint.to_string(), cache: cache.to_path_buf(), token: Some("secret".into()), offline: false, retries: 0 }
}

fn no_progress() -> impl FnMut(&dsvl_gpu::hub::Progress) {
    |_| {}
}

/// An endpoint where nothing listens.
fn dead_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[test]
fn download_resume_layout_and_cache_reuse() {
    let server = start();
    let cache = temp_cache("resume");
    let cfg = config(&server.endpoint, &cache);
    let model = std::fs::read(Path::new(FIXTURE).join("model.safetensors")).unwrap();
    let total = model.len() as u64;
    let sha = sha256_hex(&model);

    // 1. The weights transfer breaks off half-way: a clear error, the bytes kept in blobs/{sha}.incomplete.
    *server.stats.drop_after.lock().unwrap() = Some(total / 2);
    let err = resolve_model_with("org/tiny", &cfg, &mut no_progress()).unwrap_err();
    assert!(matches!(err, Error::Hub { .. }) && err.to_string().contains("run again to resume"), "{err}");
    let root = cache.join("models--org--tiny");
    let partial = root.join("blobs").join(format!("{sha}.incomplete"));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), total / 2);
    assert!(!root.join("refs/main").exists(), "refs/main is written only once the snapshot is complete");

    // 2. Resume: only the missing half travels, with a Range request.
    let before = server.stats.lfs_bytes.load(Ordering::SeqCst);
    let mut seen = Vec::new();
    let snap = resolve_model_with("org/tiny", &cfg, &mut |p| seen.push((p.file.to_string(), p.done, p.total))).unwrap();
    let fetched = server.stats.lfs_bytes.load(Ordering::SeqCst) - before;
    println!("resume fetched {fetched} of {total} bytes");
    assert_eq!(fetched, total - total / 2);
    assert!(fetched < total);
    assert!(seen.iter().any(|(f, d, t)| f == "model.safetensors" && *d == total && *t == total), "progress reaches the end");
    assert!(seen.iter().any(|(f, d, _)| f == "model.safetensors" && *d == total / 2), "progress starts from the resumed bytes");

    // 3. Layout as huggingface_hub: refs/main -> commit, snapshots/{commit}/{file} -> ../../blobs/{etag}.
    assert_eq!(snap, root.join("snapshots").join(COMMIT));
    assert_eq!(std::fs::read_to_string(root.join("refs/main")).unwrap(), COMMIT);
    let mut expect: Vec<String> = fixture_files().into_keys().filter(|f| wanted(f)).collect();
    expect.sort();
    let mut got: Vec<String> = std::fs::read_dir(&snap).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    got.sort();
    assert_eq!(got, expect, "only the files the model needs (no cases.json, no .npy)");
    assert_eq!(got.len(), 7);
    for f in &got {
        assert_eq!(std::fs::read(snap.join(f)).unwrap(), std::fs::read(Path::new(FIXTURE).join(f)).unwrap(), "{f} byte-identical");
    }
    #[cfg(unix)]
    {
        let target = std::fs::read_link(snap.join("model.safetensors")).unwrap();
        assert_eq!(target, Path::new("../../blobs").join(&sha));
        let cfg_sha = sha256_hex(&std::fs::read(Path::new(FIXTURE).join("config.json")).unwrap());
        assert_eq!(std::fs::read_link(snap.join("config.json")).unwrap(), Path::new("../../blobs").join(&cfg_sha[..40]));
    }
    let blobs: Vec<String> = std::fs::read_dir(root.join("blobs")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(blobs.len(), 7);
    assert!(blobs.iter().all(|b| !b.ends_with(".incomplete")));
    // The token goes to the endpoint, never to the redirect target.
    let auth = server.stats.auth.lock().unwrap().clone();
    assert!(auth.iter().any(|a| a.starts_with("/api/models/org/tiny") && a.ends_with("Bearer secret")));
    assert!(auth.iter().all(|a| !a.starts_with("/cdn/")), "{auth:?}");

    // 4. Again: the complete snapshot is used without a single request.
    let requests = server.stats.requests.load(Ordering::SeqCst);
    assert_eq!(resolve_model_with("org/tiny", &cfg, &mut no_progress()).unwrap(), snap);
    assert_eq!(server.stats.requests.load(Ordering::SeqCst), requests);

    // 5. ... also when the endpoint is unreachable, by ref or by commit, and with HF_HUB_OFFLINE.
    let dead = HubConfig { endpoint: dead_endpoint(), ..cfg.clone() };
    assert_eq!(resolve_model_with("org/tiny", &dead, &mut no_progress()).unwrap(), snap);
    assert_eq!(resolve_model_with(&format!("org/tiny@{COMMIT}"), &dead, &mut no_progress()).unwrap(), snap);
    let offline = HubConfig { offline: true, ..dead };
    assert_eq!(resolve_model_with("org/tiny", &offline, &mut no_progress()).unwrap(), snap);

    // 6. With retries, a broken transfer resumes by itself within one call.
    let auto = temp_cache("auto-resume");
    let cfg_auto = HubConfig { retries: 1, ..config(&server.endpoint, &auto) };
    *server.stats.drop_after.lock().unwrap() = Some(total / 3);
    let before = server.stats.lfs_bytes.load(Ordering::SeqCst);
    let snap_auto = resolve_model_with("org/tiny", &cfg_auto, &mut no_progress()).unwrap();
    assert_eq!(server.stats.lfs_bytes.load(Ordering::SeqCst) - before, total, "a third, then the remaining two thirds");
    assert_eq!(std::fs::read(snap_auto.join("model.safetensors")).unwrap(), model);
    let _ = std::fs::remove_dir_all(&auto);

    // 7. A lost snapshot file is fetched again from the existing blob (HEAD only, no body).
    std::fs::remove_file(snap.join("model.safetensors")).unwrap();
    let before = server.stats.lfs_bytes.load(Ordering::SeqCst);
    assert_eq!(resolve_model_with("org/tiny", &cfg, &mut no_progress()).unwrap(), snap);
    assert_eq!(server.stats.lfs_bytes.load(Ordering::SeqCst), before);
    assert_eq!(std::fs::read(snap.join("model.safetensors")).unwrap(), model);
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn offline_errors() {
    let cache = temp_cache("offline");
    let endpoint = dead_endpoint();
    let err = resolve_model_with("org/tiny", &config(&endpoint, &cache), &mut no_progress()).unwrap_err();
    assert_eq!(err.to_string(), format!("cannot reach {endpoint} to download org/tiny; pass a local folder or set HF_ENDPOINT"));
    // An unknown host name.
    let err = resolve_model_with("org/tiny", &config("http://nonexistent.invalid", &cache), &mut no_progress()).unwrap_err();
    assert!(matches!(err, Error::HubOffline { .. }), "{err}");
    let offline = HubConfig { offline: true, ..config(&endpoint, &cache) };
    let err = resolve_model_with("org/tiny", &offline, &mut no_progress()).unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn not_found_and_corrupt() {
    let server = start();
    let cache = temp_cache("errors");
    let cfg = config(&server.endpoint, &cache);
    let err = resolve_model_with("org/missing", &cfg, &mut no_progress()).unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    // A folder that exists is used as is, whatever its name looks like.
    assert_eq!(resolve_model_with(FIXTURE, &cfg, &mut no_progress()).unwrap(), PathBuf::from(FIXTURE));
    for bad in ["tiny", "a/b/c", "org/../x", "org/name@", "org/name@../../etc", "/abs/path/not/there"] {
        assert!(matches!(resolve_model_with(bad, &cfg, &mut no_progress()), Err(Error::Invalid(_))), "{bad}");
    }
    assert_eq!(RepoId::parse("a/b@v1.0").unwrap(), RepoId { id: "a/b".into(), revision: "v1.0".into() });

    // A renamed repository is followed through its same-host redirects.
    let renamed = temp_cache("renamed");
    let snap = resolve_model_with("old/tiny", &config(&server.endpoint, &renamed), &mut no_progress()).unwrap();
    assert_eq!(snap, renamed.join("models--old--tiny/snapshots").join(COMMIT));
    assert_eq!(std::fs::read(snap.join("tokenizer.json")).unwrap(), std::fs::read(Path::new(FIXTURE).join("tokenizer.json")).unwrap());
    let _ = std::fs::remove_dir_all(&renamed);

    // Bytes that do not hash to the LFS etag are rejected and not kept.
    *server.stats.corrupt.lock().unwrap() = true;
    let err = resolve_model_with("org/tiny", &cfg, &mut no_progress()).unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    let blobs = cache.join("models--org--tiny/blobs");
    assert!(std::fs::read_dir(&blobs).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(&sha256_hex(&std::fs::read(Path::new(FIXTURE).join("model.safetensors")).unwrap()))));
    *server.stats.corrupt.lock().unwrap() = false;
    assert!(resolve_model_with("org/tiny", &cfg, &mut no_progress()).is_ok());
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn sha256_matches_nist_vectors() {
    assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let two = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_eq!(sha256_hex(two), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    let million = vec![b'a'; 1_000_000];
    assert_eq!(sha256_hex(&million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    // Streaming in awkward pieces gives the same digest.
    let mut s = Sha256::new();
    let mut rest: &[u8] = &million;
    for n in [1usize, 63, 64, 65, 127, 1000, 7].iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let k = (*n).min(rest.len());
        s.update(&rest[..k]);
        rest = &rest[k..];
    }
    assert_eq!(dsvl_gpu::hub::hex(&s.finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
