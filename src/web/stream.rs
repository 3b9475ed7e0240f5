//! Generated ids to text for JS: each piece goes to `onToken` as it becomes displayable, whose
//! `false` stops generation (abort); the result records why generation ended and how fast it was.

use js_sys::Function;
use wasm_bindgen::JsValue;

use super::now_ms;
use crate::error::{Error, Result};
use crate::prompt::{PromptTokenizer, STOP_STRING};
use crate::text::TextStream;

/// Token ids in, text out to JS, with the reason generation ended.
pub(super) struct Stream<'t> {
    text: TextStream<'t>,
    out: String,
    on_token: Option<Function>,
    eos: u32,
    stop: &'static str,
    failed: Option<Error>,
    started: f64,
    first_ms: Option<f64>,
}

impl<'t> Stream<'t> {
    pub(super) fn new(tok: &'t PromptTokenizer, on_token: Option<Function>) -> Self {
        Stream { text: TextStream::new(tok, &[STOP_STRING]), out: String::new(), on_token, eos: tok.eos_id(), stop: "length", failed: None, started: now_ms(), first_ms: None }
    }

    /// Returns false to stop: a stop string, EOS, a decoding error, or `on_token` returning false (abort).
    pub(super) fn push(&mut self, id: u32) -> bool {
        self.first_ms.get_or_insert_with(|| now_ms() - self.started);
        let chunk = match self.text.push(id) {
            Ok(c) => c,
            Err(e) => {
                self.failed = Some(e);
                return false;
            }
        };
        self.out.push_str(&chunk.text);
        if let Some(f) = &self.on_token {
            match f.call2(&JsValue::NULL, &JsValue::from_str(&chunk.text), &JsValue::from_f64(id as f64)) {
                Ok(v) if v.as_bool() == Some(false) => {
                    self.stop = "abort";
                    return false;
                }
                Ok(_) => {}
                Err(e) => web_sys::console::warn_2(&"dsvl-gpu: onToken threw".into(), &e),
            }
        }
        if chunk.stopped {
            self.stop = if id == self.eos { "eos" } else { "stop" };
        }
        !chunk.stopped
    }

    /// The result as JSON for JS.
    pub(super) fn finish(mut self, ids: Vec<u32>, prompt: usize, prefilled: usize, preprocess_ms: f64) -> Result<String> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // The length limit or an abort leaves held text (a possible stop-string prefix, a partial character).
        if self.stop == "length" || self.stop == "abort" {
            self.out.push_str(&self.text.finish()?.text);
        }
        let total = now_ms() - self.started;
        let first = self.first_ms.unwrap_or(total);
        let decode_s = (total - first) / 1000.0;
        let tps = if ids.len() > 1 && decode_s > 0.0 { (ids.len() - 1) as f64 / decode_s } else { 0.0 };
        Ok(serde_json::json!({
            "text": self.out, "tokenIds": ids, "promptTokens": prompt, "prefilledTokens": prefilled, "stopReason": self.stop,
            "timings": { "preprocessMs": preprocess_ms, "firstTokenMs": first, "totalMs": total, "decodeTokensPerSecond": tps },
        })
        .to_string())
    }
}

