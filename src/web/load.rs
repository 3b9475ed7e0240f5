//! `loadModel`: the small files handed over whole, each safetensors file's header, then every
//! tensor pulled through the JS range reader onto the GPU (as `dsvl-gpu run` loads a folder).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;

use super::fetch::JsRangeFetch;
use super::model::{Inner, WebModel};
use super::now_ms;
use crate::error::{Error, Result};
use crate::image::ImageConfig;
use crate::model::config::ModelConfig;
use crate::model::safetensors::{parse_head, TensorSource};
use crate::model::vlm::Model;
use crate::model::weights::{load_weights_opts, LoadOptions, LoadProgress};
use crate::quant::Recipe;
use crate::prompt::PromptTokenizer;

fn file(files: &Object, name: &str) -> Result<Option<Vec<u8>>> {
    let v = Reflect::get(files, &JsValue::from_str(name)).map_err(|_| Error::Invalid(format!("files.{name} is unreadable")))?;
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    let a: Uint8Array = v.dyn_into().map_err(|_| Error::Invalid(format!("files[\"{name}\"] must be a Uint8Array")))?;
    Ok(Some(a.to_vec()))
}

/// Loads a model. `files` maps file names to their bytes (`config.json`, `tokenizer.json`, and
/// when present `special_tokens_map.json`, `tokenizer_config.json`, `preprocessor_config.json`,
/// `processor_config.json`); `shards` is `[{name, head: Uint8Array, size}]`, each safetensors
/// file's first bytes (at least its header) and total size; `fetch(name, start, end)` resolves
/// to the bytes `start..end` of a shard. `quant` is a recipe as `run --quant` takes it: `f32`
/// (the parity path), `f16` (f16 weights; f16 activations where the adapter has shader-f16),
/// `q8`, `q4`, `mixed`. `on_progress(p)` sees `{stage: 'upload', loaded, total}` (checkpoint
/// bytes on the GPU) and, when weights are quantised while loading, `{stage: 'quantise', loaded,
/// total, tensors, tensorsTotal, device: 'gpu' | 'cpu', note?}` (checkpoint bytes and tensors
/// quantised).
#[wasm_bindgen(js_name = loadModel)]
pub async fn load_model(files: Object, shards: Array, fetch: Function, quant: String, on_progress: Option<Function>) -> Result<WebModel, JsError> {
    load(files, shards, fetch, quant, on_progress).await.map_err(|e| JsError::new(&e.to_string()))
}

/// A progress report as the JS `Progress` type (web/src/index.d.ts) has it.
fn progress_object(p: &LoadProgress) -> JsValue {
    let o = Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = Reflect::set(&o, &JsValue::from_str(k), &v);
    };
    match p {
        LoadProgress::Upload { done, total } => {
            set("stage", "upload".into());
            set("loaded", (*done as f64).into());
            set("total", (*total as f64).into());
        }
        LoadProgress::Quantise { done, total, tensors, tensors_total, on, note } => {
            set("stage", "quantise".into());
            set("loaded", (*done as f64).into());
            set("total", (*total as f64).into());
            set("tensors", (*tensors as f64).into());
            set("tensorsTotal", (*tensors_total as f64).into());
            set("device", on.name().into());
            if let Some(n) = note {
                set("note", n.as_str().into());
            }
        }
    }
    o.into()
}

async fn load(files: Object, shards: Array, fetch: Function, quant: String, on_progress: Option<Function>) -> Result<WebModel> {
    let t0 = now_ms();
    let gpu = super::gpu().await?;
    // As `run --quant`: f32, f16, q8, q4, mixed, with per-part overrides. Int8/int4 from a dense
    // checkpoint are quantised on the GPU, fetched row chunk by row chunk (`quant::load`); a
    // folder written by `dsvl-gpu quantize` loads as it was written, whatever this says.
    let recipe = Recipe::parse(&quant).map_err(|e| Error::Invalid(format!("quant `{quant}`: {e}")))?;
    let act = recipe.act(gpu.caps.f16);
    let need = |name: &str| -> Result<Vec<u8>> { file(&files, name)?.ok_or_else(|| Error::Io { path: name.into(), message: "missing from the model folder".into() }) };
    let processor = file(&files, "processor_config.json")?;
    let cfg = ModelConfig::from_dir_files(&need("config.json")?, file(&files, "preprocessor_config.json")?.as_deref(), processor.as_deref())?;
    let image_tag = match &processor {
        Some(b) => {
            let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| Error::Tokenizer { what: "processor_config.json".into(), message: e.to_string() })?;
            v.get("image_tag").and_then(|t| t.as_str()).map(str::to_string)
        }
        None => None,
    };
    let tok = PromptTokenizer::from_bytes(&need("tokenizer.json")?, file(&files, "special_tokens_map.json")?.as_deref(), file(&files, "tokenizer_config.json")?.as_deref(), image_tag.as_deref())?;

    let mut headers = Vec::with_capacity(shards.length() as usize);
    for (i, s) in shards.iter().enumerate() {
        let get = |k: &str| Reflect::get(&s, &JsValue::from_str(k)).ok();
        let bad = || Error::Invalid(format!("shards[{i}] must be {{name, head: Uint8Array, size}}"));
        let name = get("name").and_then(|v| v.as_string()).ok_or_else(bad)?;
        let head = get("head").and_then(|v| v.dyn_into::<Uint8Array>().ok()).ok_or_else(bad)?.to_vec();
        let size = get("size").and_then(|v| v.as_f64()).filter(|d| d.fract() == 0.0 && *d >= 0.0).ok_or_else(bad)?;
        // Offsets are usize: 32 bits in wasm32.
        if size > usize::MAX as f64 {
            return Err(Error::Safetensors { file: name, message: format!("{size} bytes: files over 4 GiB cannot be addressed by wasm32; use a sharded checkpoint") });
        }
        let size = size as usize;
        headers.push(parse_head(&name, &head, size)?);
    }
    if headers.is_empty() {
        return Err(Error::Invalid("no safetensors file given".into()));
    }
    let source = TensorSource::from_headers(headers, Box::new(JsRangeFetch { f: fetch }))?;
    let weights = load_weights_opts(&gpu, &cfg, &source, &recipe, act, &LoadOptions::default(), &mut |p| {
        if let Some(f) = &on_progress {
            // A throwing progress callback must not stop the load.
            let _ = f.call1(&JsValue::NULL, &progress_object(p));
        }
    })
    .await?;
    let icfg = ImageConfig::for_model(&cfg);
    let model = Rc::new(Model::new(&gpu, cfg, weights, act)?);
    let inner = Inner { gpu, model, tok, icfg, quant, load_ms: now_ms() - t0, busy: Cell::new(false), chat: RefCell::new(None) };
    Ok(WebModel::new(Rc::new(inner)))
}
