//! A safetensors reader of our own, working on a byte slice (a memory map natively, fetched
//! bytes in the browser): the header is validated completely before any tensor is touched, and a
//! tensor's bytes are handed out as a sub-slice, never copied.
//!
//! Format: 8-byte little-endian header length N, N bytes of JSON
//! `{"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`,
//! then the data; offsets are relative to the end of the header.
//!
//! Sharded checkpoints: `model.safetensors.index.json` `{"weight_map": {"name": "shard file"}}`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ops::convert::Source;

/// Header lengths above this are refused before parsing (real headers are well under 1 MiB).
pub const MAX_HEADER: usize = 100 << 20;
/// Dimensions per tensor.
const MAX_RANK: usize = 8;

/// One tensor's entry; `range` is absolute in the file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Source,
    pub shape: Vec<usize>,
    pub range: std::ops::Range<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed header: the tensors in file order and `__metadata__`.
#[derive(Clone, Debug)]
pub struct Header {
    pub file: String,
    pub tensors: Vec<TensorInfo>,
    pub metadata: HashMap<String, String>,
    by_name: HashMap<String, usize>,
}

impl Header {
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
}

/// The header's top-level entries in file order, so duplicates can be seen (a map would keep one).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, Value>()? {
                    v.push(e);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn err(file: &str, message: impl Into<String>) -> Error {
    Error::Safetensors { file: file.to_string(), message: message.into() }
}

fn terr(file: &str, tensor: &str, message: impl Into<String>) -> Error {
    Error::Weight { file: file.to_string(), tensor: tensor.to_string(), message: message.into() }
}

fn dtype_of(file: &str, name: &str, s: &str) -> Result<Source> {
    match s {
        "F32" => Ok(Source::F32),
        "F16" => Ok(Source::F16),
        "BF16" => Ok(Source::BF16),
        "U32" => Ok(Source::U32),
        "F64" | "I64" | "I32" | "I16" | "I8" | "U64" | "U16" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "F4" | "F6_E2M3" | "F6_E3M2" | "C64" => {
            Err(terr(file, name, format!("dtype {s} is not supported (F32, F16, BF16, or U32 for packed codes)")))
        }
        other => Err(terr(file, name, format!("unknown dtype `{}`", other.chars().take(32).collect::<String>()))),
    }
}

/// Parses and validates the header of a safetensors file held in `bytes`; `file` names it in errors.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Header> {
    parse_head(file, bytes, bytes.len())
}

/// As [`parse`], from the file's first bytes only (the 8-byte length and the whole header; more
/// is ignored) and its total length `file_len`: for files read on demand ([`RangeFetch`]).
pub fn parse_head(file: &str, bytes: &[u8], file_len: usize) -> Result<Header> {
    if bytes.len() > file_len {
        return Err(err(file, format!("{} bytes given for a file of {file_len}", bytes.len())));
    }
    let Some(len) = bytes.get(..8) else {
        return Err(err(file, format!("{} bytes is too short for a safetensors file (8-byte header length)", bytes.len())));
    };
    let n = u64::from_le_bytes(len.try_into().unwrap_or([0; 8]));
    let avail = file_len - 8;
    if n > avail as u64 {
        return Err(err(file, format!("header length {n} runs past the end of the file ({avail} bytes follow it)")));
    }
    if n > MAX_HEADER as u64 {
        return Err(err(file, format!("header length {n} exceeds the {MAX_HEADER}-byte limit")));
    }
    let n = n as usize;
    let data = 8 + n;
    if data > bytes.len() {
        return Err(err(file, format!("header of {n} bytes: only {} of the file's first bytes were given", bytes.len())));
    }
    let data_len = file_len - data;
    let Entries(entries) = serde_json::from_slice(&bytes[8..data]).map_err(|e| err(file, format!("header is not valid JSON: {e}")))?;

    let mut tensors = Vec::with_capacity(entries.len());
    let mut by_name = HashMap::with_capacity(entries.len());
    let mut metadata = HashMap::new();
    let mut seen_meta = false;
    for (name, v) in entries {
        if name == "__metadata__" {
            if seen_meta {
                return Err(err(file, "duplicate __metadata__"));
            }
            seen_meta = true;
            let Value::Object(m) = v else { return Err(err(file, "__metadata__ is not an object")) };
            for (k, v) in m {
                let Value::String(s) = v else { return Err(err(file, format!("__metadata__.{k} is not a string"))) };
                metadata.insert(k, s);
            }
            continue;
        }
        if by_name.contains_key(&name) {
            return Err(terr(file, &name, "appears twice in the header"));
        }
        let Value::Object(e) = &v else { return Err(terr(file, &name, "entry is not an object")) };
        let dtype = match e.get("dtype") {
            Some(Value::String(s)) => dtype_of(file, &name, s)?,
            _ => return Err(terr(file, &name, "dtype is missing or not a string")),
        };
        let shape: Vec<usize> = match e.get("shape") {
            Some(Value::Array(a)) if a.len() <= MAX_RANK => {
                a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect::<Option<_>>().ok_or_else(|| terr(file, &name, format!("shape {v} has a dimension that is not a non-negative integer", v = Value::Array(a.clone()))))?
            }
            _ => return Err(terr(file, &name, format!("shape is missing, not an array or has more than {MAX_RANK} dimensions"))),
        };
        let (begin, end) = match e.get("data_offsets") {
            Some(Value::Array(a)) if a.len() == 2 => match (a[0].as_u64(), a[1].as_u64()) {
                (Some(b), Some(e)) => (b, e),
                _ => return Err(terr(file, &name, "data_offsets are not non-negative integers")),
            },
            _ => return Err(terr(file, &name, "data_offsets is missing or not [begin, end]")),
        };
        if begin > end || end > data_len as u64 {
            return Err(terr(file, &name, format!("data_offsets [{begin}, {end}] fall outside the {data_len} data bytes")));
        }
        let (begin, end) = (begin as usize, end as usize);
        let bytes_needed = shape.iter().try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
        if bytes_needed != Some(end - begin) {
            return Err(terr(file, &name, format!("shape {shape:?} of {dtype:?} needs {} bytes but data_offsets [{begin}, {end}] hold {}", bytes_needed.map_or("too many".to_string(), |b| b.to_string()), end - begin)));
        }
        by_name.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo { name, dtype, shape, range: data + begin..data + end });
    }
    // No two tensors may share bytes.
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| !t.range.is_empty()).collect();
    order.sort_by_key(|t| t.range.start);
    for w in order.windows(2) {
        if w[1].range.start < w[0].range.end {
            return Err(terr(file, &w[1].name, format!("data overlaps tensor `{}`", w[0].name)));
        }
    }
    Ok(Header { file: file.to_string(), tensors, metadata, by_name })
}

/// Parses `model.safetensors.index.json`: tensor name → shard file name. Shard names must be
/// plain file names (no directories), so an index cannot point outside the model folder.
pub fn parse_index(file: &str, bytes: &[u8]) -> Result<Vec<(String, String)>> {
    let Entries(top) = serde_json::from_slice(bytes).map_err(|e| err(file, format!("not valid JSON: {e}")))?;
    let Some((_, map)) = top.into_iter().find(|(k, _)| k == "weight_map") else { return Err(err(file, "no weight_map")) };
    let Entries(map) = Entries::deserialize(map).map_err(|e| err(file, format!("weight_map is not an object: {e}")))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(map.len());
    for (name, shard) in map {
        let Value::String(shard) = shard else { return Err(terr(file, &name, "shard name is not a string")) };
        if shard.is_empty() || shard.contains(['/', '\\']) || shard == ".." || shard == "." {
            return Err(terr(file, &name, format!("shard `{shard}` is not a plain file name")));
        }
        if !seen.insert(name.clone()) {
            return Err(terr(file, &name, "appears twice in weight_map"));
        }
        out.push((name, shard));
    }
    Ok(out)
}

/// Bytes of one file: an owned buffer or (natively) a read-only memory map.
pub enum Bytes {
    Owned(Vec<u8>),
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            #[cfg(not(target_arch = "wasm32"))]
            Bytes::Mapped(m) => m,
        }
    }
}

struct SourceFile {
    header: Header,
    /// None when the file is read on demand through the source's [`RangeFetch`].
    bytes: Option<Bytes>,
}

/// The future a [`RangeFetch`] returns (not `Send`: the browser's fetches live on one thread).
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>>> + 'a>>;

/// Reads byte ranges of checkpoint files on demand (the browser's HTTP Range requests or
/// `File.slice`), so a checkpoint is never held whole in memory.
pub trait RangeFetch {
    /// Bytes `range` (absolute offsets) of `file`, a name given to [`TensorSource::from_headers`].
    fn fetch<'a>(&'a self, file: &'a str, range: Range<usize>) -> FetchFuture<'a>;

    /// Largest read a loader should ask for at once (large matrices are read in parts).
    fn max_read(&self) -> usize {
        64 << 20
    }
}

/// Where the weights' bytes come from: one or more safetensors files, each validated, with
/// every tensor name resolved to its file. Natively the files are memory-mapped
/// ([`TensorSource::open_dir`]); the browser and tests build one from byte vectors.
pub struct TensorSource {
    files: Vec<SourceFile>,
    by_name: HashMap<String, (usize, usize)>,
    /// What to name in a "missing tensor" error: the file or index the names were looked up in.
    origin: String,
    /// Reads the files held as headers only.
    fetch: Option<Box<dyn RangeFetch>>,
}

impl TensorSource {
    /// A source from whole files held in memory, as (file name, bytes). A tensor name found in
    /// two files is an error.
    pub fn from_files(files: Vec<(String, Bytes)>) -> Result<TensorSource> {
        let origin = files.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        let mut src = TensorSource { files: Vec::with_capacity(files.len()), by_name: HashMap::new(), origin, fetch: None };
        for (name, bytes) in files {
            let header = parse(&name, &bytes)?;
            let fi = src.files.len();
            for (ti, t) in header.tensors.iter().enumerate() {
                if let Some(&(other, _)) = src.by_name.get(&t.name) {
                    return Err(terr(&name, &t.name, format!("also in {}", src.files[other].header.file)));
                }
                src.by_name.insert(t.name.clone(), (fi, ti));
            }
            src.files.push(SourceFile { header, bytes: Some(bytes) });
        }
        Ok(src)
    }

    /// A source from parsed headers ([`parse_head`]) whose tensor bytes `fetch` reads when
    /// [`TensorSource::read`] asks for them. A tensor name found in two files is an error.
    pub fn from_headers(headers: Vec<Header>, fetch: Box<dyn RangeFetch>) -> Result<TensorSource> {
        let origin = headers.iter().map(|h| h.file.as_str()).collect::<Vec<_>>().join(", ");
        let mut src = TensorSource { files: Vec::with_capacity(headers.len()), by_name: HashMap::new(), origin, fetch: Some(fetch) };
        for header in headers {
            let fi = src.files.len();
            for (ti, t) in header.tensors.iter().enumerate() {
                if let Some(&(other, _)) = src.by_name.get(&t.name) {
                    return Err(terr(&header.file, &t.name, format!("also in {}", src.files[other].header.file)));
                }
                src.by_name.insert(t.name.clone(), (fi, ti));
            }
            src.files.push(SourceFile { header, bytes: None });
        }
        Ok(src)
    }

    /// As [`TensorSource::from_files`] with owned byte vectors.
    pub fn from_bytes(files: Vec<(String, Vec<u8>)>) -> Result<TensorSource> {
        TensorSource::from_files(files.into_iter().map(|(n, b)| (n, Bytes::Owned(b))).collect())
    }

    /// A sharded checkpoint: the index's bytes (named `index_file`) and the shards it names.
    /// Every shard the index names must be given; every tensor must be in the shard the index says.
    pub fn from_index(index_file: &str, index: &[u8], shards: Vec<(String, Bytes)>) -> Result<TensorSource> {
        let map = parse_index(index_file, index)?;
        for (tensor, shard) in &map {
            if !shards.iter().any(|(n, _)| n == shard) {
                return Err(terr(index_file, tensor, format!("shard `{shard}` named in the index is missing")));
            }
        }
        let mut src = TensorSource::from_files(shards)?;
        for (tensor, shard) in &map {
            match src.by_name.get(tensor) {
                Some(&(fi, _)) if src.files[fi].header.file == *shard => {}
                Some(&(fi, _)) => return Err(terr(index_file, tensor, format!("index says shard `{shard}` but it is in `{}`", src.files[fi].header.file))),
                None => return Err(terr(shard, tensor, format!("named by {index_file} but absent from the shard"))),
            }
        }
        src.origin = index_file.to_string();
        Ok(src)
    }

    /// Opens a model folder: `model.safetensors.index.json` and its shards if the index exists,
    /// else `model.safetensors`. Files are memory-mapped, never read whole.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: &std::path::Path) -> Result<TensorSource> {
        let io = |p: &std::path::Path, e: std::io::Error| Error::Io { path: p.display().to_string(), message: e.to_string() };
        let map = |p: &std::path::Path| -> Result<Bytes> {
            let f = std::fs::File::open(p).map_err(|e| io(p, e))?;
            // SAFETY: the map is read-only; the file must not be truncated while the model loads
            // (the same contract as every mmap-based loader; documented in the README).
            let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io(p, e))?;
            Ok(Bytes::Mapped(m))
        };
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.exists() {
            let index = std::fs::read(&index_path).map_err(|e| io(&index_path, e))?;
            let names = parse_index(&index_path.display().to_string(), &index)?;
            let mut shard_names: Vec<&str> = names.iter().map(|(_, s)| s.as_str()).collect();
            shard_names.sort_unstable();
            shard_names.dedup();
            let mut shards = Vec::with_capacity(shard_names.len());
            for s in shard_names {
                let p = dir.join(s);
                if !p.is_file() {
                    let tensor = names.iter().find(|(_, sh)| sh == s).map_or("", |(t, _)| t.as_str());
                    return Err(terr(&index_path.display().to_string(), tensor, format!("shard `{s}` named in the index is missing from {}", dir.display())));
                }
                shards.push((s.to_string(), map(&p)?));
            }
            TensorSource::from_index(&index_path.display().to_string(), &index, shards)
        } else {
            let p = dir.join("model.safetensors");
            if !p.is_file() {
                return Err(Error::Io { path: dir.display().to_string(), message: "neither model.safetensors nor model.safetensors.index.json is here".into() });
            }
            TensorSource::from_files(vec![(p.display().to_string(), map(&p)?)])
        }
    }

    /// The tensor's entry, its bytes and the name of its file; None when absent or when its file
    /// is read on demand (see [`TensorSource::read`]).
    pub fn get(&self, name: &str) -> Option<(&TensorInfo, &[u8], &str)> {
        let &(fi, ti) = self.by_name.get(name)?;
        let f = &self.files[fi];
        let t = &f.header.tensors[ti];
        Some((t, &f.bytes.as_ref()?[t.range.clone()], &f.header.file))
    }

    /// How much of `name` to read at once: None when its file is in memory (read it whole).
    pub fn max_read(&self, name: &str) -> Option<usize> {
        let &(fi, _) = self.by_name.get(name)?;
        match (&self.files[fi].bytes, &self.fetch) {
            (None, Some(f)) => Some(f.max_read().max(1)),
            _ => None,
        }
    }

    /// The tensor's entry and the name of its file, with an error naming where it was looked for.
    pub fn need_info(&self, name: &str) -> Result<(&TensorInfo, &str)> {
        let &(fi, ti) = self.by_name.get(name).ok_or_else(|| terr(&self.origin, name, "missing"))?;
        let f = &self.files[fi];
        Ok((&f.header.tensors[ti], &f.header.file))
    }

    /// Bytes `within` (relative to the tensor's start) of a tensor: borrowed when the file is in
    /// memory, fetched otherwise. Large tensors can be read in parts this way.
    pub async fn read(&self, name: &str, within: Range<usize>) -> Result<Cow<'_, [u8]>> {
        let &(fi, ti) = self.by_name.get(name).ok_or_else(|| terr(&self.origin, name, "missing"))?;
        let f = &self.files[fi];
        let t = &f.header.tensors[ti];
        if within.start > within.end || within.end > t.range.len() {
            return Err(terr(&f.header.file, name, format!("bytes {within:?} outside its {} bytes", t.range.len())));
        }
        let abs = t.range.start + within.start..t.range.start + within.end;
        if let Some(b) = &f.bytes {
            return Ok(Cow::Borrowed(&b[abs]));
        }
        let Some(fetch) = &self.fetch else { return Err(terr(&f.header.file, name, "no bytes and no fetcher")) };
        let got = fetch.fetch(&f.header.file, abs.clone()).await?;
        if got.len() != abs.len() {
            return Err(terr(&f.header.file, name, format!("fetched {} bytes for the {} of range {abs:?}", got.len(), abs.len())));
        }
        Ok(Cow::Owned(got))
    }

    /// Like [`TensorSource::get`], with an error naming the tensor and where it was looked for.
    pub fn need(&self, name: &str) -> Result<(&TensorInfo, &[u8], &str)> {
        self.get(name).ok_or_else(|| terr(&self.origin, name, "missing"))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Every tensor name, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The `__metadata__` of the file holding `name`.
    pub fn metadata_of(&self, name: &str) -> Option<&HashMap<String, String>> {
        self.by_name.get(name).map(|&(fi, _)| &self.files[fi].header.metadata)
    }

    /// Each file's `__metadata__`.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &HashMap<String, String>)> {
        self.files.iter().map(|f| (f.header.file.as_str(), &f.header.metadata))
    }

    /// The file names, or the index, named in errors.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// A test and tool helper: a safetensors file from (name, dtype, shape, bytes), in that order.
pub fn serialize(tensors: &[(&str, Source, &[usize], &[u8])], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), Value::Object(metadata.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect()));
    }
    let mut off = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        let dt = match dtype {
            Source::F32 => "F32",
            Source::F16 => "F16",
            Source::BF16 => "BF16",
            Source::U32 => "U32",
        };
        header.insert(name.to_string(), serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [off, off + bytes.len()]}));
        off += bytes.len();
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap_or_default();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + off);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for (_, _, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    out
}
