//! The checkpoint's bytes in the browser: a JS function reads byte ranges (HTTP Range requests
//! through the package's block cache, or `File.slice`), so tensors are pulled one at a time.

use std::ops::Range;

use js_sys::{Function, Promise, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::error::Error;
use crate::model::safetensors::{FetchFuture, RangeFetch};

/// `fetch(file, start, end) -> Promise<Uint8Array>` (end exclusive), supplied by the worker.
pub struct JsRangeFetch {
    pub f: Function,
}

/// A rejected JS promise or thrown value as one line of text.
pub fn js_message(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

impl RangeFetch for JsRangeFetch {
    fn fetch<'a>(&'a self, file: &'a str, range: Range<usize>) -> FetchFuture<'a> {
        Box::pin(async move {
            let io = |message: String| Error::Io { path: file.to_string(), message };
            let p = self
                .f
                .call3(&JsValue::NULL, &JsValue::from_str(file), &JsValue::from_f64(range.start as f64), &JsValue::from_f64(range.end as f64))
                .map_err(|e| io(js_message(&e)))?;
            let p: Promise = p.dyn_into().map_err(|_| io("the fetch callback did not return a promise".into()))?;
            let v = JsFuture::from(p).await.map_err(|e| io(js_message(&e)))?;
            let a: Uint8Array = v.dyn_into().map_err(|_| io("the fetch callback did not resolve to a Uint8Array".into()))?;
            Ok(a.to_vec())
        })
    }
}
