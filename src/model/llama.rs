//! The DeepSeek-LLM (Llama) decoder over a KV cache, recorded as dispatches. The same recording
//! serves prefill (m new tokens) and decode (m = 1): positions come from `seq` on the GPU, so a
//! recorded step is replayed at every position by rewriting `seq` only.

use super::config::LlmConfig;
use super::siglip::apply;
use super::weights::LlmWeights;
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::ops::attention::{attention, AttnShape};
use crate::ops::matmul::{rms_linear, rms_linear_glu, rms_linear_rope_kv, Act, Epilogue};
use crate::ops::rope::{inv_freq, RopeKv};
use crate::ops::Rows;

/// Per layer, rows [capacity, 2 * kv_heads * head_dim]: a position's keys then its values, so
/// one dispatch appends both straight from the fused q|k|v projection.
pub struct KvCache {
    pub kv: Vec<Tensor>,
    pub capacity: usize,
}

impl KvCache {
    pub fn new(gpu: &Gpu, cfg: &LlmConfig, capacity: usize, act: DType) -> Result<KvCache> {
        let kvw = cfg.kv_heads * cfg.head_dim;
        let kv = (0..cfg.layers).map(|_| Tensor::empty_exact(gpu, &[capacity.max(1), 2 * kvw], act)).collect::<Result<_>>()?;
        Ok(KvCache { kv, capacity })
    }
}

/// Host-side constants of the decoder (RoPE's inverse frequencies).
pub struct LlmConsts {
    pub inv_freq: Tensor,
}

impl LlmConsts {
    pub fn new(gpu: &Gpu, cfg: &LlmConfig) -> Result<LlmConsts> {
        let inv = inv_freq(cfg.head_dim, cfg.rope_theta as f32);
        Ok(LlmConsts { inv_freq: Tensor::from_f32(gpu, &[inv.len()], DType::F32, &inv)? })
    }
}

/// Which rows get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitRows {
    Last,
    All,
    /// None (a prefill chunk before the last): only the cache is filled.
    None,
}

/// Rows of one prefill pass whose widest activation still fits one binding: a multiple of 8
/// (so row views stay aligned) unless even 8 rows do not fit.
pub fn max_pass_rows(gpu: &Gpu, cfg: &LlmConfig, act: DType) -> usize {
    let width = cfg.hidden.max(cfg.heads * cfg.head_dim + 2 * cfg.kv_heads * cfg.head_dim).max(2 * cfg.intermediate);
    let rows = (gpu.caps.max_binding / (width * act.size()) as u64).max(1) as usize;
    if rows >= 8 { rows / 8 * 8 } else { rows }
}

/// Records the decoder over `x` ([m, hidden] input embeddings, overwritten: it is the residual
/// stream) for m tokens at positions `seq[0]..seq[0] + m`, filling those cache rows, and writes
/// logits ([1 or m, vocab]) into `logits`. `seq` = u32 [past, past + m], set by the caller before
/// each run; the caller keeps past + m within the cache (rows beyond it are dropped).
#[allow(clippy::too_many_arguments)]
pub fn record_decoder(rec: &mut Recorder, cfg: &LlmConfig, w: &LlmWeights, c: &LlmConsts, cache: &KvCache, x: &Tensor, seq: &Tensor, rows: LogitRows, logits: &Tensor) -> Result<()> {
    let g = rec.gpu;
    let act = x.dtype();
    let m = x.shape()[0];
    if m > cache.capacity {
        return Err(Error::Invalid(format!("{m} tokens exceed the KV cache of {}", cache.capacity)));
    }
    let (hid, kvw, hd) = (cfg.hidden, cfg.kv_heads * cfg.head_dim, cfg.head_dim);
    let eps = cfg.rms_eps as f32;
    let qw = cfg.heads * hd;
    let inter = cfg.intermediate;
    let h = Tensor::empty(g, &[m, hid], act)?;
    let qkv = Tensor::empty(g, &[m, qw + 2 * kvw], act)?;
    let a = Tensor::empty(g, &[m, qw], act)?;
    let gate_up = Tensor::empty(g, &[m, 2 * inter], act)?;
    let s = Tensor::empty(g, &[m, inter], act)?;
    let shape = AttnShape { heads: cfg.heads, kv_heads: cfg.kv_heads, head_dim: hd, scale: (hd as f32).powf(-0.5), causal: true };
    let (xr, hr) = (Rows::all(x), Rows::all(&h));
    for (l, lw) in w.layers.iter().enumerate() {
        let kv = &cache.kv[l];
        // x += o(attn(rope(q), rope(k), v)) over norm(x); k and v are appended to the cache.
        // q's and k's heads are adjacent: one rotation over both, appending k | v to the cache
        // (in the product's own dispatch for decode rows).
        let rope = RopeKv { q_heads: cfg.heads, kv_heads: cfg.kv_heads, dim: hd, inv_freq: &c.inv_freq, seq, cache: kv };
        rms_linear_rope_kv(rec, &xr, &lw.input_norm, eps, &lw.qkv.w, &Rows::all(&qkv), &rope, &hr)?;
        attention(rec, &Rows::cols(&qkv, 0, qw), &Rows::cols(kv, 0, kvw), &Rows::cols(kv, kvw, kvw), &Rows::all(&a), shape, seq)?;
        apply(rec, &lw.o, &Rows::all(&a), Act::None, true, &xr)?;
        // x += down(silu(gate(h)) * up(h)), h = norm(x): one GEMV for decode rows.
        rms_linear_glu(rec, &xr, &lw.post_norm, eps, &lw.gate_up.w, &Rows::all(&s), &hr, &Rows::all(&gate_up))?;
        apply(rec, &lw.down, &Rows::all(&s), Act::None, true, &xr)?;
    }
    let (r0, n) = match rows {
        LogitRows::Last => (m - 1, 1),
        LogitRows::All => (0, m),
        LogitRows::None => return Ok(()),
    };
    if logits.shape() != [n, cfg.vocab] {
        return Err(Error::Shape { op: "decoder", detail: format!("logits {:?}, expected [{n}, {}]", logits.shape(), cfg.vocab) });
    }
    let hn = Tensor::empty(g, &[n, hid], act)?;
    rms_linear(rec, &xr.rows(r0, n), &w.norm, eps, &w.lm_head, Epilogue::default(), &Rows::all(logits), &Rows::all(&hn))
}


