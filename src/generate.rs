//! Token generation. A `Session` owns a KV cache; each `respond` prefills only what the cache
//! does not already hold (the longest common prefix of the cached ids and the new prompt is
//! kept, so earlier chat turns are not prefilled again), samples on the GPU, then replays one
//! recorded decode step per token. The sampled id stays on the GPU (the next step embeds it from
//! there); only the id is read back, for streaming and stop checks.

use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::model::llama::{record_decoder, KvCache, LogitRows};
use crate::model::vlm::Model;
use crate::ops::convert::{convert, Source};
use crate::ops::embedding::{embed, gather, image_positions};
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
        let cache = KvCache::new(gpu, &model.cfg.llm, capacity, model.act)?;
        Ok(Session { model, cache, cached: Vec::new(), prefilled: 0 })
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
        let model_ref = self.model.clone();
        let model: &Model = &model_ref;
        let cfg = &model.cfg.llm;
        let n_img = model.cfg.num_image_tokens;
        let m = ids.len();
        if m == 0 {
            return Err(Error::Invalid("empty prompt".into()));
        }
        if m + opts.max_new_tokens > self.cache.capacity {
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
            return Ok(Vec::new());
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
        let s = new_ids.len();
        let total = self.cache.capacity;
        let act = model.act;

        // State the two lists share: the current token, positions, sampling step and history.
        let token = Tensor::from_u32(gpu, &[1], &[0])?;
        let seq = Tensor::from_u32(gpu, &[2], &[keep as u32, m as u32])?;
        let step = Tensor::from_u32(gpu, &[1], &[0])?;
        let mut hist_init = ids.to_vec();
        hist_init.resize(total, 0);
        let hist_ids = Tensor::from_u32(gpu, &[total], &hist_init)?;
        let hist_count = Tensor::from_u32(gpu, &[1], &[m as u32])?;
        let history = History { ids: &hist_ids, count: &hist_count };
        // Sampling reads f32 logits; with f16 activations the head's output is widened first.
        let logits = Tensor::empty(gpu, &[1, cfg.vocab], DType::F32)?;
        let head_out = if act == DType::F32 { logits.clone() } else { Tensor::empty(gpu, &[1, cfg.vocab], act)? };
        let widen = |rec: &mut Recorder| -> Result<()> {
            if act == DType::F32 {
                return Ok(());
            }
            let raw = head_out.bitcast(DType::U32, &[cfg.vocab.div_ceil(2)])?;
            convert(rec, &raw, cfg.vocab, Source::F16, &logits.reshape(&[cfg.vocab])?)
        };

        // Prefill what the cache lacks, then the first sample.
        let mut rec = Recorder::new(gpu);
        let image_rows = model.record_images(&mut rec, new_images)?;
        let idt = Tensor::from_u32(gpu, &[s], new_ids)?;
        let x = Tensor::empty(gpu, &[s, cfg.hidden], act)?;
        let pos_t = Tensor::from_u32(gpu, &[new_positions.len().max(1)], if new_positions.is_empty() { &[0] } else { &new_positions })?;
        embed(&mut rec, &idt, &model.weights.llm.embed, image_rows.as_ref().map(|r| (r, &pos_t)), &x)?;
        record_decoder(&mut rec, cfg, &model.weights.llm, model.consts(), &self.cache, &x, &seq, LogitRows::Last, &head_out)?;
        widen(&mut rec)?;
        sample(&mut rec, &logits, &opts.sampling, &step, Some(&history), &token, 0)?;
        advance(&mut rec, &token, 0, &history, &step, true)?;
        // From here the cache rows past `keep` are being rewritten.
        self.cached.truncate(keep);
        rec.finish()?.run(gpu).await?;
        self.cached.extend_from_slice(new_ids);
        self.prefilled = s;

        // Decode step, recorded once: embed the token the last step sampled, run one position.
        let mut rec = Recorder::new(gpu);
        let x1 = Tensor::empty(gpu, &[1, cfg.hidden], act)?;
        gather(&mut rec, &token, &model.weights.llm.embed, &x1)?;
        record_decoder(&mut rec, cfg, &model.weights.llm, model.consts(), &self.cache, &x1, &seq, LogitRows::Last, &head_out)?;
        widen(&mut rec)?;
        sample(&mut rec, &logits, &opts.sampling, &step, Some(&history), &token, 0)?;
        advance(&mut rec, &token, 0, &history, &step, true)?;
        let decode = rec.finish()?;

        let mut out = Vec::with_capacity(opts.max_new_tokens);
        let staging = gpu.staging_buffer(4); // reused: nothing is allocated per token
        loop {
            let bytes = gpu.read_bytes_via(&staging, token.buffer(), token.offset(), 4).await?;
            let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            out.push(id);
            if !on_token(id) || Some(id) == opts.eos || out.len() == opts.max_new_tokens {
                break;
            }
            // Feed `id` at the next position.
            let pos = self.cached.len() as u32;
            seq.write_u32(gpu, &[pos, pos + 1])?;
            decode.run(gpu).await?;
            self.cached.push(id);
        }
        Ok(out)
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
        let capacity = ids.len() + opts.max_new_tokens;
        if capacity > self.cfg.llm.max_positions {
            return Err(context_error(ids.len(), opts.max_new_tokens, self.cfg.llm.max_positions));
        }
        Session::new(self, gpu, capacity.max(1))?.respond(gpu, ids, image_token, images, opts, on_token).await
    }
}

fn context_error(prompt: usize, new: usize, context: usize) -> Error {
    Error::Invalid(format!("prompt of {prompt} tokens + {new} new tokens exceeds the context of {context}"))
}
