//! A loaded model in the browser (`loadModel` in load.rs makes one): `WebModel` answers
//! (`generate`), keeps a chat's KV cache (`chat`), gives next-token logits (`logits`) and
//! describes itself (`info`). Mirrors `dsvl-gpu run` (src/bin/dsvl-gpu/run.rs).
//!
//! Methods return promises; the model sits behind an `Rc` so a call in flight keeps it alive,
//! and one call runs at a time (a second is refused, never a `RefCell` panic).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Float32Array, Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::images::{read_images, RawImage};
use super::now_ms;
use super::options::Request;
use super::stream::Stream;
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Session};
use crate::gpu::{Gpu, Tensor};
use crate::image::ImageConfig;
use crate::model::llama::LogitRows;
use crate::model::vlm::Model;
use crate::prompt::{encode, Conversation, Encoded, PromptTokenizer, DEFAULT_SYSTEM_PROMPT};

/// KV cache of a chat when the request does not say (capped by the model's context).
const DEFAULT_CHAT_CONTEXT: usize = 4096;

fn js_err(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// A loaded model (one per worker).
#[wasm_bindgen]
pub struct WebModel {
    inner: Rc<Inner>,
}

pub(super) struct Inner {
    pub(super) gpu: Rc<Gpu>,
    pub(super) model: Rc<Model>,
    pub(super) tok: PromptTokenizer,
    pub(super) icfg: ImageConfig,
    pub(super) quant: String,
    pub(super) load_ms: f64,
    pub(super) busy: Cell<bool>,
    /// The chat's KV cache and the preprocessed images of its conversation (by content hash).
    pub(super) chat: RefCell<Option<ChatState>>,
}

pub(super) struct ChatState {
    session: Session<'static>,
    images: Vec<(u64, Tensor)>,
}

/// Clears `busy` when a call ends, however it ends.
struct Claim<'a>(&'a Cell<bool>);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

impl Inner {
    fn claim(&self) -> Result<Claim<'_>> {
        if self.busy.replace(true) {
            return Err(Error::Invalid("the model is busy with another call; wait for it (calls run one at a time)".into()));
        }
        Ok(Claim(&self.busy))
    }

    /// The conversation of a request: `messages` (chat) or `system` + `prompt`, with `n_images` images.
    fn conversation(&self, req: &Request, n_images: usize) -> Result<Conversation> {
        let mut conv = Conversation::with_system(req.system.clone().unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string()));
        match (&req.prompt, &req.messages) {
            (Some(p), None) => {
                conv.user(p.clone(), n_images);
            }
            (None, Some(msgs)) => {
                let mut counted = 0;
                for (i, m) in msgs.iter().enumerate() {
                    match m.role.as_str() {
                        "system" if i == 0 && req.system.is_none() && m.images == 0 => conv.system = m.content.clone(),
                        "user" => {
                            conv.user(m.content.clone(), m.images);
                        }
                        "assistant" if m.images == 0 => {
                            conv.assistant(m.content.clone());
                        }
                        r => return Err(Error::Prompt(format!("message {i}: role `{r}` with {} image(s) is not allowed here (a leading system message, then user / assistant; images on user messages)", m.images))),
                    }
                    counted += m.images;
                }
                if counted != n_images {
                    return Err(Error::Prompt(format!("the messages claim {counted} image(s) but {n_images} were given")));
                }
            }
            _ => return Err(Error::Invalid("give either `prompt` or `messages`".into())),
        }
        if conv.messages.last().map(|m| m.role) != Some(crate::prompt::Role::User) {
            return Err(Error::Prompt("the last message must be the user's".into()));
        }
        Ok(conv)
    }

    fn encode(&self, req: &Request, n_images: usize) -> Result<Encoded> {
        encode(&self.tok, &self.conversation(req, n_images)?, self.model.cfg.num_image_tokens)
    }

    async fn pixels(&self, raws: &[RawImage]) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(raws.len());
        for r in raws {
            out.push(r.pixels(&self.gpu, &self.icfg).await?);
        }
        Ok(out)
    }

    async fn generate(&self, request: &str, images: &Array, on_token: Option<Function>) -> Result<String> {
        let _c = self.claim()?;
        let req = Request::parse(request)?;
        if req.messages.is_some() {
            return Err(Error::Invalid("generate takes `prompt`; use chat for `messages`".into()));
        }
        let raws = read_images(images)?;
        let enc = self.encode(&req, raws.len())?;
        let opts = GenerateOptions { sampling: req.sampling()?, max_new_tokens: req.max_new_tokens(), eos: Some(self.tok.eos_id()) };
        let t0 = now_ms();
        let pixels = self.pixels(&raws).await?;
        let pre = now_ms() - t0;
        let mut s = Stream::new(&self.tok, on_token);
        let ids = self.model.generate(&self.gpu, &enc.ids, self.tok.image_id(), &pixels, &opts, &mut |id| s.push(id)).await?;
        s.finish(ids, enc.ids.len(), enc.ids.len(), pre)
    }

    async fn chat(&self, request: &str, images: &Array, on_token: Option<Function>) -> Result<String> {
        let _c = self.claim()?;
        let req = Request::parse(request)?;
        if req.prompt.is_some() {
            return Err(Error::Invalid("chat takes `messages`; use generate for `prompt`".into()));
        }
        let raws = read_images(images)?;
        let enc = self.encode(&req, raws.len())?;
        let opts = GenerateOptions { sampling: req.sampling()?, max_new_tokens: req.max_new_tokens(), eos: Some(self.tok.eos_id()) };
        let capacity = req.context_tokens.unwrap_or(DEFAULT_CHAT_CONTEXT).min(self.model.cfg.llm.max_positions);
        // Taken out while in use, so no RefCell borrow lives across an await.
        let mut state = match self.chat.take() {
            Some(s) if s.session.capacity() == capacity => s,
            _ => ChatState { session: Session::shared(self.model.clone(), &self.gpu, capacity)?, images: Vec::new() },
        };
        let t0 = now_ms();
        let mut kept = Vec::with_capacity(raws.len());
        for r in &raws {
            let h = r.hash();
            let t = match state.images.iter().find(|(k, _)| *k == h) {
                Some((_, t)) => t.clone(),
                None => r.pixels(&self.gpu, &self.icfg).await?,
            };
            kept.push((h, t));
        }
        state.images = kept;
        let pixels: Vec<Tensor> = state.images.iter().map(|(_, t)| t.clone()).collect();
        let pre = now_ms() - t0;
        let mut s = Stream::new(&self.tok, on_token);
        let result = state.session.respond(&self.gpu, &enc.ids, self.tok.image_id(), &pixels, &opts, &mut |id| s.push(id)).await;
        let prefilled = state.session.prefilled_tokens();
        *self.chat.borrow_mut() = Some(state);
        s.finish(result?, enc.ids.len(), prefilled, pre)
    }

    async fn logits(&self, request: &str, images: &Array) -> Result<Vec<f32>> {
        let _c = self.claim()?;
        let req = Request::parse(request)?;
        let raws = read_images(images)?;
        let enc = self.encode(&req, raws.len())?;
        let pixels = self.pixels(&raws).await?;
        self.model.prefill_logits(&self.gpu, &enc.ids, self.tok.image_id(), &pixels, LogitRows::Last).await
    }

    fn info(&self) -> String {
        let g = &self.gpu;
        let (c, l, cfg) = (&g.caps, &g.limits, &self.model.cfg);
        let mut lacks = Vec::new();
        if !c.f16 {
            lacks.push("shader-f16: activations run in f32 (twice the activation memory and bandwidth)".to_string());
        }
        if !c.subgroups {
            lacks.push("subgroups: reductions go through workgroup memory (slower)".to_string());
        }
        if c.max_binding < 128 << 20 {
            lacks.push(format!("large storage bindings: only {} MiB per binding, so big weights are split into parts", c.max_binding >> 20));
        }
        let p = g.pool_stats();
        serde_json::json!({
            "adapter": { "name": g.adapter.name, "backend": g.adapter.backend, "deviceType": g.adapter.device_type, "driver": g.adapter.driver, "driverInfo": g.adapter.driver_info },
            "features": g.features.iter().filter_map(|f| f.as_str()).collect::<Vec<_>>(),
            "limits": {
                "maxStorageBufferBindingSize": l.max_storage_buffer_binding_size, "maxBufferSize": l.max_buffer_size,
                "maxComputeWorkgroupStorageSize": l.max_compute_workgroup_storage_size,
                "maxComputeInvocationsPerWorkgroup": l.max_compute_invocations_per_workgroup,
                "maxStorageBuffersPerShaderStage": l.max_storage_buffers_per_shader_stage,
            },
            "paths": { "f16": c.f16, "subgroups": c.subgroups, "maxBinding": c.max_binding },
            "lacks": lacks,
            "quant": self.quant, "weights": self.model.weights.recipe().name(), "weight_bytes": self.model.weights.stats().bytes, "activations": self.model.act.to_string(),
            "memory": { "gpuLiveBytes": p.live_bytes, "gpuPeakBytes": p.peak_bytes, "gpuCachedBytes": p.cached_bytes },
            "model": {
                "layout": format!("{:?}", cfg.layout), "layers": cfg.llm.layers, "hidden": cfg.llm.hidden, "vocab": cfg.llm.vocab,
                "maxPositions": cfg.llm.max_positions, "imageSize": cfg.image_size(), "imageTokens": cfg.num_image_tokens,
            },
            "chatCachedTokens": self.chat.borrow().as_ref().map_or(0, |s| s.session.cached_tokens()),
            "loadMs": self.load_ms,
        })
        .to_string()
    }
}

impl WebModel {
    pub(super) fn new(inner: Rc<Inner>) -> WebModel {
        WebModel { inner }
    }
}

#[wasm_bindgen]
impl WebModel {
    /// Answers `request` (JSON: prompt, system?, maxNewTokens?, temperature?, topP?, topK?,
    /// repetitionPenalty?, seed?) about `images` (file bytes or {width, height, rgba}).
    /// `on_token(piece, id)` sees each token; returning `false` stops (abort). Resolves to JSON
    /// {text, tokenIds, promptTokens, prefilledTokens, stopReason, timings}.
    pub fn generate(&self, request: String, images: Array, on_token: Option<Function>) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move { inner.generate(&request, &images, on_token).await.map(JsValue::from).map_err(js_err) })
    }

    /// As `generate` for `messages` [{role, content, images}]; the KV cache is kept between
    /// calls, so only what differs from the last call's conversation is prefilled.
    pub fn chat(&self, request: String, images: Array, on_token: Option<Function>) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move { inner.chat(&request, &images, on_token).await.map(JsValue::from).map_err(js_err) })
    }

    /// Next-token logits after the prompt (`prompt` or `messages`), as a Float32Array [vocab].
    pub fn logits(&self, request: String, images: Array) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let v = inner.logits(&request, &images).await.map_err(js_err)?;
            Ok(Float32Array::from(v.as_slice()).into())
        })
    }

    /// Adapter, features, limits, what the device lacks, memory and the model, as JSON.
    pub fn info(&self) -> String {
        self.inner.info()
    }

    /// Forgets the chat (its KV cache and images).
    #[wasm_bindgen(js_name = resetChat)]
    pub fn reset_chat(&self) -> Result<(), JsError> {
        if self.inner.busy.get() {
            return Err(JsError::new("the model is busy; stop the running call first"));
        }
        self.inner.chat.replace(None);
        Ok(())
    }
}
