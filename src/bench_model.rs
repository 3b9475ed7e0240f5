//! `dsvl-gpu bench`: end-to-end figures of a loaded model (vision, prefill, time to first
//! token, decode tokens/s, GPU memory), medians over repeated runs after a warm-up. A benchmark,
//! not a test: it asserts nothing.
//!
//! The prompt is synthetic so any reference can rebuild it exactly (bench/torch_reference.py
//! does): BOS, one image's tokens, then `text_tokens - 1` ids `(1000 + 37 * i) % vocab` (one up
//! where that hits the image id). Decoding samples (temperature 0.7, top-p 0.9) and never stops
//! early.

use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, RespondTimings, Session};
use crate::gpu::{Gpu, ReplayTiming, Tensor};
use crate::model::vlm::Model;
use crate::ops::sample::Sampling;

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Timed runs after one warm-up.
    pub runs: usize,
    /// Text tokens in the prompt, BOS included.
    pub text_tokens: usize,
    /// Tokens generated per run (the first comes from prefill).
    pub decode_tokens: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { runs: 5, text_tokens: 40, decode_tokens: 256 }
    }
}

/// Medians over the timed runs.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BenchReport {
    pub prompt_tokens: usize,
    pub image_tokens: usize,
    pub runs: usize,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub prefill_tok_s: f64,
    pub first_token_ms: f64,
    pub decode_tokens: usize,
    pub decode_tok_s: f64,
    /// (max - min) / median of decode tok/s over the runs.
    pub decode_spread: f64,
    pub gpu_peak_bytes: u64,
}

/// The synthetic prompt described in the module comment.
pub fn bench_prompt(bos: u32, image: u32, image_tokens: usize, text_tokens: usize, vocab: usize) -> Vec<u32> {
    let mut ids = vec![bos];
    ids.extend(std::iter::repeat_n(image, image_tokens));
    for i in 0..text_tokens.saturating_sub(1) {
        let mut t = ((1000 + 37 * i) % vocab) as u32;
        if t == image {
            t = (t + 1) % vocab as u32;
        }
        ids.push(t);
    }
    ids
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark on one preprocessed image (f32 [3, S, S]).
pub async fn bench_model(gpu: &Gpu, model: &Model, bos: u32, image_token: u32, pixels: &Tensor, o: &BenchOptions) -> Result<BenchReport> {
    if o.runs == 0 || o.decode_tokens == 0 || o.text_tokens == 0 {
        return Err(Error::Invalid("bench: runs, text tokens and decode tokens must be at least 1".into()));
    }
    let n_img = model.cfg.num_image_tokens;
    let ids = bench_prompt(bos, image_token, n_img, o.text_tokens, model.cfg.llm.vocab);
    let capacity = ids.len().saturating_add(o.decode_tokens);
    if capacity > model.cfg.llm.max_positions {
        return Err(Error::Invalid(format!("bench: {} prompt + {} new tokens exceed the context of {}", ids.len(), o.decode_tokens, model.cfg.llm.max_positions)));
    }
    let sampling = Sampling { temperature: 0.7, top_k: 0, top_p: 0.9, repetition_penalty: 1.0, seed: 1, top_p_within_top_k: false };
    let opts = GenerateOptions { sampling, max_new_tokens: o.decode_tokens, eos: None };
    let images = std::slice::from_ref(pixels);
    let mut all: Vec<RespondTimings> = Vec::with_capacity(o.runs);
    for run in 0..=o.runs {
        // A fresh cache each run, so the whole prompt is prefilled.
        let mut session = Session::new(model, gpu, capacity)?;
        let out = session.respond(gpu, &ids, image_token, images, &opts, &mut |_| true).await?;
        if out.len() != o.decode_tokens {
            return Err(Error::Invalid(format!("bench: {} tokens generated of {}", out.len(), o.decode_tokens)));
        }
        if run > 0 {
            all.push(session.timings());
        }
    }
    let pick = |f: &dyn Fn(&RespondTimings) -> f64| median(&mut all.iter().map(f).collect::<Vec<_>>());
    let prefill_s = pick(&|t| t.prefill_s);
    let mut tps: Vec<f64> = all.iter().map(|t| t.decode_tok_s()).collect();
    let decode_tok_s = median(&mut tps);
    Ok(BenchReport {
        prompt_tokens: ids.len(),
        image_tokens: n_img,
        runs: o.runs,
        vision_ms: pick(&|t| t.vision_s) * 1e3,
        prefill_ms: prefill_s * 1e3,
        prefill_tok_s: ids.len() as f64 / prefill_s.max(1e-9),
        first_token_ms: pick(&|t| t.first_token_s) * 1e3,
        decode_tokens: o.decode_tokens,
        decode_tok_s,
        decode_spread: (tps[tps.len() - 1] - tps[0]) / decode_tok_s.max(1e-9),
        gpu_peak_bytes: gpu.pool_stats().peak_bytes,
    })
}

/// GPU time of one stage, and of its kernels grouped by pipeline (most expensive first).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageProfile {
    pub stage: &'static str,
    pub dispatches: usize,
    pub total_ms: f64,
    /// (kernel, dispatches, ms)
    pub kernels: Vec<(String, usize, f64)>,
    /// The stage without timestamps: GPU ms per run with runs queued back to back, host encode ms.
    pub replay: ReplayTiming,
}

/// Timestamps around every dispatch of the vision, prefill and decode lists of the bench prompt.
pub async fn profile_model(gpu: &Gpu, model: &Model, bos: u32, image_token: u32, pixels: &Tensor, o: &BenchOptions) -> Result<Vec<StageProfile>> {
    let ids = bench_prompt(bos, image_token, model.cfg.num_image_tokens, o.text_tokens, model.cfg.llm.vocab);
    let sampling = Sampling { temperature: 0.7, top_k: 0, top_p: 0.9, repetition_penalty: 1.0, seed: 1, top_p_within_top_k: false };
    let opts = GenerateOptions { sampling, max_new_tokens: 2, eos: None };
    let mut session = Session::new(model, gpu, ids.len() + 2)?;
    let (rows, replay) = session.profile(gpu, &ids, image_token, std::slice::from_ref(pixels), &opts).await?;
    let mut out: Vec<StageProfile> = Vec::new();
    for stage in ["vision", "prefill", "decode"] {
        let mut by: Vec<(String, usize, f64)> = Vec::new();
        let mut n = 0;
        for (_, k, ns) in rows.iter().filter(|r| r.0 == stage) {
            n += 1;
            match by.iter_mut().find(|e| &e.0 == k) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += ns / 1e6;
                }
                None => by.push((k.clone(), 1, ns / 1e6)),
            }
        }
        if n == 0 {
            continue;
        }
        by.sort_by(|a, b| b.2.total_cmp(&a.2));
        let replay = replay.iter().find(|r| r.0 == stage).map(|r| r.1).unwrap_or_default();
        out.push(StageProfile { stage, dispatches: n, total_ms: by.iter().map(|e| e.2).sum(), kernels: by, replay });
    }
    Ok(out)
}
