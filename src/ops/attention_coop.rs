//! Attention on tensor cores (`shaders/attention_coop.wgsl`): the vision tower's bidirectional
//! attention and the prefill's causal attention over the KV cache, where the adapter has
//! cooperative matrices, f16 and 32-wide subgroups. Two passes over the keys (the shader's
//! header says why); the tiled kernels in `attention` stay the portable path.

use super::attention::{reference, AttnShape, CausalCase};
use super::{u32_of, Rows};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(AttnCoopParams("AttnCoopParams") {
    heads: u32, kv_heads: u32, rows: u32, kcap: u32, q_off: u32, q_stride: u32, k_off: u32, k_stride: u32,
    v_off: u32, v_stride: u32, o_off: u32, o_stride: u32, scale: f32, causal: u32, _pad0: u32, _pad1: u32,
});

const KERNEL: Kernel =
    Kernel { shader: "attention_coop", entry: "attn_coop", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite] };
/// Query rows per workgroup and keys per tile (the shader's block and KT).
const ROWS: usize = 16;
const KEYS: usize = 32;

pub fn variants() -> Vec<PipelineKey> {
    ["HD64", "HD128"].iter().map(|f| PipelineKey::new(KERNEL, &[*f], &[])).collect()
}

/// Whether the adapter can run the kernel at all: cooperative 16x16 f16 matrices, f16 and
/// subgroups of exactly 32 (the softmax maps lanes to rows), or those matrices emulated (which
/// derive lanes from the local index). `DSVL_COOP_ATTN=0` turns it off.
pub fn available(gpu: &Gpu) -> bool {
    let c = &gpu.caps;
    c.coop16 && c.f16 && (c.coop_emulated || (c.subgroups && c.subgroup_min == 32 && c.subgroup_max == 32)) && std::env::var("DSVL_COOP_ATTN").map_or(true, |v| v != "0")
}

/// Whether the kernel takes these (already checked) views: f16, head dim 64 or 128, at least a
/// block of rows and a tile of loadable keys, and every matrix row 16-byte aligned.
pub fn fits(gpu: &Gpu, q: &Rows, k: &Rows, v: &Rows, s: AttnShape) -> bool {
    available(gpu)
        && q.t.dtype() == DType::F16
        && matches!(s.head_dim, 64 | 128)
        && q.rows >= ROWS
        && k.rows >= KEYS
        && [q.off, q.stride, k.off, k.stride, v.off, v.stride].iter().all(|x| x % 8 == 0)
}

/// Records the attention of q's rows over k/v's first `seq[1]` rows (causal: query i at position
/// seq[0] + i sees keys up to there). The caller has checked the views' shapes and dtypes;
/// views `fits` refuses are an error.
pub fn record(rec: &mut Recorder, q: &Rows, k: &Rows, v: &Rows, o: &Rows, s: AttnShape, seq: &Tensor) -> Result<()> {
    let op = "attention";
    // The kernel shifts its last block and tile back inside the views: they must hold one each.
    if !fits(rec.gpu, q, k, v, s) {
        return Err(super::shape_err(op, format!("the tensor-core attention does not take {} rows over {} keys of head dim {}", q.rows, k.rows, s.head_dim)));
    }
    let params = AttnCoopParams {
        heads: u32_of(op, s.heads)?,
        kv_heads: u32_of(op, s.kv_heads)?,
        rows: u32_of(op, q.rows)?,
        kcap: u32_of(op, k.rows)?,
        q_off: u32_of(op, q.off)?,
        q_stride: u32_of(op, q.stride)?,
        k_off: u32_of(op, k.off)?,
        k_stride: u32_of(op, k.stride)?,
        v_off: u32_of(op, v.off)?,
        v_stride: u32_of(op, v.stride)?,
        o_off: u32_of(op, o.off)?,
        o_stride: u32_of(op, o.stride)?,
        scale: s.scale,
        causal: s.causal as u32,
        ..Default::default()
    };
    let flag = if s.head_dim == 128 { "HD128" } else { "HD64" };
    let wg = [u32_of(op, q.rows.div_ceil(ROWS))?, u32_of(op, s.heads)?, 1];
    rec.dispatch(&PipelineKey::new(KERNEL, &[flag], &[]), &params, &[q.t, k.t, v.t, seq, o.t], wg)
}

/// Bidirectional (fused qkv views, rows not a multiple of 16, the fewest keys taken: 32) and causal over a cache with
/// spare capacity (prefill at an offset, GQA, a last key tile that must shift back).
async fn check_attention_coop(gpu: &Gpu) -> CheckResult {
    if !available(gpu) {
        return Ok("skipped: no cooperative matrices with 32-wide subgroups".into());
    }
    let mut rng = Rng::new(44);
    let mut worst = 0.0f64;
    let dt = DType::F16;
    let tol = Tol { abs: 3e-3, rel: 3e-3 };
    for (n, heads, d) in [(32, 1, 64), (77, 3, 64), (33, 2, 128), (200, 2, 64)] {
        let w = heads * d;
        let qkv = check::round_to(dt, &rng.normals(n * 3 * w, 1.0));
        let t = Tensor::from_f32(gpu, &[n, 3 * w], dt, &qkv)?;
        let o = poisoned(gpu, &[n, w], dt)?;
        let seq = Tensor::from_u32(gpu, &[2], &[0, n as u32])?;
        let s = AttnShape { heads, kv_heads: heads, head_dim: d, scale: (d as f32).powf(-0.5), causal: false };
        let (qv, kv, vv) = (Rows::cols(&t, 0, w), Rows::cols(&t, w, w), Rows::cols(&t, 2 * w, w));
        if !fits(gpu, &qv, &kv, &vv, s) {
            return Err(format!("attention coop: n={n} d={d} not taken").into());
        }
        let mut rec = Recorder::new(gpu);
        record(&mut rec, &qv, &kv, &vv, &Rows::all(&o), s, &seq)?;
        rec.finish()?.run(gpu).await?;
        let got = gpu.read_f32(&o).await?;
        let split = |c0: usize| -> Vec<f32> { (0..n * w).map(|i| qkv[(i / w) * 3 * w + c0 + i % w]).collect() };
        let want = reference(&split(0), &split(w), &split(2 * w), n, n, s, 0);
        worst = worst.max(compare(&format!("attention coop n={n} h={heads} d={d}"), &got, &want, tol)?);
    }
    // (new rows m, past, heads, kv_heads, d); the cache has 11 spare rows.
    for (m, past, heads, kvh, d) in [(16, 8, 2, 2, 128), (24, 0, 1, 1, 64), (70, 5, 4, 2, 64), (40, 130, 2, 1, 128)] {
        let c = CausalCase::new(gpu, &mut rng, dt, (m, past, heads, kvh, d))?;
        let (qv, kv, vv) = (Rows::all(&c.q.1), Rows::all(&c.k.1), Rows::all(&c.v.1));
        if !fits(gpu, &qv, &kv, &vv, c.shape) {
            return Err(format!("attention coop: causal m={m} past={past} d={d} not taken").into());
        }
        let mut rec = Recorder::new(gpu);
        record(&mut rec, &qv, &kv, &vv, &Rows::all(&c.o), c.shape, &c.seq)?;
        rec.finish()?.run(gpu).await?;
        let got = gpu.read_f32(&c.o).await?;
        let want = c.reference();
        worst = worst.max(compare(&format!("attention coop causal m={m} past={past} h={heads}/{kvh} d={d}"), &got, &want, tol)?);
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_attention_coop);
