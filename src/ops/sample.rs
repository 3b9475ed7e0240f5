//! Choosing the next token on the GPU: the id goes to a U32 tensor, so decode never reads
//! logits back and a recorded decode list can be replayed step after step.
//!
//! Contract:
//! - `logits`: f32 [V] (V up to a few million; the model has 102400). Non-finite logits are not
//!   supported (argmax never picks NaN; the sampling paths assume finite values).
//! - The token is written to `out[out_off]` (U32).
//! - Randomness: a counter-based hash of (`seed`, step, index). `seed` is a parameter fixed at
//!   record time; the step is element 0 of a U32 storage tensor that the caller rewrites
//!   (`write_u32`) or [`advance`] bumps between replays, so replaying needs no re-recording.
//! - Methods ([`Sampling::method`]):
//!   * greedy (temperature <= 0, or top_k == 1): argmax, first index among ties; a two-stage
//!     reduction (1024 logits per workgroup, then one workgroup over the chunk results).
//!   * temperature only: exact sampling from softmax(logits / T) by Gumbel-max, the same
//!     reduction over logits / T + Gumbel noise.
//!   * top-k and/or top-p: the top k candidates (k <= [`MAX_TOP_K`] = 256; top-p without top-k
//!     uses 256 candidates, so a nucleus wider than 256 tokens is truncated to them) are
//!     selected by stages that bitonic-sort up to 1024 entries per workgroup and keep the best
//!     k of each (stage count computed here at record time: 102400 logits take 5 stages for
//!     k = 256, 3 for k <= 64, 2 for k <= 10). The first stage also writes each chunk's softmax partials,
//!     so one workgroup can form true probabilities of the candidates with the
//!     full-vocabulary normaliser, cut at the smallest prefix whose cumulative probability
//!     reaches top_p (at least one kept) and draw one. With `top_p_within_top_k` the normaliser
//!     is the candidates' own sum, as HF's top-k-then-top-p chain does.
//! - Repetition penalty (HF semantics): for each id in `history.ids[..count]`, once even if
//!   repeated, logit / r when logit > 0 else logit * r; ids >= V are ignored. It is applied
//!   to a scratch copy, so the logits tensor stays untouched.

use super::{shape_err, u32_of, WG};
use crate::check::{CheckResult, Rng};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(SampleParams("SampleParams") {
    n: u32, inv_temp: f32, seed: u32, gumbel: u32, sort_n: u32, keep: u32, n_chunks: u32, n_cand: u32,
    top_p: f32, penalty: f32, cap: u32, out_off: u32, norm_topk: u32, bump_step: u32, run: u32, _pad1: u32,
});

/// Largest top-k (and the candidate count of top-p alone).
pub const MAX_TOP_K: usize = 256;
/// Entries one workgroup sorts in a top-k stage (8 KiB of workgroup memory).
const SORT_MAX: usize = 1024;
/// Logits per workgroup in the argmax reduction.
const ARGMAX_CHUNK: usize = 1024;

const U: Bind = Bind::Uniform;
const R: Bind = Bind::Read;
const W: Bind = Bind::ReadWrite;
const PENALTY_COPY: Kernel = Kernel { shader: "sample", entry: "penalty_copy", binds: &[U, R, R, R, W] };
const PENALTY_APPLY: Kernel = Kernel { shader: "sample", entry: "penalty_apply", binds: &[U, R, R, R, W] };
const ARGMAX_PARTIAL: Kernel = Kernel { shader: "sample", entry: "argmax_partial", binds: &[U, R, R, W] };
const ARGMAX_FINAL: Kernel = Kernel { shader: "sample", entry: "argmax_final", binds: &[U, R, W] };
const TOPK_FIRST: Kernel = Kernel { shader: "sample", entry: "topk_first", binds: &[U, R, W, W] };
const TOPK_MERGE: Kernel = Kernel { shader: "sample", entry: "topk_merge", binds: &[U, R, W] };
const TOPK_DRAW: Kernel = Kernel { shader: "sample", entry: "topk_draw", binds: &[U, R, R, R, W] };
const ADVANCE: Kernel = Kernel { shader: "sample", entry: "advance", binds: &[U, R, W, W, W] };

fn key(kernel: Kernel, flag: &'static str) -> PipelineKey {
    PipelineKey::new(kernel, &[flag], &[])
}

/// Every pipeline this file can ask for (validated by naga in the tests).
pub fn variants() -> Vec<PipelineKey> {
    vec![
        key(PENALTY_COPY, "PENALTY"),
        key(PENALTY_APPLY, "PENALTY"),
        key(ARGMAX_PARTIAL, "ARGMAX"),
        key(ARGMAX_FINAL, "ARGMAX_FINAL"),
        key(TOPK_FIRST, "TOPK_FIRST"),
        key(TOPK_MERGE, "TOPK_MERGE"),
        key(TOPK_DRAW, "TOPK_DRAW"),
        key(ADVANCE, "ADVANCE"),
    ]
}

/// How to pick the next token (HF `generate` knobs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// <= 0: greedy.
    pub temperature: f32,
    /// 0: off; at most [`MAX_TOP_K`].
    pub top_k: usize,
    /// >= 1: off; otherwise in (0, 1).
    pub top_p: f32,
    /// 1: off; > 0.
    pub repetition_penalty: f32,
    pub seed: u32,
    /// Top-p over probabilities renormalised within the top-k candidates (HF's chain) instead
    /// of the true (full-vocabulary) probabilities.
    pub top_p_within_top_k: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0, seed: 0, top_p_within_top_k: false }
    }
}

/// What a `Sampling` runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Greedy,
    Gumbel,
    TopK { k: usize },
}

impl Sampling {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if !self.temperature.is_finite() {
            return bad(format!("temperature {} is not finite", self.temperature));
        }
        if self.top_k > MAX_TOP_K {
            return bad(format!("top_k {} exceeds the GPU sampler's cap of {MAX_TOP_K}", self.top_k));
        }
        if self.top_p.is_nan() || self.top_p <= 0.0 {
            return bad(format!("top_p {} must be in (0, 1] (1 disables it)", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!("repetition_penalty {} must be positive (1 disables it)", self.repetition_penalty));
        }
        Ok(())
    }

    pub fn method(&self) -> Method {
        if self.temperature <= 0.0 || self.top_k == 1 {
            Method::Greedy
        } else if self.top_k == 0 && self.top_p >= 1.0 {
            Method::Gumbel
        } else {
            Method::TopK { k: if self.top_k == 0 { MAX_TOP_K } else { self.top_k } }
        }
    }
}

/// Previously generated ids (and the prompt's, as HF includes them) for the repetition
/// penalty: `ids` U32 [cap], of which the first `count[0]` are valid.
#[derive(Clone, Copy, Debug)]
pub struct History<'a> {
    pub ids: &'a Tensor,
    pub count: &'a Tensor,
}

impl History<'_> {
    fn check(&self, op: &'static str) -> Result<()> {
        if self.ids.dtype() != DType::U32 || self.count.dtype() != DType::U32 || self.ids.is_empty() || self.count.is_empty() {
            return Err(shape_err(op, format!("history ids {:?} {} and count {:?} {} must be non-empty U32", self.ids.shape(), self.ids.dtype(), self.count.shape(), self.count.dtype())));
        }
        if self.ids.same_buffer(self.count) {
            return Err(shape_err(op, "history ids and count must be separate tensors".into()));
        }
        u32_of(op, self.ids.len()).map(|_| ())
    }
}

fn check_logits(op: &'static str, t: &Tensor) -> Result<u32> {
    if t.dtype() != DType::F32 || t.is_empty() {
        return Err(shape_err(op, format!("logits must be non-empty f32, got {:?} {}", t.shape(), t.dtype())));
    }
    u32_of(op, t.len())
}

fn check_u32_slot(op: &'static str, what: &str, t: &Tensor, off: usize) -> Result<u32> {
    if t.dtype() != DType::U32 || off >= t.len() {
        return Err(shape_err(op, format!("{what} must be U32 with element {off}, got {:?} {}", t.shape(), t.dtype())));
    }
    u32_of(op, off)
}

fn groups(rec: &Recorder, n: usize, per: usize) -> Result<[u32; 3]> {
    Ok(grid(u32_of("sample", n.div_ceil(per))?, rec.gpu.caps.max_workgroups_per_dim))
}

/// work = logits with the repetition penalty applied to the ids in the history.
pub fn repetition_penalty(rec: &mut Recorder, logits: &Tensor, history: &History, penalty: f32, work: &Tensor) -> Result<()> {
    let op = "repetition_penalty";
    let n = check_logits(op, logits)?;
    history.check(op)?;
    if work.dtype() != DType::F32 || work.len() != logits.len() || work.same_buffer(logits) {
        return Err(shape_err(op, format!("work {:?} {} must be a separate f32 tensor like the logits {:?}", work.shape(), work.dtype(), logits.shape())));
    }
    if !(penalty > 0.0 && penalty.is_finite()) {
        return Err(Error::Invalid(format!("repetition penalty {penalty} must be positive")));
    }
    let params = SampleParams { n, penalty, cap: history.ids.len() as u32, ..Default::default() };
    let ts = [logits, history.ids, history.count, work];
    rec.dispatch(&key(PENALTY_COPY, "PENALTY"), &params, &ts, groups(rec, logits.len(), WG as usize)?)?;
    rec.dispatch(&key(PENALTY_APPLY, "PENALTY"), &params, &ts, groups(rec, history.ids.len(), WG as usize)?)
}

/// out[out_off] = argmax of `src` (first index among ties), or with `gumbel = Some((T, seed))`
/// of src / T + Gumbel(seed, step[0], index) noise: one exact draw from softmax(src / T).
pub fn argmax(rec: &mut Recorder, src: &Tensor, gumbel: Option<(f32, u32)>, step: &Tensor, out: &Tensor, out_off: usize) -> Result<()> {
    let op = "argmax";
    let n = check_logits(op, src)?;
    check_u32_slot(op, "step", step, 0)?;
    let out_off = check_u32_slot(op, "out", out, out_off)?;
    let chunks = src.len().div_ceil(ARGMAX_CHUNK);
    let (inv_temp, seed) = match gumbel {
        Some((t, seed)) if t > 0.0 && t.is_finite() => (1.0 / t, seed),
        Some((t, _)) => return Err(Error::Invalid(format!("Gumbel sampling needs a positive temperature, got {t}"))),
        None => (1.0, 0),
    };
    let params = SampleParams { n, inv_temp, seed, gumbel: gumbel.is_some() as u32, n_chunks: chunks as u32, out_off, ..Default::default() };
    let part = Tensor::empty(rec.gpu, &[2 * chunks], DType::U32)?;
    rec.dispatch(&key(ARGMAX_PARTIAL, "ARGMAX"), &params, &[src, step, &part], groups(rec, chunks, 1)?)?;
    rec.dispatch(&key(ARGMAX_FINAL, "ARGMAX_FINAL"), &params, &[&part, out], [1, 1, 1])
}

/// The top-k candidates of a logits vector, on the GPU.
pub struct Candidates {
    /// U32 [2 * entries]: (f32 bits of the logit, index) pairs, best first; the first `n_cand`
    /// are the top k in (value descending, index ascending) order.
    pub pairs: Tensor,
    pub n_cand: usize,
    /// F32 [2 * n_chunks]: per first-stage chunk (max logit, sum of exp((l - max) / T)).
    pub partials: Tensor,
    pub n_chunks: usize,
    /// Selection stages recorded.
    pub stages: usize,
    pub temperature: f32,
}

/// Records the top-k selection stages (k in 1..=256) and the softmax partials at temperature T.
pub fn top_k(rec: &mut Recorder, src: &Tensor, k: usize, temperature: f32) -> Result<Candidates> {
    let op = "top_k";
    let v = check_logits(op, src)? as usize;
    if k == 0 || k > MAX_TOP_K {
        return Err(Error::Invalid(format!("top_k {k} must be in 1..={MAX_TOP_K}")));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::Invalid(format!("top-k sampling needs a positive temperature, got {temperature}")));
    }
    let mut n = v;
    let mut input: Option<Tensor> = None;
    let mut partials: Option<(Tensor, usize)> = None;
    let mut stages = 0;
    // Entries per sorted run of the stage's input (1: the logits, unsorted).
    let mut run = 1;
    loop {
        let sort_n = n.next_power_of_two().min(SORT_MAX);
        let keep = k.min(sort_n);
        let chunks = n.div_ceil(sort_n);
        let pairs = Tensor::empty(rec.gpu, &[2 * chunks * keep], DType::U32)?;
        let params = SampleParams {
            n: u32_of(op, n)?,
            inv_temp: 1.0 / temperature,
            sort_n: sort_n as u32,
            keep: keep as u32,
            n_chunks: u32_of(op, chunks)?,
            run: run as u32,
            ..Default::default()
        };
        let wg = groups(rec, chunks, 1)?;
        match &input {
            None => {
                let part = Tensor::empty(rec.gpu, &[2 * chunks], DType::F32)?;
                rec.dispatch(&key(TOPK_FIRST, "TOPK_FIRST"), &params, &[src, &pairs, &part], wg)?;
                partials = Some((part, chunks));
            }
            Some(prev) => rec.dispatch(&key(TOPK_MERGE, "TOPK_MERGE"), &params, &[prev, &pairs], wg)?,
        }
        stages += 1;
        // The next stage's windows (of sort_n, a power of two) hold whole runs of `keep` when
        // that is a power of two too: it merges them instead of sorting from scratch.
        run = if keep.is_power_of_two() { keep } else { 1 };
        n = chunks * keep;
        input = Some(pairs);
        if chunks == 1 {
            break;
        }
    }
    let (Some(pairs), Some((partials, n_chunks))) = (input, partials) else {
        return Err(Error::Internal { context: op.into(), message: "no selection stage recorded".into() });
    };
    Ok(Candidates { pairs, n_cand: k.min(v), partials, n_chunks, stages, temperature })
}

/// Draws one of the candidates: true probabilities (or, with `within_top_k`, renormalised
/// over the candidates), top-p cutoff (`top_p >= 1` disables it), one uniform from
/// (seed, step[0]). Writes the id to out[out_off].
#[allow(clippy::too_many_arguments)]
pub fn draw(rec: &mut Recorder, c: &Candidates, top_p: f32, within_top_k: bool, seed: u32, step: &Tensor, out: &Tensor, out_off: usize) -> Result<()> {
    let op = "draw";
    check_u32_slot(op, "step", step, 0)?;
    let out_off = check_u32_slot(op, "out", out, out_off)?;
    if c.n_cand == 0 || c.n_cand > MAX_TOP_K || top_p.is_nan() || top_p <= 0.0 {
        return Err(Error::Invalid(format!("draw over {} candidates with top_p {top_p}", c.n_cand)));
    }
    let params = SampleParams {
        inv_temp: 1.0 / c.temperature,
        seed,
        n_chunks: c.n_chunks as u32,
        n_cand: c.n_cand as u32,
        // Disabled: a mass the cumulative sum never reaches, so rounding cannot cut the tail.
        top_p: if top_p >= 1.0 { 2.0 } else { top_p },
        norm_topk: within_top_k as u32,
        out_off,
        ..Default::default()
    };
    rec.dispatch(&key(TOPK_DRAW, "TOPK_DRAW"), &params, &[&c.pairs, &c.partials, step, out], [1, 1, 1])
}

/// Records the whole selection: penalty (if any), then greedy, Gumbel or top-k/top-p.
/// Scratch buffers are owned by the recorded list.
#[allow(clippy::too_many_arguments)]
pub fn sample(rec: &mut Recorder, logits: &Tensor, cfg: &Sampling, step: &Tensor, history: Option<&History>, out: &Tensor, out_off: usize) -> Result<()> {
    let op = "sample";
    cfg.validate()?;
    check_logits(op, logits)?;
    let work;
    let src = if cfg.repetition_penalty != 1.0 {
        let Some(h) = history else {
            return Err(Error::Invalid("a repetition penalty needs the history of ids".into()));
        };
        work = Tensor::empty(rec.gpu, logits.shape(), DType::F32)?;
        repetition_penalty(rec, logits, h, cfg.repetition_penalty, &work)?;
        &work
    } else {
        logits
    };
    match cfg.method() {
        Method::Greedy => argmax(rec, src, None, step, out, out_off),
        Method::Gumbel => argmax(rec, src, Some((cfg.temperature, cfg.seed)), step, out, out_off),
        Method::TopK { k } => {
            let c = top_k(rec, src, k, cfg.temperature)?;
            draw(rec, &c, cfg.top_p, cfg.top_p_within_top_k, cfg.seed, step, out, out_off)
        }
    }
}

/// One tiny dispatch after `sample`: history.ids[count] = out[out_off] while there is room,
/// count += 1, and step += 1 when `bump_step`. A decode list ending with it replays with no
/// host writes at all.
pub fn advance(rec: &mut Recorder, token: &Tensor, token_off: usize, history: &History, step: &Tensor, bump_step: bool) -> Result<()> {
    let op = "advance";
    history.check(op)?;
    let out_off = check_u32_slot(op, "token", token, token_off)?;
    check_u32_slot(op, "step", step, 0)?;
    if token.same_buffer(history.ids) || token.same_buffer(history.count) || step.same_buffer(history.ids) || step.same_buffer(history.count) || step.same_buffer(token) {
        return Err(shape_err(op, "token, history ids, count and step must be separate tensors".into()));
    }
    let params = SampleParams { cap: history.ids.len() as u32, out_off, bump_step: bump_step as u32, ..Default::default() };
    rec.dispatch(&key(ADVANCE, "ADVANCE"), &params, &[token, history.ids, history.count, step], [1, 1, 1])
}

// ---- CPU twin (f64) of the random numbers and of the selection logic ----

fn mix32(x: u32) -> u32 {
    let z = (x ^ (x >> 16)).wrapping_mul(0x21f0_aaad);
    let z = (z ^ (z >> 15)).wrapping_mul(0x735a_2d97);
    z ^ (z >> 15)
}

/// The shader's counter-based hash of (seed, step, index).
pub fn rng_u32(seed: u32, step: u32, index: u32) -> u32 {
    let k = mix32(mix32(seed ^ 0x5bd1_e995) ^ step);
    mix32(mix32(index ^ k).wrapping_add(k))
}

/// The uniform in (0, 1) the draw uses.
pub fn unit_f64(h: u32) -> f64 {
    ((h >> 9) as f64 + 0.5) / (1u64 << 23) as f64
}

/// The Gumbel noise, exactly: -ln(-ln(1 - u)), u = (h + 0.5) / 2^32.
pub fn gumbel_f64(h: u32) -> f64 {
    let u = (h as f64 + 0.5) / 4_294_967_296.0;
    -(-(-u).ln_1p()).ln()
}

/// HF repetition penalty in f64.
pub fn penalized_f64(logits: &[f32], history: &[u32], penalty: f64) -> Vec<f64> {
    let mut out: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
    for &id in history {
        if let Some(&l) = logits.get(id as usize) {
            let l = l as f64;
            out[id as usize] = if l > 0.0 { l / penalty } else { l * penalty };
        }
    }
    out
}

/// What the twin chose and how close the choice was to flipping.
#[derive(Clone, Debug)]
pub struct TwinDraw {
    pub token: u32,
    /// Smallest gap (scores or cumulative probabilities) that a rounding difference would have
    /// to bridge to change the result.
    pub margin: f64,
    /// The tokens this configuration may return, with the probabilities draws should follow.
    pub dist: Vec<(u32, f64)>,
}

/// Candidate order: value descending, index ascending.
fn order(logits: &[f64]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    idx
}

/// The f64 twin of `sample` after the penalty (pass penalised logits).
pub fn sample_f64(logits: &[f64], cfg: &Sampling, step: u32) -> TwinDraw {
    let t = cfg.temperature as f64;
    let softmax = |ids: &[u32], z_over: &[u32]| -> Vec<(u32, f64)> {
        let m = ids.iter().chain(z_over).map(|&i| logits[i as usize]).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = z_over.iter().map(|&i| ((logits[i as usize] - m) / t).exp()).sum();
        ids.iter().map(|&i| (i, ((logits[i as usize] - m) / t).exp() / z)).collect()
    };
    let all: Vec<u32> = (0..logits.len() as u32).collect();
    match cfg.method() {
        Method::Greedy => {
            let o = order(logits);
            let margin = if o.len() > 1 { logits[o[0] as usize] - logits[o[1] as usize] } else { f64::INFINITY };
            // A tie is decided by index, which rounding cannot flip.
            TwinDraw { token: o[0], margin: if margin == 0.0 { f64::INFINITY } else { margin }, dist: vec![(o[0], 1.0)] }
        }
        Method::Gumbel => {
            let scores: Vec<f64> = all.iter().map(|&i| logits[i as usize] / t + gumbel_f64(rng_u32(cfg.seed, step, i))).collect();
            let o = order(&scores);
            let margin = if o.len() > 1 { scores[o[0] as usize] - scores[o[1] as usize] } else { f64::INFINITY };
            TwinDraw { token: o[0], margin, dist: softmax(&all, &all) }
        }
        Method::TopK { k } => {
            let o = order(logits);
            let cands = &o[..k.min(o.len())];
            let probs = softmax(cands, if cfg.top_p_within_top_k { cands } else { &all });
            let mut kept = probs.len();
            let mut margin = f64::INFINITY;
            let mut cum = 0.0;
            if cfg.top_p < 1.0 {
                for (i, &(_, p)) in probs.iter().enumerate() {
                    cum += p;
                    margin = margin.min((cum - cfg.top_p as f64).abs());
                    if cum >= cfg.top_p as f64 && kept == probs.len() {
                        kept = i + 1;
                    }
                }
            }
            let mass: f64 = probs[..kept].iter().map(|p| p.1).sum();
            let r = unit_f64(rng_u32(cfg.seed, step, u32::MAX)) * mass;
            let mut acc = 0.0;
            let mut pick = kept - 1;
            for (i, &(_, p)) in probs[..kept].iter().enumerate() {
                acc += p;
                margin = margin.min((r - acc).abs());
                if r < acc {
                    pick = i;
                    break;
                }
            }
            let dist = probs[..kept].iter().map(|&(i, p)| (i, p / mass)).collect();
            TwinDraw { token: probs[pick].0, margin, dist }
        }
    }
}

// ---- checks ----

/// Pearson chi-square of observed counts against probabilities (bins with expected count < 5
/// pooled), and its degrees of freedom.
fn chi_square(counts: &std::collections::HashMap<u32, usize>, dist: &[(u32, f64)], n: usize) -> (f64, usize) {
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (observed, expected)
    let mut pool = (0.0, 0.0);
    for &(id, p) in dist {
        let o = *counts.get(&id).unwrap_or(&0) as f64;
        let e = p * n as f64;
        if e < 5.0 {
            pool.0 += o;
            pool.1 += e;
        } else {
            bins.push((o, e));
        }
    }
    if pool.1 > 0.0 {
        bins.push(pool);
    }
    let chi: f64 = bins.iter().map(|&(o, e)| if e > 0.0 { (o - e) * (o - e) / e } else { o * 1e9 }).sum();
    (chi, bins.len().saturating_sub(1))
}

/// Upper critical value of chi-square with `df` degrees of freedom at tail probability 3e-5
/// (z = 4, Wilson-Hilferty): a correct sampler fails a given seed this rarely, and the
/// seeds are fixed, so a pass is stable; a wrong distribution (e.g. T or the normaliser off
/// by 10%) gives values in the hundreds at n = 2000.
fn chi_square_critical(df: usize) -> f64 {
    let d = df.max(1) as f64;
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + 4.0 * a.sqrt()).powi(3)
}

/// Replays a recorded [sample, advance(no bump)] list once per step value, rewriting the step
/// tensor with `write_u32` each time; returns the draws collected on the GPU.
async fn replay_draws(gpu: &Gpu, logits: &Tensor, cfg: &Sampling, steps: &[u32]) -> Result<Vec<u32>> {
    let step = Tensor::from_u32(gpu, &[1], &[0])?;
    let token = Tensor::from_u32(gpu, &[1], &[u32::MAX])?;
    let hist = Tensor::from_u32(gpu, &[steps.len()], &vec![u32::MAX; steps.len()])?;
    let count = Tensor::from_u32(gpu, &[1], &[0])?;
    let h = History { ids: &hist, count: &count };
    let mut rec = Recorder::new(gpu);
    sample(&mut rec, logits, cfg, &step, None, &token, 0)?;
    advance(&mut rec, &token, 0, &h, &step, false)?;
    let list = rec.finish()?;
    for &s in steps {
        step.write_u32(gpu, &[s])?;
        list.run(gpu).await?;
    }
    let n = gpu.read_u32(&count).await?[0] as usize;
    if n != steps.len() {
        return Err(Error::Invalid(format!("advance counted {n} draws, expected {}", steps.len())));
    }
    gpu.read_u32(&hist).await
}

/// Compares GPU draws with the twin one by one (a mismatch is excused only where the twin's
/// margin is below 1e-4, i.e. f32 rounding could flip it) and the frequencies with chi-square.
/// Returns a summary.
fn judge(what: &str, draws: &[u32], twins: &[TwinDraw]) -> CheckResult {
    let mut excused = 0;
    let mut counts = std::collections::HashMap::new();
    for (i, (&d, t)) in draws.iter().zip(twins).enumerate() {
        if !t.dist.iter().any(|&(id, _)| id == d) {
            return Err(format!("{what}: draw {i} = {d} is outside the allowed set {:?}", t.dist.iter().map(|x| x.0).collect::<Vec<_>>()).into());
        }
        if d != t.token {
            if t.margin < 1e-4 {
                excused += 1;
            } else {
                return Err(format!("{what}: draw {i} = {d}, the f64 twin picks {} (margin {:.2e})", t.token, t.margin).into());
            }
        }
        *counts.entry(d).or_insert(0usize) += 1;
    }
    if excused * 100 > draws.len() {
        return Err(format!("{what}: {excused} of {} draws differ from the twin at near-ties", draws.len()).into());
    }
    // All twins of one configuration share the distribution.
    let dist = &twins[0].dist;
    let n = draws.len();
    let (chi, df) = chi_square(&counts, dist, n);
    let crit = chi_square_critical(df);
    let max_dev = dist.iter().map(|&(id, p)| (*counts.get(&id).unwrap_or(&0) as f64 / n as f64 - p).abs()).fold(0.0, f64::max);
    if chi > crit {
        return Err(format!("{what}: chi-square {chi:.1} > {crit:.1} (df {df}), max |freq - p| {max_dev:.3}").into());
    }
    Ok(format!("{what}: n={n} chi2={chi:.1}/{crit:.1} df={df} max|f-p|={max_dev:.3} near-ties={excused}"))
}

async fn check_argmax(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(21);
    // (V, planted (index, value) list); the expected answer is the first index of the max.
    let cases: Vec<(usize, Vec<(usize, f32)>)> = vec![
        (1, vec![]),
        (7, vec![(6, 5.0), (2, 5.0)]),
        (7, vec![(0, -9.0), (1, -9.0), (2, -9.0), (3, -9.0), (4, -9.0), (5, -9.0), (6, -9.0)]),
        (577, vec![(576, 4.5)]),
        (577, vec![(301, 4.5), (300, 4.5), (576, 4.5)]),
        (102400, vec![(102399, 6.0)]),
        // Ties across chunk boundaries, and a runner-up one f32 ulp below the max.
        (102400, vec![(99999, 6.0), (50000, 6.0), (1024, 6.0), (7, 5.9999995)]),
        (102400, vec![(1023, 6.0), (0, 6.0)]),
    ];
    let step = Tensor::from_u32(gpu, &[1], &[0])?;
    let out = crate::check::poisoned(gpu, &[cases.len() + 1], DType::U32)?;
    let mut rec = Recorder::new(gpu);
    let mut want = Vec::new();
    let mut keep = Vec::new();
    for (i, (v, planted)) in cases.iter().enumerate() {
        let mut l = rng.vec(*v, -4.0, 4.0);
        for &(at, x) in planted {
            l[at] = x;
        }
        let t = Tensor::from_f32(gpu, &[*v], DType::F32, &l)?;
        argmax(&mut rec, &t, None, &step, &out, i)?;
        let lf: Vec<f64> = l.iter().map(|&x| x as f64).collect();
        want.push(sample_f64(&lf, &Sampling::default(), 0).token);
        keep.push((t, lf));
    }
    // The greedy route through `sample` (temperature 0) on the last case.
    sample(&mut rec, &keep[keep.len() - 1].0, &Sampling::default(), &step, None, &out, cases.len())?;
    want.push(want[want.len() - 1]);
    rec.finish()?.run(gpu).await?;
    let got = gpu.read_u32(&out).await?;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        if g != w {
            let v = cases.get(i).map_or(102400, |c| c.0);
            return Err(format!("argmax case {i} (V={v}): got {g}, expected {w}").into());
        }
    }
    Ok(format!("{} cases, V in {{1, 7, 577, 102400}}, ties resolved to the first index: exact", want.len()))
}

async fn check_repetition_penalty(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(22);
    let v = 577;
    let mut logits = rng.vec(v, -3.0, 3.0);
    logits[10] = 0.0;
    logits[11] = -0.0;
    let mut worst = 0.0f64;
    // History [40]: duplicates, ids at the ends, ids >= V; entries past `count` must be ignored.
    let mut hist: Vec<u32> = vec![0, 576, 10, 11, 5, 5, 5, 1000, u32::MAX, 300, 5, 576];
    while hist.len() < 30 {
        hist.push(rng.below(v as u32));
    }
    while hist.len() < 40 {
        hist.push(400 + hist.len() as u32); // never counted in the first case
    }
    for (penalty, count) in [(1.3f32, 30u32), (0.8, 30), (1.7, 1000)] {
        let lt = Tensor::from_f32(gpu, &[v], DType::F32, &logits)?;
        let ht = Tensor::from_u32(gpu, &[hist.len()], &hist)?;
        let ct = Tensor::from_u32(gpu, &[1], &[count])?;
        let work = crate::check::poisoned(gpu, &[v], DType::F32)?;
        let mut rec = Recorder::new(gpu);
        repetition_penalty(&mut rec, &lt, &History { ids: &ht, count: &ct }, penalty, &work)?;
        rec.finish()?.run(gpu).await?;
        let n = (count as usize).min(hist.len());
        let want = penalized_f64(&logits, &hist[..n], penalty as f64);
        // One f32 division or multiplication (WGSL allows 2.5 ulp for division).
        worst = worst.max(crate::check::compare(&format!("penalty {penalty} count {count}"), &gpu.read_f32(&work).await?, &want, crate::check::Tol { abs: 0.0, rel: 4e-7 })?);
        if gpu.read_f32(&lt).await? != logits {
            return Err("the logits tensor was modified".to_string().into());
        }
    }
    Ok(format!("V=577, penalties 1.3/0.8/1.7, duplicates and out-of-range ids: max abs err {worst:.1e}"))
}

async fn check_gumbel_sampling(gpu: &Gpu) -> CheckResult {
    let logits = [1.0f32, 0.5, -0.3, 2.0, 0.0, -1.0, 1.5, 0.2];
    let cfg = Sampling { temperature: 0.7, seed: 1234, ..Default::default() };
    if cfg.method() != Method::Gumbel {
        return Err("temperature-only sampling should use Gumbel-max".to_string().into());
    }
    let lt = Tensor::from_f32(gpu, &[logits.len()], DType::F32, &logits)?;
    // Steps in arbitrary order: the caller owns the counter.
    let steps: Vec<u32> = (0..2000u32).map(|i| i.wrapping_mul(7919) ^ 0x55).collect();
    let draws = replay_draws(gpu, &lt, &cfg, &steps).await?;
    let lf: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    let twins: Vec<TwinDraw> = steps.iter().map(|&s| sample_f64(&lf, &cfg, s)).collect();
    judge("Gumbel V=8 T=0.7 (one list, 2000 replays, step by write_u32)", &draws, &twins)
}

async fn check_top_k(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(23);
    let mut report = Vec::new();
    // Selection: exact candidate order (logits on a 1/16 grid, so ties are common) and the
    // full-vocabulary normaliser from the partials.
    for (v, k) in [(7usize, 5usize), (7, 256), (577, 33), (3000, 50), (102400, 256), (102400, 7)] {
        let l: Vec<f32> = rng.vec(v, -6.0, 6.0).iter().map(|x| (x * 16.0).round() / 16.0).collect();
        let t = 0.8f32;
        let lt = Tensor::from_f32(gpu, &[v], DType::F32, &l)?;
        let mut rec = Recorder::new(gpu);
        let c = top_k(&mut rec, &lt, k, t)?;
        rec.finish()?.run(gpu).await?;
        let pairs = gpu.read_u32(&c.pairs).await?;
        let lf: Vec<f64> = l.iter().map(|&x| x as f64).collect();
        let o = order(&lf);
        for i in 0..c.n_cand {
            let (val, id) = (f32::from_bits(pairs[2 * i]), pairs[2 * i + 1]);
            if id != o[i] || val != l[o[i] as usize] {
                return Err(format!("top-{k} of V={v}: candidate {i} = ({val}, {id}), expected ({}, {})", l[o[i] as usize], o[i]).into());
            }
        }
        let part = gpu.read_f32(&c.partials).await?;
        let m = lf[o[0] as usize];
        let z_gpu: f64 = (0..c.n_chunks).map(|i| part[2 * i + 1] as f64 * ((part[2 * i] as f64 - m) / t as f64).exp()).sum();
        let z: f64 = lf.iter().map(|&x| ((x - m) / t as f64).exp()).sum();
        let rel = (z_gpu - z).abs() / z;
        // f32 sums of up to 1024 terms per chunk: a few 1e-7 relative, 1e-5 leaves room.
        if rel > 1e-5 {
            return Err(format!("top-{k} of V={v}: normaliser {z_gpu} vs f64 {z} (rel {rel:.1e})").into());
        }
        report.push(format!("V={v}/k={k}:{} stages,Z rel {rel:.1e}", c.stages));
    }
    // Sampling: never outside the top k, frequencies of the renormalised distribution.
    let l = rng.vec(40, -2.0, 2.0);
    let cfg = Sampling { temperature: 0.8, top_k: 5, seed: 77, ..Default::default() };
    let lt = Tensor::from_f32(gpu, &[40], DType::F32, &l)?;
    let steps: Vec<u32> = (0..2000).collect();
    let draws = replay_draws(gpu, &lt, &cfg, &steps).await?;
    let lf: Vec<f64> = l.iter().map(|&x| x as f64).collect();
    let twins: Vec<TwinDraw> = steps.iter().map(|&s| sample_f64(&lf, &cfg, s)).collect();
    report.push(judge("top-k=5 V=40 T=0.8", &draws, &twins)?);
    Ok(report.join("; "))
}

async fn check_top_p(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(24);
    let mut report = Vec::new();
    let l = rng.vec(40, -2.0, 2.5);
    let lf: Vec<f64> = l.iter().map(|&x| x as f64).collect();
    let lt = Tensor::from_f32(gpu, &[40], DType::F32, &l)?;
    // Top-p alone (256 candidates cover V = 40), then top-k + top-p with both normalisers:
    // the nuclei differ between them, so a wrong normaliser fails the support test.
    let alone = Sampling { temperature: 1.0, top_p: 0.6, seed: 5, ..Default::default() };
    let full = Sampling { temperature: 0.9, top_k: 10, top_p: 0.5, seed: 6, ..Default::default() };
    let within = Sampling { top_p_within_top_k: true, ..full };
    let nucleus = |c: &Sampling| sample_f64(&lf, c, 0).dist.len();
    if nucleus(&full) == nucleus(&within) {
        return Err(format!("test logits give the same nucleus ({}) under both normalisers", nucleus(&full)).into());
    }
    for (name, cfg, n) in [("top-p=0.6", alone, 1500u32), ("top-k=10+top-p=0.5 true probs", full, 500), ("top-k=10+top-p=0.5 within top-k", within, 500)] {
        let steps: Vec<u32> = (0..n).map(|i| i * 3 + 11).collect();
        let draws = replay_draws(gpu, &lt, &cfg, &steps).await?;
        let twins: Vec<TwinDraw> = steps.iter().map(|&s| sample_f64(&lf, &cfg, s)).collect();
        report.push(format!("{} (nucleus {})", judge(&format!("{name} V=40"), &draws, &twins)?, twins[0].dist.len()));
    }
    // A nucleus wider than the cap: near-flat logits over V = 1000, top-p 0.95 alone keeps the
    // best 256 candidates.
    let flat = rng.vec(1000, -0.05, 0.05);
    let ff: Vec<f64> = flat.iter().map(|&x| x as f64).collect();
    let cfg = Sampling { temperature: 1.0, top_p: 0.95, seed: 9, ..Default::default() };
    let ft = Tensor::from_f32(gpu, &[1000], DType::F32, &flat)?;
    let steps: Vec<u32> = (0..200).collect();
    let draws = replay_draws(gpu, &ft, &cfg, &steps).await?;
    let o = order(&ff);
    for (i, d) in draws.iter().enumerate() {
        if !o[..MAX_TOP_K].contains(d) {
            return Err(format!("capped top-p: draw {i} = {d} is not among the 256 best").into());
        }
        let tw = sample_f64(&ff, &cfg, steps[i]);
        if *d != tw.token && tw.margin >= 1e-4 {
            return Err(format!("capped top-p: draw {i} = {d}, twin {}", tw.token).into());
        }
    }
    report.push("capped top-p (V=1000, p=0.95): 200 draws within the best 256, as the twin".into());
    Ok(report.join("; "))
}

async fn check_decode_replay(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(25);
    let v = 577;
    let logits = rng.normals(v, 2.0);
    let lt = Tensor::from_f32(gpu, &[v], DType::F32, &logits)?;
    let prompt: Vec<u32> = vec![3, 9, 3, 200, 576, 41];
    let mut report = Vec::new();
    for cfg in [
        Sampling { temperature: 0.9, repetition_penalty: 1.5, seed: 42, ..Default::default() },
        Sampling { temperature: 0.8, top_k: 20, top_p: 0.9, repetition_penalty: 1.3, seed: 43, ..Default::default() },
        Sampling { repetition_penalty: 2.0, ..Default::default() },
    ] {
        let steps = 40usize;
        let cap = 64;
        let mut h0 = prompt.clone();
        h0.resize(cap, 0);
        let hist = Tensor::from_u32(gpu, &[cap], &h0)?;
        let count = Tensor::from_u32(gpu, &[1], &[prompt.len() as u32])?;
        let step = Tensor::from_u32(gpu, &[1], &[0])?;
        let token = Tensor::from_u32(gpu, &[1], &[u32::MAX])?;
        let h = History { ids: &hist, count: &count };
        // Recorded once; each replay penalises with the history so far, samples with the
        // current step, appends the token and bumps the step, all on the GPU.
        let mut rec = Recorder::new(gpu);
        sample(&mut rec, &lt, &cfg, &step, Some(&h), &token, 0)?;
        advance(&mut rec, &token, 0, &h, &step, true)?;
        let list = rec.finish()?;
        for _ in 0..steps {
            list.run(gpu).await?;
        }
        let got = gpu.read_u32(&hist).await?;
        let (n, s) = (gpu.read_u32(&count).await?[0], gpu.read_u32(&step).await?[0]);
        if n as usize != prompt.len() + steps || s as usize != steps {
            return Err(format!("{:?}: count {n}, step {s} after {steps} replays", cfg.method()).into());
        }
        let mut twin_hist = prompt.clone();
        for i in 0..steps {
            let pen = penalized_f64(&logits, &twin_hist, cfg.repetition_penalty as f64);
            let tw = sample_f64(&pen, &cfg, i as u32);
            let g = got[prompt.len() + i];
            if g != tw.token {
                if tw.margin < 1e-4 {
                    break; // a near-tie flipped by rounding: the histories diverge from here
                }
                return Err(format!("{:?}: step {i} drew {g}, the twin {} (margin {:.1e})", cfg.method(), tw.token, tw.margin).into());
            }
            twin_hist.push(g);
        }
        let distinct = got[prompt.len()..prompt.len() + steps].iter().collect::<std::collections::HashSet<_>>().len();
        report.push(format!("{:?}: {steps} steps as the twin ({distinct} distinct tokens)", cfg.method()));
    }
    Ok(report.join("; "))
}

crate::checks!(check_argmax, check_repetition_penalty, check_gumbel_sampling, check_top_k, check_top_p, check_decode_replay);
