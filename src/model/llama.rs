//! The DeepSeek-LLM (Llama) decoder over a KV cache, recorded as dispatches. The same recording
//! serves prefill (m new tokens) and decode (m = 1): positions come from `seq` on the GPU, so a
//! recorded step is replayed at every position by rewriting `seq` only.

use super::config::LlmConfig;
use super::siglip::apply;
use super::weights::LlmWeights;
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::ops::attention::{attention, AttnShape};
use crate::ops::elementwise::{binary, Binary};
use crate::ops::kv::kv_write;
use crate::ops::matmul::Act;
use crate::ops::norm::rmsnorm;
use crate::ops::rope::{inv_freq, rope};
use crate::ops::Rows;

/// Per-layer key and value rows [capacity, kv_heads * head_dim].
pub struct KvCache {
    pub k: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub capacity: usize,
}

impl KvCache {
    pub fn new(gpu: &Gpu, cfg: &LlmConfig, capacity: usize, act: DType) -> Result<KvCache> {
        let kvw = cfg.kv_heads * cfg.head_dim;
        let alloc = || Tensor::empty_exact(gpu, &[capacity.max(1), kvw], act);
        let mut k = Vec::with_capacity(cfg.layers);
        let mut v = Vec::with_capacity(cfg.layers);
        for _ in 0..cfg.layers {
            k.push(alloc()?);
            v.push(alloc()?);
        }
        Ok(KvCache { k, v, capacity })
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
    let h = Tensor::empty(g, &[m, hid], act)?;
    let q = Tensor::empty(g, &[m, cfg.heads * hd], act)?;
    let a = Tensor::empty(g, &[m, cfg.heads * hd], act)?;
    let gate = Tensor::empty(g, &[m, cfg.intermediate], act)?;
    let up = Tensor::empty(g, &[m, cfg.intermediate], act)?;
    let s = Tensor::empty(g, &[m, cfg.intermediate], act)?;
    let k_new = Tensor::empty(g, &[m, kvw], act)?;
    let v_new = Tensor::empty(g, &[m, kvw], act)?;
    let shape = AttnShape { heads: cfg.heads, kv_heads: cfg.kv_heads, head_dim: hd, scale: (hd as f32).powf(-0.5), causal: true };
    let (xr, hr) = (Rows::all(x), Rows::all(&h));
    for (l, lw) in w.layers.iter().enumerate() {
        let (kc, vc) = (&cache.k[l], &cache.v[l]);
        // x += o(attn(rope(q), rope(k), v)) over norm(x); k and v are appended to the cache.
        rmsnorm(rec, &xr, &lw.input_norm, eps, &hr)?;
        apply(rec, &lw.q, &hr, Act::None, false, &Rows::all(&q))?;
        apply(rec, &lw.k, &hr, Act::None, false, &Rows::all(&k_new))?;
        apply(rec, &lw.v, &hr, Act::None, false, &Rows::all(&v_new))?;
        rope(rec, &Rows::all(&q), cfg.heads, hd, &c.inv_freq, seq)?;
        rope(rec, &Rows::all(&k_new), cfg.kv_heads, hd, &c.inv_freq, seq)?;
        kv_write(rec, &k_new, seq, kc)?;
        kv_write(rec, &v_new, seq, vc)?;
        attention(rec, &Rows::all(&q), &Rows::all(kc), &Rows::all(vc), &Rows::all(&a), shape, seq)?;
        apply(rec, &lw.o, &Rows::all(&a), Act::None, true, &xr)?;
        // x += down(silu(gate(h)) * up(h)), h = norm(x)
        rmsnorm(rec, &xr, &lw.post_norm, eps, &hr)?;
        apply(rec, &lw.gate, &hr, Act::None, false, &Rows::all(&gate))?;
        apply(rec, &lw.up, &hr, Act::None, false, &Rows::all(&up))?;
        binary(rec, Binary::SiluMul, &Rows::all(&gate), &Rows::all(&up), &Rows::all(&s))?;
        apply(rec, &lw.down, &Rows::all(&s), Act::None, true, &xr)?;
    }
    let (r0, n) = match rows {
        LogitRows::Last => (m - 1, 1),
        LogitRows::All => (0, m),
    };
    if logits.shape() != [n, cfg.vocab] {
        return Err(Error::Shape { op: "decoder", detail: format!("logits {:?}, expected [{n}, {}]", logits.shape(), cfg.vocab) });
    }
    let hn = Tensor::empty(g, &[n, hid], act)?;
    rmsnorm(rec, &xr.rows(r0, n), &w.norm, eps, &Rows::all(&hn))?;
    crate::ops::matmul::linear(rec, &Rows::all(&hn), &w.lm_head, Default::default(), &Rows::all(logits))
}


