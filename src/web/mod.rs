//! The wasm-bindgen surface for the browser (meant to run inside a Web Worker; the npm
//! package's web/src/worker.js drives it).
//!
//! One `Gpu` per module instance, opened on first use and kept. Errors cross into JS as
//! rejected promises carrying the message (`JsError`); nothing here panics, and a panic hook
//! logs to the console should a bug panic anyway.
//!
//! `load` and `model` hold the model API (loadModel; generate, chat, logits, info); the kernel
//! checks are here.

mod fetch;
mod images;
mod load;
pub mod model;
mod options;
mod stream;

/// Milliseconds of wall time (the worker's clock).
fn now_ms() -> f64 {
    js_sys::Date::now()
}

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::gpu::{Gpu, GpuOptions};

thread_local! {
    static GPU: RefCell<Option<Rc<Gpu>>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&format!("dsvl-gpu panicked: {info}").into());
    }));
}

/// The shared device, opened on the first call. Concurrent first calls may both open one;
/// the first stored wins and the other is dropped.
pub(crate) async fn gpu() -> crate::Result<Rc<Gpu>> {
    if let Some(g) = GPU.with(|c| c.borrow().clone()) {
        return Ok(g);
    }
    let g = Rc::new(Gpu::new(&GpuOptions::default()).await?);
    Ok(GPU.with(|c| c.borrow_mut().get_or_insert(g).clone()))
}

/// Adapter, features, limits and the kernel paths this device will use.
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<String, JsError> {
    Ok(gpu().await.map_err(|e| JsError::new(&e.to_string()))?.describe())
}

/// Names of every registered kernel check, as a JSON array of strings.
#[wasm_bindgen(js_name = kernelCheckNames)]
pub fn kernel_check_names() -> String {
    let names: Vec<&str> = crate::check::all().into_iter().map(|(n, _)| n).collect();
    serde_json::Value::from(names).to_string()
}

/// Runs the kernel checks whose name contains any of the comma-separated parts of `filter`
/// (all of them when it is absent or empty), one after another. Returns JSON
/// `[{"name", "ok", "summary" | "error", "ms"}]`. `on_result`, when given, is called with each
/// result's JSON as soon as that check ends. Rejects when the GPU cannot be opened or when the
/// filter matches no check; a failing check is a result with `ok: false`, not a rejection.
#[wasm_bindgen(js_name = runKernelChecks)]
pub async fn run_kernel_checks(filter: Option<String>, on_result: Option<js_sys::Function>) -> Result<String, JsError> {
    let parts: Vec<String> = filter
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let selected: Vec<_> = crate::check::all()
        .into_iter()
        .filter(|(n, _)| parts.is_empty() || parts.iter().any(|p| n.contains(p.as_str())))
        .collect();
    if selected.is_empty() {
        return Err(JsError::new(&format!("no kernel check matches `{}`", filter.unwrap_or_default())));
    }
    let gpu = gpu().await.map_err(|e| JsError::new(&e.to_string()))?;
    let mut results = Vec::with_capacity(selected.len());
    for (name, check) in selected {
        let t0 = js_sys::Date::now();
        let outcome = check(&gpu).await;
        let ms = js_sys::Date::now() - t0;
        let r = match outcome {
            Ok(summary) => serde_json::json!({ "name": name, "ok": true, "summary": summary, "ms": ms }),
            Err(e) => serde_json::json!({ "name": name, "ok": false, "error": e.to_string(), "ms": ms }),
        };
        if let Some(f) = &on_result {
            // A throwing callback is the caller's problem; it must not stop the run.
            if let Err(e) = f.call1(&JsValue::NULL, &JsValue::from_str(&r.to_string())) {
                web_sys::console::warn_2(&"runKernelChecks: on_result threw".into(), &e);
            }
        }
        results.push(r);
    }
    Ok(serde_json::Value::from(results).to_string())
}

/// Frees the GPU buffers the pool keeps for reuse (after a model is dropped).
#[wasm_bindgen(js_name = trimGpu)]
pub fn trim_gpu() {
    if let Some(g) = GPU.with(|c| c.borrow().clone()) {
        g.trim_pool();
    }
}
