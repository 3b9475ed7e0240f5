//! Scaled dot-product attention with an online softmax (flash-style): bidirectional for the
//! vision tower, causal over a KV cache for the decoder. q, k, v and the output are row views,
//! so q/k/v can be column slices of one fused qkv projection and k/v can be a cache.

use super::{act_flags, shape_err, Rows};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::{Error, Result};
use crate::gpu::{Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(AttnParams("AttnParams") {
    m: u32, heads: u32, kv_heads: u32, causal: u32, q_off: u32, q_stride: u32, k_off4: u32, k_stride4: u32,
    v_off4: u32, v_stride4: u32, o_off: u32, o_stride: u32, scale: f32, splits: u32, split_len: u32, _pad: u32,
});

const BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite];
const ATTN: Kernel = Kernel { shader: "attention", entry: "attention", binds: BINDS };
const COMBINE: Kernel = Kernel { shader: "attention", entry: "attn_combine", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite] };
/// Keys per tile of the kernel; a split is a whole number of tiles.
const TILE: usize = 64;
/// Workgroups worth filling a large GPU with: fewer (row, head) pairs than this get their keys split.
const TARGET_WORKGROUPS: usize = 512;

pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for hd in ["HD32", "HD64", "HD128"] {
        for f16 in [false, true] {
            let base: Vec<&str> = if f16 { vec![hd, "F16"] } else { vec![hd] };
            v.push(PipelineKey::new(ATTN, &base, &[]));
            let mut split = base.clone();
            split.push("SPLIT");
            v.push(PipelineKey::new(ATTN, &split, &[]));
            let mut comb = base.clone();
            comb.push("COMBINE");
            v.push(PipelineKey::new(COMBINE, &comb, &[]));
        }
    }
    v
}

#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub causal: bool,
}

/// Key splits for `rows` query rows over at most `kv_rows` keys: one unless the (row, head)
/// pairs alone leave the GPU idle (decode). Returns (splits, keys per split).
fn split_plan(rows: usize, heads: usize, kv_rows: usize) -> (usize, usize) {
    let tiles = kv_rows.div_ceil(TILE).max(1);
    let splits = TARGET_WORKGROUPS.div_ceil(rows * heads).clamp(1, tiles);
    (splits, tiles.div_ceil(splits) * TILE)
}

/// o = softmax(q k^T * scale [+ causal mask]) v per head. `k` and `v` hold every key row the
/// kernel may read (a KV cache's capacity); `seq` = [position of q's first row, valid keys].
pub fn attention(rec: &mut Recorder, q: &Rows, k: &Rows, v: &Rows, o: &Rows, s: AttnShape, seq: &Tensor) -> Result<()> {
    let op = "attention";
    for r in [q, k, v, o] {
        r.check(op)?;
    }
    let hd_flag = match s.head_dim {
        32 => "HD32",
        64 => "HD64",
        128 => "HD128",
        d => return Err(shape_err(op, format!("head dim {d} (supported: 32, 64, 128)"))),
    };
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(shape_err(op, format!("{} heads not divisible into {} kv heads", s.heads, s.kv_heads)));
    }
    if q.cols != s.heads * s.head_dim || o.cols != q.cols || o.rows != q.rows {
        return Err(shape_err(op, format!("q {}x{} / o {}x{} for {} heads of {}", q.rows, q.cols, o.rows, o.cols, s.heads, s.head_dim)));
    }
    if k.cols != s.kv_heads * s.head_dim || v.cols != k.cols || v.rows != k.rows {
        return Err(shape_err(op, format!("k {}x{} / v {}x{} for {} kv heads", k.rows, k.cols, v.rows, v.cols, s.kv_heads)));
    }
    // K and V are read as vec4s.
    if [k.off, k.stride, v.off, v.stride].iter().any(|x| x % 4 != 0) {
        return Err(shape_err(op, "k and v views must start and stride at multiples of 4 elements".into()));
    }
    if seq.dtype() != DType::U32 || seq.len() < 2 {
        return Err(shape_err(op, "seq must be u32 [2]: [query position, kv length]".into()));
    }
    let dt = q.t.dtype();
    if [k.t, v.t, o.t].iter().any(|t| t.dtype() != dt) {
        return Err(Error::DType { op, dtype: dt.name().into(), detail: "q, k, v and o must share a dtype".into() });
    }
    if [q.t, k.t, v.t].iter().any(|t| t.same_buffer(o.t)) {
        return Err(shape_err(op, "output shares a buffer with an input".into()));
    }
    if q.rows == 0 {
        return Ok(());
    }
    let (splits, split_len) = split_plan(q.rows, s.heads, k.rows);
    let params = AttnParams {
        m: q.rows as u32,
        heads: s.heads as u32,
        kv_heads: s.kv_heads as u32,
        causal: s.causal as u32,
        q_off: q.off as u32,
        q_stride: q.stride as u32,
        k_off4: (k.off / 4) as u32,
        k_stride4: (k.stride / 4) as u32,
        v_off4: (v.off / 4) as u32,
        v_stride4: (v.stride / 4) as u32,
        o_off: o.off as u32,
        o_stride: o.stride as u32,
        scale: s.scale,
        splits: splits as u32,
        split_len: split_len as u32,
        _pad: 0,
    };
    let mut flags = act_flags(op, dt)?.to_vec();
    flags.push(hd_flag);
    let wg = [q.rows as u32, s.heads as u32, splits as u32];
    if splits == 1 {
        return rec.dispatch(&PipelineKey::new(ATTN, &flags, &[]), &params, &[seq, q.t, k.t, v.t, o.t], wg);
    }
    let part = Tensor::empty(rec.gpu, &[q.rows * s.heads * splits * (s.head_dim + 2)], DType::F32)?;
    let mut split = flags.clone();
    split.push("SPLIT");
    rec.dispatch(&PipelineKey::new(ATTN, &split, &[]), &params, &[seq, q.t, k.t, v.t, &part], wg)?;
    flags.push("COMBINE");
    rec.dispatch(&PipelineKey::new(COMBINE, &flags, &[]), &params, &[seq, &part, o.t], [q.rows as u32, s.heads as u32, 1])
}

#[allow(clippy::too_many_arguments)]
pub fn reference(q: &[f32], k: &[f32], v: &[f32], m: usize, kv_len: usize, s: AttnShape, q0: usize) -> Vec<f64> {
    let (h_n, d) = (s.heads, s.head_dim);
    let kvw = s.kv_heads * d;
    let group = s.heads / s.kv_heads;
    let mut o = vec![0.0; m * h_n * d];
    for i in 0..m {
        for h in 0..h_n {
            let kh = h / group;
            let limit = if s.causal { (q0 + i + 1).min(kv_len) } else { kv_len };
            let scores: Vec<f64> = (0..limit)
                .map(|j| (0..d).map(|c| q[i * h_n * d + h * d + c] as f64 * k[j * kvw + kh * d + c] as f64).sum::<f64>() * s.scale as f64)
                .collect();
            let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|x| (x - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..d {
                o[i * h_n * d + h * d + c] = (0..limit).map(|j| e[j] * v[j * kvw + kh * d + c] as f64).sum::<f64>() / z;
            }
        }
    }
    o
}

/// Bidirectional, ViT-like: q, k, v as column slices of one fused qkv tensor.
async fn check_attention_vit(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(40);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        for (n, heads, d) in [(1, 1, 64), (7, 2, 64), (77, 3, 64), (33, 2, 128), (20, 3, 32)] {
            let w = heads * d;
            let qkv = check::round_to(dt, &rng.normals(n * 3 * w, 1.0));
            let t = Tensor::from_f32(gpu, &[n, 3 * w], dt, &qkv)?;
            let o = poisoned(gpu, &[n, w], dt)?;
            let seq = Tensor::from_u32(gpu, &[2], &[0, n as u32])?;
            let s = AttnShape { heads, kv_heads: heads, head_dim: d, scale: (d as f32).powf(-0.5), causal: false };
            let mut rec = Recorder::new(gpu);
            attention(&mut rec, &Rows::cols(&t, 0, w), &Rows::cols(&t, w, w), &Rows::cols(&t, 2 * w, w), &Rows::all(&o), s, &seq)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&o).await?;
            let split = |c0: usize| -> Vec<f32> { (0..n * w).map(|i| qkv[(i / w) * 3 * w + c0 + i % w]).collect() };
            let want = reference(&split(0), &split(w), &split(2 * w), n, n, s, 0);
            let tol = if dt == DType::F16 { Tol { abs: 3e-3, rel: 3e-3 } } else { Tol { abs: 2e-6, rel: 2e-5 } };
            worst = worst.max(compare(&format!("attention vit {dt} n={n} h={heads} d={d}"), &got, &want, tol)?);
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// Causal over a KV cache with spare capacity: prefill of a block at an offset, GQA, and a
/// decode step replayed at successive positions by rewriting `seq` only.
async fn check_attention_causal(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(41);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        // (new rows m, past, heads, kv_heads, d)
        for (m, past, heads, kvh, d) in [(1, 0, 1, 1, 128), (9, 0, 2, 2, 128), (70, 5, 4, 2, 64), (5, 130, 2, 1, 128), (12, 3, 1, 1, 32)] {
            let cap = past + m + 11;
            let (qw, kw) = (heads * d, kvh * d);
            let q = check::round_to(dt, &rng.normals(m * qw, 1.0));
            let k = check::round_to(dt, &rng.normals(cap * kw, 1.0));
            let v = check::round_to(dt, &rng.normals(cap * kw, 1.0));
            let (qt, kt, vt) = (Tensor::from_f32(gpu, &[m, qw], dt, &q)?, Tensor::from_f32(gpu, &[cap, kw], dt, &k)?, Tensor::from_f32(gpu, &[cap, kw], dt, &v)?);
            let o = poisoned(gpu, &[m, qw], dt)?;
            let kv_len = past + m;
            let seq = Tensor::from_u32(gpu, &[2], &[past as u32, kv_len as u32])?;
            let s = AttnShape { heads, kv_heads: kvh, head_dim: d, scale: (d as f32).powf(-0.5), causal: true };
            let mut rec = Recorder::new(gpu);
            attention(&mut rec, &Rows::all(&qt), &Rows::all(&kt), &Rows::all(&vt), &Rows::all(&o), s, &seq)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&o).await?;
            let want = reference(&q, &k, &v, m, kv_len, s, past);
            let tol = if dt == DType::F16 { Tol { abs: 3e-3, rel: 3e-3 } } else { Tol { abs: 2e-6, rel: 2e-5 } };
            worst = worst.max(compare(&format!("attention causal {dt} m={m} past={past} h={heads}/{kvh} d={d}"), &got, &want, tol)?);
        }
    }
    // Decode: one list, replayed with the kv length growing (several key splits at cap 300).
    let (heads, d, cap) = (2, 128, 300);
    let q = rng.normals(heads * d, 1.0);
    let k = rng.normals(cap * heads * d, 1.0);
    let v = rng.normals(cap * heads * d, 1.0);
    let (qt, kt, vt) = (Tensor::from_f32(gpu, &[1, heads * d], DType::F32, &q)?, Tensor::from_f32(gpu, &[cap, heads * d], DType::F32, &k)?, Tensor::from_f32(gpu, &[cap, heads * d], DType::F32, &v)?);
    let o = poisoned(gpu, &[1, heads * d], DType::F32)?;
    let seq = Tensor::from_u32(gpu, &[2], &[0, 1])?;
    let s = AttnShape { heads, kv_heads: heads, head_dim: d, scale: 0.1, causal: true };
    let mut rec = Recorder::new(gpu);
    attention(&mut rec, &Rows::all(&qt), &Rows::all(&kt), &Rows::all(&vt), &Rows::all(&o), s, &seq)?;
    let list = rec.finish()?;
    for pos in [0usize, 1, 16, 63, 64, 65, 200, 299] {
        seq.write_u32(gpu, &[pos as u32, pos as u32 + 1])?;
        list.run(gpu).await?;
        let got = gpu.read_f32(&o).await?;
        let want = reference(&q, &k, &v, 1, pos + 1, s, pos);
        worst = worst.max(compare(&format!("attention decode replay @{pos}"), &got, &want, Tol { abs: 2e-6, rel: 2e-5 })?);
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_attention_vit, check_attention_causal);
