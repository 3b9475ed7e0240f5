//! Rotary position embedding (rotate-half convention, as HF Llama), in place on a row view of
//! `heads` heads. The base position comes from a U32 storage tensor `seq` ([pos of row 0, ..]),
//! so a recorded decode step can be replayed at the next position without re-recording.

use super::{act_flags, shape_err, u32_of, Rows, WG};
use crate::check::{self, compare, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(RopeParams("RopeParams") { rows: u32, heads: u32, dim: u32, off: u32, stride: u32, kv_head0: u32, kv_w: u32, capacity: u32 });

const ROPE: Kernel = Kernel { shader: "rope", entry: "rope", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite] };
const ROPE_KV: Kernel = Kernel { shader: "rope", entry: "rope_kv", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite, Bind::ReadWrite] };

pub fn variants() -> Vec<PipelineKey> {
    vec![
        PipelineKey::new(ROPE, &[], &[]),
        PipelineKey::new(ROPE, &["F16"], &[]),
        PipelineKey::new(ROPE_KV, &["KV"], &[]),
        PipelineKey::new(ROPE_KV, &["F16", "KV"], &[]),
        PipelineKey::new(ROPE_KV, &["KV", "VEC4"], &[]),
        PipelineKey::new(ROPE_KV, &["F16", "KV", "VEC4"], &[]),
    ]
}

/// HF's inverse frequencies, in f32 as HF computes them: 1 / theta^(2i/dim) for i < dim/2.
pub fn inv_freq(dim: usize, theta: f32) -> Vec<f32> {
    (0..dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32)).collect()
}

/// Rotates `x` ([rows, heads*dim] view) in place; row r is at position `seq[0] + r`.
/// `inv_freq`: f32 [dim/2] from [`inv_freq`], uploaded once per model.
pub fn rope(rec: &mut Recorder, x: &Rows, heads: usize, dim: usize, inv_freq: &Tensor, seq: &Tensor) -> Result<()> {
    let op = "rope";
    x.check(op)?;
    if dim == 0 || !dim.is_multiple_of(2) || heads * dim != x.cols {
        return Err(shape_err(op, format!("{heads} heads of {dim} (even) must fill {} columns", x.cols)));
    }
    if seq.dtype() != DType::U32 || seq.is_empty() {
        return Err(shape_err(op, format!("seq must be a u32 tensor, got {:?} {}", seq.shape(), seq.dtype())));
    }
    if inv_freq.dtype() != DType::F32 || inv_freq.len() != dim / 2 {
        return Err(shape_err(op, format!("inv_freq {:?} {} for head dim {dim}", inv_freq.shape(), inv_freq.dtype())));
    }
    let pairs = u32_of(op, x.rows * heads * dim / 2)?;
    let params = RopeParams {
        rows: x.rows as u32,
        heads: heads as u32,
        dim: dim as u32,
        off: x.off as u32,
        stride: x.stride as u32,
        kv_head0: 0,
        kv_w: 0,
        capacity: 0,
    };
    let key = PipelineKey::new(ROPE, act_flags(op, x.t.dtype())?, &[]);
    rec.dispatch(&key, &params, &[seq, inv_freq, x.t], grid(pairs.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// What `rope_kv` takes besides the row: q's and kv's head counts, the head dim, the
/// frequencies, `seq` and the KV cache ([capacity, 2 * kv_heads * dim], k | v per row).
/// `matmul::rms_linear_rope_kv` fuses it into the q | k | v product.
#[derive(Clone, Copy)]
pub struct RopeKv<'a> {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
    pub inv_freq: &'a Tensor,
    pub seq: &'a Tensor,
    pub cache: &'a Tensor,
}

/// For a fused q | k | v row view (`q_heads` + `kv_heads` heads of `dim`, then the values):
/// rotates q and k in place and appends the rotated keys and the values to `cache` ([capacity,
/// 2 * kv_heads * dim], rows k | v) at row `seq[0] + r`: `rope` and the KV append in one dispatch.
pub fn rope_kv(rec: &mut Recorder, qkv: &Rows, r: &RopeKv) -> Result<()> {
    let op = "rope_kv";
    let RopeKv { q_heads, kv_heads, dim, inv_freq, seq, cache } = *r;
    qkv.check(op)?;
    let kvw = kv_heads * dim;
    let heads = q_heads + kv_heads;
    if dim == 0 || !dim.is_multiple_of(2) || heads * dim + kvw != qkv.cols {
        return Err(shape_err(op, format!("{q_heads}+{kv_heads} heads of {dim} (even) and values must fill {} columns", qkv.cols)));
    }
    let &[cap, ccols] = cache.shape() else {
        return Err(shape_err(op, format!("cache {:?} must be a matrix", cache.shape())));
    };
    if ccols != 2 * kvw || qkv.rows > cap {
        return Err(shape_err(op, format!("cache {:?} for {} rows of k | v {kvw} wide", cache.shape(), qkv.rows)));
    }
    if seq.dtype() != DType::U32 || seq.is_empty() || inv_freq.dtype() != DType::F32 || inv_freq.len() != dim / 2 {
        return Err(shape_err(op, format!("seq {:?} {} / inv_freq {:?} {} for head dim {dim}", seq.shape(), seq.dtype(), inv_freq.shape(), inv_freq.dtype())));
    }
    super::same_dtype(op, qkv.t.dtype(), &[cache])?;
    // Four pairs (and values) per invocation where every vector starts on a multiple of 4.
    let vec4 = (dim / 2).is_multiple_of(4) && qkv.off.is_multiple_of(4) && qkv.stride.is_multiple_of(4);
    let per = if vec4 { 4 } else { 1 };
    let threads = u32_of(op, qkv.rows * (heads * dim / 2 + kvw) / per)?;
    let params = RopeParams {
        rows: qkv.rows as u32,
        heads: heads as u32,
        dim: dim as u32,
        off: qkv.off as u32,
        stride: qkv.stride as u32,
        kv_head0: q_heads as u32,
        kv_w: kvw as u32,
        capacity: u32_of(op, cap)?,
    };
    let mut flags = act_flags(op, qkv.t.dtype())?.to_vec();
    flags.push("KV");
    if vec4 {
        flags.push("VEC4");
    }
    let key = PipelineKey::new(ROPE_KV, &flags, &[]);
    rec.dispatch(&key, &params, &[seq, inv_freq, qkv.t, cache], grid(threads.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// f64 reference on a [rows, heads*dim] row-major block; the angle is formed in f32 as HF
/// does (f32 inv_freq times f32 position), everything after in f64.
pub fn reference(x: &[f32], rows: usize, heads: usize, dim: usize, theta: f32, pos0: usize) -> Vec<f64> {
    let inv = inv_freq(dim, theta);
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let half = dim / 2;
    for r in 0..rows {
        for h in 0..heads {
            for i in 0..half {
                let ang = ((pos0 + r) as f32 * inv[i]) as f64;
                let b = r * heads * dim + h * dim;
                let (x1, x2) = (x[b + i] as f64, x[b + i + half] as f64);
                y[b + i] = x1 * ang.cos() - x2 * ang.sin();
                y[b + i + half] = x2 * ang.cos() + x1 * ang.sin();
            }
        }
    }
    y
}

async fn check_rope(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(30);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        // (rows, heads, dim, pos0): decode-like single rows at far positions, prefill blocks.
        for (rows, heads, dim, pos0) in [(1, 1, 2, 0), (7, 3, 64, 5), (33, 2, 128, 0), (1, 16, 128, 619), (3, 4, 128, 4000)] {
            let cols = heads * dim;
            let x = check::round_to(dt, &rng.normals(rows * cols, 1.0));
            let xt = Tensor::from_f32(gpu, &[rows, cols], dt, &x)?;
            let seq = Tensor::from_u32(gpu, &[2], &[pos0 as u32, 0])?;
            let inv = Tensor::from_f32(gpu, &[dim / 2], DType::F32, &inv_freq(dim, 10000.0))?;
            let mut rec = Recorder::new(gpu);
            rope(&mut rec, &Rows::all(&xt), heads, dim, &inv, &seq)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&xt).await?;
            let want = reference(&x, rows, heads, dim, 10000.0, pos0);
            let tol = if dt == DType::F16 { Tol { abs: 3e-3, rel: 2e-3 } } else { Tol { abs: 2e-6, rel: 1e-6 } };
            worst = worst.max(compare(&format!("rope {dt} {rows}x{heads}x{dim}@{pos0}"), &got, &want, tol)?);
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// rope_kv against the f64 rotation: q and k rotated in place, the cache rows at seq[0].. hold
/// the rotated keys and the values, other cache rows untouched.
async fn check_rope_kv(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(32);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        // Head dims with dim / 2 a multiple of 4 take the 4-pair path (VEC4); 12 the scalar one.
        for (rows, qh, kvh, dim, pos0, cap) in [(3, 2, 2, 64, 7, 9), (5, 4, 2, 32, 0, 8), (3, 2, 1, 128, 40, 44), (4, 2, 1, 12, 3, 6)] {
            let (qw, kvw) = (qh * dim, kvh * dim);
            let cols = qw + 2 * kvw;
            let x = check::round_to(dt, &rng.normals(rows * cols, 1.0));
            let init = check::round_to(dt, &rng.normals(cap * 2 * kvw, 1.0));
            let xt = Tensor::from_f32(gpu, &[rows, cols], dt, &x)?;
            let ct = Tensor::from_f32(gpu, &[cap, 2 * kvw], dt, &init)?;
            let seq = Tensor::from_u32(gpu, &[2], &[pos0 as u32, 0])?;
            let inv = Tensor::from_f32(gpu, &[dim / 2], DType::F32, &inv_freq(dim, 10000.0))?;
            let mut rec = Recorder::new(gpu);
            rope_kv(&mut rec, &Rows::all(&xt), &RopeKv { q_heads: qh, kv_heads: kvh, dim, inv_freq: &inv, seq: &seq, cache: &ct })?;
            rec.finish()?.run(gpu).await?;
            // The q and k heads rotated as one block of qh + kvh heads; values as they were.
            let qk: Vec<f32> = (0..rows * (qw + kvw)).map(|i| x[(i / (qw + kvw)) * cols + i % (qw + kvw)]).collect();
            let rot = reference(&qk, rows, qh + kvh, dim, 10000.0, pos0);
            let mut want_x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let mut want_c: Vec<f64> = init.iter().map(|&v| v as f64).collect();
            for r in 0..rows {
                for c in 0..qw + kvw {
                    want_x[r * cols + c] = rot[r * (qw + kvw) + c];
                }
                let row = pos0 + r;
                if row < cap {
                    for c in 0..kvw {
                        want_c[row * 2 * kvw + c] = rot[r * (qw + kvw) + qw + c];
                        want_c[row * 2 * kvw + kvw + c] = x[r * cols + qw + kvw + c] as f64;
                    }
                }
            }
            let tol = if dt == DType::F16 { Tol { abs: 3e-3, rel: 2e-3 } } else { Tol { abs: 2e-6, rel: 1e-6 } };
            let what = format!("rope_kv {dt} {rows} rows {qh}+{kvh}x{dim}@{pos0}");
            worst = worst.max(compare(&what, &gpu.read_f32(&xt).await?, &want_x, tol)?);
            worst = worst.max(compare(&format!("{what} cache"), &gpu.read_f32(&ct).await?, &want_c, tol)?);
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// A recorded step replayed at new positions by rewriting only the `seq` tensor.
async fn check_rope_replay(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(31);
    let (heads, dim) = (2, 64);
    let x = rng.normals(heads * dim, 1.0);
    let src = Tensor::from_f32(gpu, &[1, heads * dim], DType::F32, &x)?;
    let work = Tensor::empty(gpu, &[1, heads * dim], DType::F32)?;
    let seq = Tensor::from_u32(gpu, &[2], &[0, 0])?;
    let inv = Tensor::from_f32(gpu, &[dim / 2], DType::F32, &inv_freq(dim, 10000.0))?;
    let mut rec = Recorder::new(gpu);
    // Copy (via add of a zero row view) then rotate, as one list.
    let zero = Tensor::from_f32(gpu, &[1, heads * dim], DType::F32, &vec![0.0; heads * dim])?;
    super::elementwise::binary(&mut rec, super::elementwise::Binary::Add, &Rows::all(&src), &Rows::all(&zero), &Rows::all(&work))?;
    rope(&mut rec, &Rows::all(&work), heads, dim, &inv, &seq)?;
    let list = rec.finish()?;
    let mut worst = 0.0f64;
    for pos in [3u32, 17, 250, 1000] {
        seq.write_u32(gpu, &[pos, 0])?;
        list.run(gpu).await?;
        let got = gpu.read_f32(&work).await?;
        let want = reference(&x, 1, heads, dim, 10000.0, pos as usize);
        worst = worst.max(compare(&format!("rope replay @{pos}"), &got, &want, Tol { abs: 2e-6, rel: 1e-6 })?);
    }
    Ok(format!("4 replays, max abs err {worst:.2e}"))
}

/// `matmul::rms_linear_rope_kv` fused into one GEMV (decode rows; dense f32/f16 and int8/int4
/// weights), against rmsnorm, the product, the rotation and the append in f64: the q | k | v
/// row with q and k rotated, the cache row at seq[0] + r (dropped past the cache), the rest
/// of the cache untouched.
async fn check_rope_fused(gpu: &Gpu) -> CheckResult {
    use crate::ops::matmul::{reference as mm_reference, rms_linear_rope_kv, rms_reference, Act};
    use crate::quant::{Packed, QFormat, QMatrix, WeightRef};
    let mut rng = Rng::new(33);
    let (k, eps) = (64, 1e-6f32);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        // (rows, q heads, kv heads, head dim, pos0, cache rows); the last row of the last case
        // falls past the cache.
        for (rows, qh, kvh, dim, pos0, cap) in [(1, 2, 2, 64, 7, 9), (2, 4, 2, 32, 3, 8), (1, 2, 1, 128, 40, 44), (2, 2, 2, 64, 8, 9)] {
            for wk in ["f32", "f16", "q8", "q4z"] {
                let (qw, kvw) = (qh * dim, kvh * dim);
                let n = qw + 2 * kvw;
                let x = check::round_to(dt, &rng.normals(rows * k, 2.0));
                let g = rng.vec(k, 0.5, 1.5);
                let init = check::round_to(dt, &rng.normals(cap * 2 * kvw, 1.0));
                let raw = rng.normals(n * k, (1.0 / k as f32).sqrt());
                let (dense, q, w): (Option<crate::gpu::RowSplit>, Option<QMatrix>, Vec<f32>);
                match wk {
                    "f32" | "f16" => {
                        let wdt = if wk == "f16" { DType::F16 } else { DType::F32 };
                        let wv = check::round_to(wdt, &raw);
                        dense = Some(crate::gpu::RowSplit::from_f32(gpu, n, k, wdt, &wv)?);
                        (q, w) = (None, wv);
                    }
                    _ => {
                        let fmt = if wk == "q8" { QFormat::q8(32) } else { QFormat::q4(32, true) };
                        let packed = Packed::quantize(fmt, n, k, &raw)?;
                        w = packed.dequantize();
                        q = Some(QMatrix::upload(gpu, &packed)?);
                        dense = None;
                    }
                }
                let wref: WeightRef = match (&dense, &q) {
                    (Some(d), _) => d.into(),
                    (_, Some(q)) => q.into(),
                    (None, None) => return Err(format!("rope_fused: no weight built for {wk}").into()),
                };
                let xt = Tensor::from_f32(gpu, &[rows, k], dt, &x)?;
                let gt = Tensor::from_f32(gpu, &[k], DType::F32, &g)?;
                let yt = check::poisoned(gpu, &[rows, n], dt)?;
                let ht = check::poisoned(gpu, &[rows, k], dt)?;
                let ct = Tensor::from_f32(gpu, &[cap, 2 * kvw], dt, &init)?;
                let seq = Tensor::from_u32(gpu, &[2], &[pos0 as u32, (pos0 + rows) as u32])?;
                let inv = Tensor::from_f32(gpu, &[dim / 2], DType::F32, &inv_freq(dim, 10000.0))?;
                let r = RopeKv { q_heads: qh, kv_heads: kvh, dim, inv_freq: &inv, seq: &seq, cache: &ct };
                let mut rec = Recorder::new(gpu);
                rms_linear_rope_kv(&mut rec, &Rows::all(&xt), &gt, eps, wref, &Rows::all(&yt), &r, &Rows::all(&ht))?;
                let what = format!("rms_linear_rope_kv {dt} w:{wk} {rows} rows {qh}+{kvh}x{dim}@{pos0} cap {cap}");
                if rec.len() != 1 {
                    return Err(format!("{what}: {} dispatches, expected 1", rec.len()).into());
                }
                rec.finish()?.run(gpu).await?;
                let h = rms_reference(&x, &g, eps, rows, k);
                let (a, _) = mm_reference(&h, &w, None, rows, k, n, Act::None, None);
                // Rotate q's and k's heads (as one block) of the f64 product, in f64.
                let mut want_y = a.clone();
                let half = dim / 2;
                let inv_h = inv_freq(dim, 10000.0);
                for row in 0..rows {
                    for head in 0..qh + kvh {
                        for (i, &f) in inv_h.iter().enumerate() {
                            let ang = ((pos0 + row) as f32 * f) as f64;
                            let (sn, cs) = ang.sin_cos();
                            let (c1, c2) = (row * n + head * dim + i, row * n + head * dim + i + half);
                            want_y[c1] = a[c1] * cs - a[c2] * sn;
                            want_y[c2] = a[c2] * cs + a[c1] * sn;
                        }
                    }
                }
                let mut want_c: Vec<f64> = init.iter().map(|&v| v as f64).collect();
                for row in 0..rows {
                    if pos0 + row < cap {
                        for c in 0..2 * kvw {
                            want_c[(pos0 + row) * 2 * kvw + c] = want_y[row * n + qw + c];
                        }
                    }
                }
                let tol = if dt == DType::F16 { Tol { abs: 4e-3, rel: 4e-3 } } else { Tol { abs: 2e-5, rel: 1e-4 } };
                worst = worst.max(compare(&what, &gpu.read_f32(&yt).await?, &want_y, tol)?);
                worst = worst.max(compare(&format!("{what} cache"), &gpu.read_f32(&ct).await?, &want_c, tol)?);
            }
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_rope, check_rope_replay, check_rope_kv, check_rope_fused);
