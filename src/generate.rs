//! Token generation. A `Session` owns a KV cache; each `respond` prefills only what the cache
//! does not already hold (the longest common prefix of the cached ids and the new prompt is
//! kept, so earlier chat turns are not prefilled again), samples on the GPU, then replays one
//! recorded decode step per token. The sampled id stays on the GPU (the next step embeds it from
//! there); only the id is read back, for streaming and stop checks.

use crate::clock::now_s;
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, ReplayTiming, StepList, Tensor};
use crate::model::llama::{record_decoder, KvCache, LogitRows};
use crate::model::vlm::Model;
use crate::ops::embedding::{gather, image_positions};
use crate::ops::sample::{advance, sample, History, Sampling};

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    /// Stop after emitting this id (the tokenizer's end-of-sentence).
    pub eos: Option<u32>,
}

/// The model a session runs: borrowed, or shared so that a session can live next to its model
/// (the browser keeps both in one object).
#[derive(Clone)]
enum ModelRef<'m> {
    Borrowed(&'m Model),
    Shared(std::rc::Rc<Model>),
}

impl std::ops::Deref for ModelRef<'_> {
    type Target = Model;
    fn deref(&self) -> &Model {
        match self {
            ModelRef::Borrowed(m) => m,
            ModelRef::Shared(m) => m,
        }
    }
}

/// A conversation's KV cache on the GPU and the ids it holds.
pub struct Session<'m> {
    model: ModelRef<'m>,
    cache: KvCache,
    /// Ids whose keys and values are in cache rows 0..cached.len().
    cached: Vec<u32>,
    /// Tokens the last `respond` prefilled (the rest came from the cache).
    prefilled: usize,
    timings: RespondTimings,
}

impl<'m> Session<'m> {
    /// A session whose prompt plus answers fit `capacity` tokens (at most the model's context).
    pub fn new(model: &'m Model, gpu: &Gpu, capacity: usize) -> Result<Session<'m>> {
        Session::with(ModelRef::Borrowed(model), gpu, capacity)
    }

    fn with(model: ModelRef<'m>, gpu: &Gpu, capacity: usize) -> Result<Session<'m>> {
        let max = model.cfg.llm.max_positions;
        if capacity == 0 || capacity > max {
            return Err(Error::Invalid(format!("session of {capacity} tokens: the context holds 1..={max}")));
        }
        // Each layer's keys and values live in one binding: say how long a context can be.
        let row = (2 * model.cfg.llm.kv_heads * model.cfg.llm.head_dim * model.act.size()) as u64;
        let limit = gpu.caps.max_binding.min(gpu.caps.max_buffer);
        if capacity as u64 * row > limit {
            let what = format!("a context of {capacity} tokens (at most {} fit)", limit / row);
            return Err(Error::BindingLimit { op: "KV cache", what, needed: capacity as u64 * row, limit });
        }
        let cache = KvCache::new(gpu, &model.cfg.llm, capacity, model.act)?;
        Ok(Session { model, cache, cached: Vec::new(), prefilled: 0, timings: RespondTimings::default() })
    }

    pub fn capacity(&self) -> usize {
        self.cache.capacity
    }

    /// Tokens the last `respond` prefilled.
    pub fn prefilled_tokens(&self) -> usize {
        self.prefilled
    }

    /// Tokens currently held in the cache.
    pub fn cached_tokens(&self) -> usize {
        self.cached.len()
    }

    /// Answers the full prompt `ids` (image tokens expanded; one f32 [3, S, S] pixel tensor per
    /// image in the prompt, in order). Only the part after what the cache already holds is
    /// prefilled, and only images whose tokens lie in that part go through the vision tower.
    /// `on_token` sees each id as it is produced and returns false to stop (stop strings).
    /// Returns the generated ids (EOS included if hit).
    pub async fn respond(
        &mut self,
        gpu: &Gpu,
        ids: &[u32],
        image_token: u32,
        images: &[Tensor],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let t0 = now_s();
        // Vision first, in its own submission (queued while the prefill and decode lists are
        // recorded), so its time is known; then the prefill of what the cache lacks and the
        // first sample.
        let Some(plan) = self.plan(gpu, ids, image_token, images, opts, true).await? else {
            return Ok(Vec::new());
        };
        let m = ids.len();
        let mut timings = RespondTimings::default();
        if plan.vision.is_some() {
            gpu.idle().await?;
            timings.vision_s = now_s() - t0;
        }
        // From here the cache rows past `keep` are being rewritten.
        self.cached.truncate(plan.keep);
        let t_prefill = now_s();
        // Two staging buffers: the step after token t is queued before token t is read, so the
        // GPU never waits for the host; the cost is at most one step computed past a stop.
        let staging = [gpu.staging_buffer(4), gpu.staging_buffer(4)];
        let mut inflight = std::collections::VecDeque::with_capacity(2);
        inflight.push_back(gpu.submit_then_read(Some(&plan.prefill), &plan.token, &staging[0], 4).await?);
        self.cached.extend_from_slice(&ids[plan.keep..]);
        self.prefilled = m - plan.keep;
        let mut out = Vec::with_capacity(opts.max_new_tokens);
        // Decode steps queued so far; step j feeds token j-1 at position m + j - 1.
        let mut steps = 0usize;
        let mut t_first = 0.0;
        loop {
            if steps + 1 < opts.max_new_tokens && inflight.len() < 2 {
                steps += 1;
                let pos = (m + steps - 1) as u32;
                plan.seq.write_u32(gpu, &[pos, pos + 1])?;
                inflight.push_back(gpu.submit_then_read(Some(&plan.decode), &plan.token, &staging[steps % 2], 4).await?);
            }
            let Some(read) = inflight.pop_front() else { break };
            let bytes = gpu.finish_read(read, &staging[out.len() % 2]).await?;
            let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if out.is_empty() {
                t_first = now_s();
                timings.prefill_s = t_first - t_prefill;
            }
            out.push(id);
            if !on_token(id) || Some(id) == opts.eos || out.len() == opts.max_new_tokens {
                break;
            }
        }
        // A step queued past the stop still runs (its mapping resolves unread); it fed a token
        // that was read, so the cache holds that token's keys and values too.
        drop(inflight);
        self.cached.extend_from_slice(&out[..steps.min(out.len())]);
        let t_end = now_s();
        timings.first_token_s = t_first - t0;
        timings.decode_tokens = out.len().saturating_sub(1);
        timings.decode_s = if out.len() > 1 { t_end - t_first } else { 0.0 };
        self.timings = timings;
        Ok(out)
    }

    /// GPU time of every dispatch of the lists `respond` would run for this prompt (vision,
    /// prefill, one decode step), as (stage, kernel, ns). Runs each list once; the cache then
    /// holds only what it held before this prompt's new part.
    /// Also each list's `ReplayTiming` (GPU time per run without timestamps, host encode time).
    pub async fn profile(&mut self, gpu: &Gpu, ids: &[u32], image_token: u32, images: &[Tensor], opts: &GenerateOptions) -> Result<(Vec<(&'static str, String, f64)>, Vec<(&'static str, ReplayTiming)>)> {
        let opts = GenerateOptions { max_new_tokens: opts.max_new_tokens.max(2), ..opts.clone() };
        let Some(plan) = self.plan(gpu, ids, image_token, images, &opts, false).await? else {
            return Ok((Vec::new(), Vec::new()));
        };
        self.cached.truncate(plan.keep);
        let mut out = Vec::new();
        let mut replay = Vec::new();
        if let Some(v) = &plan.vision {
            out.extend(v.profile(gpu).await?.into_iter().map(|(k, ns)| ("vision", k, ns)));
            replay.push(("vision", v.replay_timing(gpu, 5).await?));
        }
        out.extend(plan.prefill.profile(gpu).await?.into_iter().map(|(k, ns)| ("prefill", k, ns)));
        replay.push(("prefill", plan.prefill.replay_timing(gpu, 5).await?));
        let pos = ids.len() as u32;
        plan.seq.write_u32(gpu, &[pos, pos + 1])?;
        out.extend(plan.decode.profile(gpu).await?.into_iter().map(|(k, ns)| ("decode", k, ns)));
        // Replays feed each sampled token to the next run at the same position: the same work.
        replay.push(("decode", plan.decode.replay_timing(gpu, 100).await?));
        Ok((out, replay))
    }

    /// Checks the prompt and records the lists that answer it; None when nothing is to be
    /// generated. Leaves the session's state as it is. `run_vision`: submit the vision list as
    /// soon as it is recorded, so the GPU runs it while the rest is recorded.
    async fn plan(&self, gpu: &Gpu, ids: &[u32], image_token: u32, images: &[Tensor], opts: &GenerateOptions, run_vision: bool) -> Result<Option<Plan>> {
        let model: &Model = &self.model;
        let cfg = &model.cfg.llm;
        let n_img = model.cfg.num_image_tokens;
        let m = ids.len();
        if m == 0 {
            return Err(Error::Invalid("empty prompt".into()));
        }
        if m.saturating_add(opts.max_new_tokens) > self.cache.capacity {
            return Err(context_error(m, opts.max_new_tokens, self.cache.capacity));
        }
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(Error::Invalid(format!("token id {bad} outside the vocabulary of {}", cfg.vocab)));
        }
        let positions = image_positions(ids, image_token);
        if positions.len() != images.len() * n_img {
            return Err(Error::Invalid(format!("{} image tokens in the prompt for {} images of {n_img}", positions.len(), images.len())));
        }
        if opts.max_new_tokens == 0 {
            return Ok(None);
        }
        // Keep the cached prefix, but prefill at least one token (for the logits) and never
        // split an image's tokens.
        let mut keep = self.cached.iter().zip(ids).take_while(|(a, b)| a == b).count().min(m - 1);
        for k in 0..images.len() {
            let (first, last) = (positions[k * n_img] as usize, positions[(k + 1) * n_img - 1] as usize);
            if first < keep && keep <= last {
                keep = first;
            }
        }
        let first_new_image = (0..images.len()).find(|&k| positions[k * n_img] as usize >= keep).unwrap_or(images.len());
        let new_ids = &ids[keep..];
        let new_positions: Vec<u32> = positions[first_new_image * n_img..].iter().map(|&p| p - keep as u32).collect();
        let new_images = &images[first_new_image..];
        let total = self.cache.capacity;
        let act = model.act;

        // State the lists share: the current token, positions, sampling step and history.
        let token = Tensor::from_u32(gpu, &[1], &[0])?;
        let seq = Tensor::from_u32(gpu, &[2], &[keep as u32, m as u32])?;
        let step = Tensor::from_u32(gpu, &[1], &[0])?;
        let mut hist_init = ids.to_vec();
        hist_init.resize(total, 0);
        let hist_ids = Tensor::from_u32(gpu, &[total], &hist_init)?;
        let hist_count = Tensor::from_u32(gpu, &[1], &[m as u32])?;
        let history = History { ids: &hist_ids, count: &hist_count };
        // Sampling reads f32 logits: the head writes them as f32 whatever the activations are.
        let logits = Tensor::empty(gpu, &[1, cfg.vocab], DType::F32)?;

        let (vision, image_rows) = if new_images.is_empty() {
            (None, None)
        } else {
            let mut rec = Recorder::new(gpu);
            let rows = model.record_images(&mut rec, new_images)?;
            let list = rec.finish()?;
            if run_vision {
                list.run(gpu).await?;
            }
            (Some(list), rows)
        };
        let mut rec = Recorder::new(gpu);
        model.record_prefill(&mut rec, &self.cache, new_ids, keep, image_rows.as_ref().map(|r| (r, &new_positions[..])), LogitRows::Last, &logits)?;
        sample(&mut rec, &logits, &opts.sampling, &step, Some(&history), &token, 0)?;
        advance(&mut rec, &token, 0, &history, &step, true)?;
        let prefill = rec.finish()?;

        // Decode step, recorded once: embed the token the last step sampled, run one position.
        let mut rec = Recorder::new(gpu);
        let x1 = Tensor::empty(gpu, &[1, cfg.hidden], act)?;
        gather(&mut rec, &token, &model.weights.llm.embed, &x1)?;
        record_decoder(&mut rec, cfg, &model.weights.llm, model.consts(), &self.cache, &x1, &seq, LogitRows::Last, &logits)?;
        sample(&mut rec, &logits, &opts.sampling, &step, Some(&history), &token, 0)?;
        advance(&mut rec, &token, 0, &history, &step, true)?;
        let decode = rec.finish()?;
        Ok(Some(Plan { vision, prefill, decode, token, seq, keep }))
    }

    /// Where the last `respond`'s time went.
    pub fn timings(&self) -> RespondTimings {
        self.timings
    }
}

/// The recorded lists of one answer and the small tensors `respond` rewrites between them.
struct Plan {
    vision: Option<StepList>,
    prefill: StepList,
    decode: StepList,
    /// The sampled token, on the GPU.
    token: Tensor,
    /// [first position of this list, positions after it].
    seq: Tensor,
    /// Cached tokens kept.
    keep: usize,
}

/// Host-clock seconds of the stages of one `respond` (each stage's GPU work waited for).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RespondTimings {
    /// Vision tower + aligner for the images not already in the cache.
    pub vision_s: f64,
    /// Embedding, decoder over the new prompt tokens, first sample and its read-back.
    pub prefill_s: f64,
    /// From the call to the first token read back (vision + prefill + set-up).
    pub first_token_s: f64,
    /// From the first token to the last.
    pub decode_s: f64,
    /// Tokens produced after the first.
    pub decode_tokens: usize,
}

impl RespondTimings {
    pub fn decode_tok_s(&self) -> f64 {
        if self.decode_s > 0.0 { self.decode_tokens as f64 / self.decode_s } else { 0.0 }
    }
}

impl Session<'static> {
    /// A session that holds its model by reference count, so it can be stored beside it.
    pub fn shared(model: std::rc::Rc<Model>, gpu: &Gpu, capacity: usize) -> Result<Session<'static>> {
        Session::with(ModelRef::Shared(model), gpu, capacity)
    }
}

impl Model {
    /// One-shot generation: a session sized for this prompt and answer.
    pub async fn generate(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        image_token: u32,
        images: &[Tensor],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let capacity = ids.len().saturating_add(opts.max_new_tokens);
        if capacity > self.cfg.llm.max_positions {
            return Err(context_error(ids.len(), opts.max_new_tokens, self.cfg.llm.max_positions));
        }
        Session::new(self, gpu, capacity.max(1))?.respond(gpu, ids, image_token, images, opts, on_token).await
    }
}

fn context_error(prompt: usize, new: usize, context: usize) -> Error {
    Error::Invalid(format!("prompt of {prompt} tokens + {new} new tokens exceeds the context of {context}"))
}
