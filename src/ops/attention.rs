//! Scaled dot-product attention with an online softmax (flash-style): bidirectional for the
//! vision tower, causal over a KV cache for the decoder. q, k, v and the output are row views,
//! so q/k/v can be column slices of one fused qkv projection and k/v can be a cache.
//!
//! `attention_rel_pos`: SAM's attention with decomposed relative-position bias, over windows
//! (blocks of consecutive rows) or one global block; its own kernel, tiled over 32 query rows
//! so each K/V load serves them all (see `attention_rel` in `shaders/attention.wgsl`).

use super::{act_flags, shape_err, u32_of, Rows};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(AttnParams("AttnParams") {
    m: u32, heads: u32, kv_heads: u32, causal: u32, q_off: u32, q_stride: u32, k_off4: u32, k_stride4: u32,
    v_off4: u32, v_stride4: u32, o_off: u32, o_stride: u32, scale: f32, splits: u32, split_len: u32, _pad: u32,
});

params_struct!(RelAttnParams("RelAttnParams") {
    heads: u32, kv_heads: u32, gh: u32, gw: u32, q_off: u32, q_stride: u32, k_off4: u32, k_stride4: u32,
    v_off4: u32, v_stride4: u32, o_off: u32, o_stride: u32, scale: f32, rows: u32, _pad0: u32, _pad1: u32,
});

const BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite];
const ATTN: Kernel = Kernel { shader: "attention", entry: "attention", binds: BINDS };
const COMBINE: Kernel = Kernel { shader: "attention", entry: "attn_combine", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite] };
/// Split attention of 128-wide heads on 32-wide subgroups (decode), `shaders/attention_decode.wgsl`.
const DECODE: Kernel = Kernel { shader: "attention_decode", entry: "attn_decode", binds: BINDS };
const REL: Kernel = Kernel { shader: "attention", entry: "attention_rel", binds: BINDS };
const REL_BIAS: Kernel =
    Kernel { shader: "attention", entry: "attn_rel_bias", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite] };
/// Query rows per workgroup of `attention_rel` (BQ in the shader).
const REL_ROWS: usize = 32;
/// Keys per tile of the kernel; a split is a whole number of tiles.
const TILE: usize = 64;
/// Workgroups worth filling a large GPU with: fewer (row, head) pairs than this get their keys split.
const TARGET_WORKGROUPS: usize = 512;
/// The same for the decode kernel (`attention_decode.wgsl`), whose splits go down to 16 keys:
/// more, shorter splits, as its key loop pays a memory round trip per 16 keys.
const DECODE_TARGET_WORKGROUPS: usize = 1024;
/// Most key splits `attn_combine` merges (one thread each).
const MAX_SPLITS: usize = 64;

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
            if hd == "HD128" {
                let f: &[&str] = if f16 { &["F16", "SUBGROUPS"] } else { &["SUBGROUPS"] };
                v.push(PipelineKey::new(DECODE, f, &[]));
            }
            if hd != "HD128" {
                let mut rel = base.clone();
                rel.push("RELPOS");
                v.push(PipelineKey::new(REL, &rel, &[]));
                let mut plain = rel.clone();
                plain.push("NOBIAS");
                v.push(PipelineKey::new(REL, &plain, &[]));
                rel.push("RELBIAS");
                v.push(PipelineKey::new(REL_BIAS, &rel, &[]));
            }
            let hd_n = match hd {
                "HD32" => 32,
                "HD64" => 64,
                _ => 128,
            };
            let mut causal: Vec<&str> = if f16 { vec!["F16"] } else { vec![] };
            causal.extend(tiled_hd_flags(hd_n));
            causal.extend(["RELPOS", "NOBIAS", "CAUSAL"]);
            v.push(PipelineKey::new(REL, &causal, &[]));
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
/// pairs alone leave the GPU idle (decode), at most MAX_SPLITS (`attn_combine`'s workgroup),
/// and no more than the cache has units of `unit` keys (the decode kernel's 16, else a TILE).
/// The kernels spread the keys valid at run time over the splits (`split_keys`), so a replayed
/// decode step keeps them all busy as the cache fills. `DSVL_ATTN_SPLIT_WG` overrides the
/// decode kernel's target (to measure).
fn split_plan(rows: usize, heads: usize, kv_rows: usize, decode_kernel: bool) -> usize {
    let (target, unit) = if decode_kernel {
        let env = std::env::var("DSVL_ATTN_SPLIT_WG").ok().and_then(|v| v.parse().ok());
        (env.unwrap_or(DECODE_TARGET_WORKGROUPS), 16)
    } else {
        (TARGET_WORKGROUPS, TILE)
    };
    let units = kv_rows.div_ceil(unit).max(1);
    target.div_ceil(rows * heads).clamp(1, units.min(MAX_SPLITS))
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
    if s.causal && super::attention_coop::fits(rec.gpu, q, k, v, s) {
        return super::attention_coop::record(rec, q, k, v, o, s, seq);
    }
    if s.causal && q.rows > 1 && tiled_fits(rec.gpu, s.head_dim) {
        return causal_tiled(rec, q, k, v, o, s, seq);
    }
    let caps = &rec.gpu.caps;
    let decode_kernel = s.head_dim == 128 && caps.subgroups && caps.subgroup_min == 32 && caps.subgroup_max == 32;
    let splits = split_plan(q.rows, s.heads, k.rows, decode_kernel);
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
        // 0: the kernels size the splits from the valid keys at run time.
        split_len: if splits == 1 { k.rows as u32 } else { 0 },
        _pad: 0,
    };
    let mut flags = act_flags(op, dt)?.to_vec();
    flags.push(hd_flag);
    let wg = [q.rows as u32, s.heads as u32, splits as u32];
    if splits == 1 {
        return rec.dispatch(&PipelineKey::new(ATTN, &flags, &[]), &params, &[seq, q.t, k.t, v.t, o.t], wg);
    }
    let part = Tensor::empty(rec.gpu, &[q.rows * s.heads * splits * (s.head_dim + 4)], DType::F32)?;
    if decode_kernel {
        let mut f = act_flags(op, dt)?.to_vec();
        f.push("SUBGROUPS");
        rec.dispatch(&PipelineKey::new(DECODE, &f, &[]), &params, &[seq, q.t, k.t, v.t, &part], wg)?;
    } else {
        let mut split = flags.clone();
        split.push("SPLIT");
        rec.dispatch(&PipelineKey::new(ATTN, &split, &[]), &params, &[seq, q.t, k.t, v.t, &part], wg)?;
    }
    flags.push("COMBINE");
    rec.dispatch(&PipelineKey::new(COMBINE, &flags, &[]), &params, &[seq, &part, o.t], [q.rows as u32, s.heads as u32, 1])
}

/// SAM's decomposed relative position tables for a (gh, gw) grid of tokens.
pub struct RelPos<'a> {
    pub grid: (usize, usize),
    pub h: &'a Tensor,
    pub w: &'a Tensor,
}

/// Workgroup memory of `attention_rel` at head dim `d`: the query and the key/value tiles (32
/// rows of d/4 + 1 vec4s each), the probabilities (32 x 9 vec4s) and the row maxima (64 vec4s).
fn rel_workgroup_bytes(d: usize) -> usize {
    (2 * REL_ROWS * (d / 4 + 1) + REL_ROWS * 9 + 64) * 16
}

/// Bidirectional attention in which each run of gh*gw consecutive rows (a window; a single run = global
/// attention) attends only within itself, with score(i, j) = scale * q_i·k_j + q_i·Rh[hi - hj + gh - 1] + q_i·Rw[wi - wj + gw - 1],
/// where (hi, wi) = divmod(i mod (gh*gw), gw) (same for j). Rh = rel.h [2gh-1, head_dim], Rw = rel.w [2gw-1, head_dim],
/// in the same dtype as q (f32 or f16). q/k/v/o are row views as in `attention` (q, k, v column slices of one fused qkv [rows, 3*d]).
///
/// Head dims 32 and 64; k and v start and stride at multiples of 4 elements (q and o at any);
/// k and v have q's rows. Two dispatches: both bias tables of every (row, head) into an f32
/// scratch of rows * heads * (gh + gw) values, then the attention itself.
pub fn attention_rel_pos(rec: &mut Recorder, q: &Rows, k: &Rows, v: &Rows, o: &Rows, s: AttnShape, rel: &RelPos) -> Result<()> {
    rel_impl(rec, q, k, v, o, s, rel.grid, Some((rel.h, rel.w)))
}

/// Bidirectional attention of all q's rows over as many keys (one block, no bias), on
/// `attention_rel_pos`'s tiled kernel: 32 query rows per workgroup share each K/V tile, which
/// the one-row-per-workgroup `attention` cannot. Head dims 32 and 64.
/// On tensor cores where `attention_coop` takes the views (every key is valid: seq = [0, rows]).
pub fn attention_tiled(rec: &mut Recorder, q: &Rows, k: &Rows, v: &Rows, o: &Rows, s: AttnShape) -> Result<()> {
    rel_impl(rec, q, k, v, o, s, (q.rows, 1), None)
}

/// Whether the tiled kernel takes this head dim on this adapter (128 only causal: prefill).
pub fn tiled_fits(gpu: &Gpu, head_dim: usize) -> bool {
    matches!(head_dim, 32 | 64 | 128) && rel_workgroup_bytes(head_dim) <= gpu.caps.max_workgroup_storage as usize
}

/// Head-dim flags of the tiled kernel: 128 also sets HD64, whose accumulators it extends.
fn tiled_hd_flags(d: usize) -> &'static [&'static str] {
    match d {
        32 => &["HD32"],
        64 => &["HD64"],
        _ => &["HD128", "HD64"],
    }
}

/// The tiled kernel's parameters for these views, over blocks of a (gh, gw) grid.
fn rel_params(q: &Rows, k: &Rows, v: &Rows, o: &Rows, s: AttnShape, (gh, gw): (u32, u32)) -> RelAttnParams {
    RelAttnParams {
        heads: s.heads as u32,
        kv_heads: s.kv_heads as u32,
        gh,
        gw,
        q_off: q.off as u32,
        q_stride: q.stride as u32,
        k_off4: (k.off / 4) as u32,
        k_stride4: (k.stride / 4) as u32,
        v_off4: (v.off / 4) as u32,
        v_stride4: (v.stride / 4) as u32,
        o_off: o.off as u32,
        o_stride: o.stride as u32,
        scale: s.scale,
        rows: q.rows as u32,
        ..Default::default()
    }
}

/// Causal attention of several new rows over a KV cache (prefill) on the tiled kernel: 32
/// query rows per workgroup share each K/V tile, and a workgroup reads keys only up to its last
/// row's position. `attention` has checked the views and dtypes.
fn causal_tiled(rec: &mut Recorder, q: &Rows, k: &Rows, v: &Rows, o: &Rows, s: AttnShape, seq: &Tensor) -> Result<()> {
    let op = "attention";
    let params = rel_params(q, k, v, o, s, (u32_of(op, q.rows)?, 1));
    let mut flags = act_flags(op, q.t.dtype())?.to_vec();
    flags.extend(tiled_hd_flags(s.head_dim));
    flags.extend(["RELPOS", "NOBIAS", "CAUSAL"]);
    let wg = [u32_of(op, q.rows.div_ceil(REL_ROWS))?, s.heads as u32, 1];
    rec.dispatch(&PipelineKey::new(REL, &flags, &[]), &params, &[q.t, k.t, v.t, seq, o.t], wg)
}

#[allow(clippy::too_many_arguments)]
fn rel_impl(rec: &mut Recorder, q: &Rows, k: &Rows, v: &Rows, o: &Rows, s: AttnShape, (gh, gw): (usize, usize), rel: Option<(&Tensor, &Tensor)>) -> Result<()> {
    let op = if rel.is_some() { "attention_rel_pos" } else { "attention_tiled" };
    for r in [q, k, v, o] {
        r.check(op)?;
    }
    let d = s.head_dim;
    let hd_flag = match d {
        32 => "HD32",
        64 => "HD64",
        d => return Err(shape_err(op, format!("head dim {d} (supported: 32, 64)"))),
    };
    if s.causal {
        return Err(shape_err(op, "relative-position attention is bidirectional, but the shape says causal".into()));
    }
    if s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(shape_err(op, format!("{} heads not divisible into {} kv heads", s.heads, s.kv_heads)));
    }
    if q.cols != s.heads * d || o.cols != q.cols || o.rows != q.rows {
        return Err(shape_err(op, format!("q {}x{} / o {}x{} for {} heads of {d}", q.rows, q.cols, o.rows, o.cols, s.heads)));
    }
    if k.cols != s.kv_heads * d || v.cols != k.cols || k.rows != q.rows || v.rows != q.rows {
        return Err(shape_err(op, format!("k {}x{} / v {}x{} for {} rows of {} kv heads", k.rows, k.cols, v.rows, v.cols, q.rows, s.kv_heads)));
    }
    // K and V are read as vec4s.
    if [k.off, k.stride, v.off, v.stride].iter().any(|x| x % 4 != 0) {
        return Err(shape_err(op, "k and v views must start and stride at multiples of 4 elements".into()));
    }
    let blk = gh * gw;
    if blk == 0 || !q.rows.is_multiple_of(blk) {
        return Err(shape_err(op, format!("{} rows are not whole blocks of a {gh}x{gw} grid", q.rows)));
    }
    let tables: Vec<&Tensor> = rel.iter().flat_map(|&(h, w)| [h, w]).collect();
    if let Some((rh, rw)) = rel {
        for (name, t, n) in [("rel.h", rh, 2 * gh - 1), ("rel.w", rw, 2 * gw - 1)] {
            if t.shape() != [n, d] {
                return Err(shape_err(op, format!("{name} is {:?}, expected [{n}, {d}] for a {gh}x{gw} grid", t.shape())));
            }
        }
    }
    let dt = q.t.dtype();
    if [k.t, v.t, o.t].iter().chain(&tables).any(|t| t.dtype() != dt) {
        return Err(Error::DType { op, dtype: dt.name().into(), detail: "q, k, v, o and the rel tables must share a dtype".into() });
    }
    if [q.t, k.t, v.t].iter().chain(&tables).any(|t| t.same_buffer(o.t)) {
        return Err(shape_err(op, "output shares a buffer with an input".into()));
    }
    let wg_bytes = rel_workgroup_bytes(d);
    if wg_bytes > rec.gpu.caps.max_workgroup_storage as usize {
        return Err(Error::Kernel {
            kernel: format!("attention.attention_rel[{hd_flag}]"),
            message: format!("needs {wg_bytes} bytes of workgroup memory, the adapter offers {}", rec.gpu.caps.max_workgroup_storage),
        });
    }
    let params = rel_params(q, k, v, o, s, (gh as u32, gw as u32));
    let mut flags = act_flags(op, dt)?.to_vec();
    flags.extend([hd_flag, "RELPOS"]);
    let wg = [u32_of(op, blk.div_ceil(REL_ROWS))?, s.heads as u32, u32_of(op, q.rows / blk)?];
    let Some((rh, rw)) = rel else {
        if gh == q.rows && super::attention_coop::fits(rec.gpu, q, k, v, s) {
            let seq = Tensor::from_u32(rec.gpu, &[2], &[0, u32_of(op, q.rows)?])?;
            return super::attention_coop::record(rec, q, k, v, o, s, &seq);
        }
        // No bias: the kernel never reads its table, so a one-value stand-in is bound.
        flags.push("NOBIAS");
        let none = Tensor::empty(rec.gpu, &[1], DType::F32)?;
        return rec.dispatch(&PipelineKey::new(REL, &flags, &[]), &params, &[q.t, k.t, v.t, &none, o.t], wg);
    };
    let n_bias = u32_of(op, q.rows * s.heads * (gh + gw))?;
    let relb = Tensor::empty(rec.gpu, &[n_bias as usize], DType::F32)?;
    let mut bias_flags = flags.clone();
    bias_flags.push("RELBIAS");
    let bias_grid = grid(n_bias.div_ceil(256), rec.gpu.caps.max_workgroups_per_dim);
    rec.dispatch(&PipelineKey::new(REL_BIAS, &bias_flags, &[]), &params, &[q.t, rh, rw, &relb], bias_grid)?;
    rec.dispatch(&PipelineKey::new(REL, &flags, &[]), &params, &[q.t, k.t, v.t, &relb, o.t], wg)
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

/// A causal attention case of the checks: m new rows at position `past` over a cache with 11
/// spare rows, GQA; q, k and v random (rounded to `dt`) as (host values, tensor).
pub(crate) struct CausalCase {
    pub q: (Vec<f32>, Tensor),
    pub k: (Vec<f32>, Tensor),
    pub v: (Vec<f32>, Tensor),
    pub o: Tensor,
    pub seq: Tensor,
    pub shape: AttnShape,
    m: usize,
    past: usize,
}

impl CausalCase {
    pub(crate) fn new(gpu: &Gpu, rng: &mut Rng, dt: DType, (m, past, heads, kvh, d): (usize, usize, usize, usize, usize)) -> Result<CausalCase> {
        let cap = past + m + 11;
        let mut make = |rows: usize, cols: usize| -> Result<(Vec<f32>, Tensor)> {
            let x = check::round_to(dt, &rng.normals(rows * cols, 1.0));
            let t = Tensor::from_f32(gpu, &[rows, cols], dt, &x)?;
            Ok((x, t))
        };
        let (q, k, v) = (make(m, heads * d)?, make(cap, kvh * d)?, make(cap, kvh * d)?);
        let shape = AttnShape { heads, kv_heads: kvh, head_dim: d, scale: (d as f32).powf(-0.5), causal: true };
        let seq = Tensor::from_u32(gpu, &[2], &[past as u32, (past + m) as u32])?;
        Ok(CausalCase { q, k, v, o: poisoned(gpu, &[m, heads * d], dt)?, seq, shape, m, past })
    }

    pub(crate) fn reference(&self) -> Vec<f64> {
        reference(&self.q.0, &self.k.0, &self.v.0, self.m, self.past + self.m, self.shape, self.past)
    }
}

/// Causal over a KV cache with spare capacity: prefill of a block at an offset, GQA, and a
/// decode step replayed at successive positions by rewriting `seq` only.
async fn check_attention_causal(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(41);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        // (new rows m, past, heads, kv_heads, d)
        // The last: a decode row over a cache of more than 2048 keys (many splits, then combined).
        for (m, past, heads, kvh, d) in [(1, 0, 1, 1, 128), (9, 0, 2, 2, 128), (70, 5, 4, 2, 64), (5, 130, 2, 1, 128), (12, 3, 1, 1, 32), (1, 2100, 2, 1, 128)] {
            let c = CausalCase::new(gpu, &mut rng, dt, (m, past, heads, kvh, d))?;
            let mut rec = Recorder::new(gpu);
            attention(&mut rec, &Rows::all(&c.q.1), &Rows::all(&c.k.1), &Rows::all(&c.v.1), &Rows::all(&c.o), c.shape, &c.seq)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&c.o).await?;
            let want = c.reference();
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

/// f64 reference of `attention_rel_pos`, straight from its definition: q [rows, heads*d],
/// k and v [rows, kv_heads*d], rh [2gh-1, d], rw [2gw-1, d].
#[allow(clippy::too_many_arguments)]
pub fn rel_pos_reference(q: &[f32], k: &[f32], v: &[f32], rows: usize, s: AttnShape, (gh, gw): (usize, usize), rh: &[f32], rw: &[f32]) -> Vec<f64> {
    let (h_n, d) = (s.heads, s.head_dim);
    let kvw = s.kv_heads * d;
    let group = s.heads / s.kv_heads;
    let blk = gh * gw;
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
    let mut o = vec![0.0; rows * h_n * d];
    for i in 0..rows {
        let (b0, (hi, wi)) = (i / blk * blk, ((i % blk) / gw, (i % blk) % gw));
        for h in 0..h_n {
            let kh = h / group;
            let qi = &q[i * h_n * d + h * d..][..d];
            let scores: Vec<f64> = (b0..b0 + blk)
                .map(|j| {
                    let (hj, wj) = ((j - b0) / gw, (j - b0) % gw);
                    let kj = &k[j * kvw + kh * d..][..d];
                    s.scale as f64 * dot(qi, kj) + dot(qi, &rh[(hi + gh - 1 - hj) * d..][..d]) + dot(qi, &rw[(wi + gw - 1 - wj) * d..][..d])
                })
                .collect();
            let mx = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|x| (x - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..d {
                o[i * h_n * d + h * d + c] = e.iter().enumerate().map(|(jj, w)| w * v[(b0 + jj) * kvw + kh * d + c] as f64).sum::<f64>() / z;
            }
        }
    }
    o
}

/// SAM's windowed and global attention: q, k, v as column slices of one fused qkv tensor.
async fn check_attention_rel_pos(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(42);
    let mut worst = [0.0f64; 2];
    // (grid, blocks, heads, kv heads, head dim): an 8x8 grid in 3x3 windows padded to 9x9 (9
    // blocks of 9 rows), the same grid global, a non-square grid with partial query and key
    // tiles, a grid of 320 rows (10 tiles each way, 36 bias terms per row), GQA, and SAM-B's
    // 14x14 windows.
    let cases = [((3, 3), 9, 2, 2, 32), ((8, 8), 1, 2, 2, 32), ((3, 3), 9, 1, 1, 64), ((8, 8), 1, 1, 1, 64), ((5, 7), 2, 2, 2, 64), ((16, 20), 1, 1, 1, 32), ((4, 6), 3, 4, 2, 32), ((14, 14), 2, 1, 1, 64)];
    for dt in check::act_dtypes(gpu) {
        for &((gh, gw), blocks, heads, kvh, d) in &cases {
            let rows = gh * gw * blocks;
            let (qw, kw) = (heads * d, kvh * d);
            let width = qw + 2 * kw;
            let qkv = check::round_to(dt, &rng.normals(rows * width, 1.0));
            let rh = check::round_to(dt, &rng.normals((2 * gh - 1) * d, 0.2));
            let rw = check::round_to(dt, &rng.normals((2 * gw - 1) * d, 0.2));
            let t = Tensor::from_f32(gpu, &[rows, width], dt, &qkv)?;
            let (rht, rwt) = (Tensor::from_f32(gpu, &[2 * gh - 1, d], dt, &rh)?, Tensor::from_f32(gpu, &[2 * gw - 1, d], dt, &rw)?);
            let o = poisoned(gpu, &[rows, qw], dt)?;
            let s = AttnShape { heads, kv_heads: kvh, head_dim: d, scale: (d as f32).powf(-0.5), causal: false };
            let rel = RelPos { grid: (gh, gw), h: &rht, w: &rwt };
            let (qv, kv, vv) = (Rows::cols(&t, 0, qw), Rows::cols(&t, qw, kw), Rows::cols(&t, qw + kw, kw));
            let mut rec = Recorder::new(gpu);
            attention_rel_pos(&mut rec, &qv, &kv, &vv, &Rows::all(&o), s, &rel)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&o).await?;
            let split = |c0: usize, w: usize| -> Vec<f32> { (0..rows * w).map(|i| qkv[(i / w) * width + c0 + i % w]).collect() };
            let want = rel_pos_reference(&split(0, qw), &split(qw, kw), &split(qw + kw, kw), rows, s, (gh, gw), &rh, &rw);
            // f32: rounding in the sums of ~100 terms; f16: the output's rounding (|o| < 4).
            let (tol, slot) = if dt == DType::F16 { (Tol { abs: 3e-3, rel: 3e-3 }, 1) } else { (Tol { abs: 5e-6, rel: 5e-5 }, 0) };
            let what = format!("attention rel-pos {dt} grid {gh}x{gw} x{blocks} h={heads}/{kvh} d={d}");
            worst[slot] = worst[slot].max(compare(&what, &got, &want, tol)?);
        }
    }
    // Rows that are not whole blocks, and tables of the wrong size, are errors that record nothing.
    let t = Tensor::empty(gpu, &[10, 96], DType::F32)?;
    let o = Tensor::empty(gpu, &[10, 32], DType::F32)?;
    let (rh, rw) = (Tensor::empty(gpu, &[5, 32], DType::F32)?, Tensor::empty(gpu, &[5, 32], DType::F32)?);
    let s = AttnShape { heads: 1, kv_heads: 1, head_dim: 32, scale: 1.0, causal: false };
    for (grid, rows) in [((3, 3), 10), ((2, 3), 6)] {
        let (q, k, v) = (Rows::cols(&t, 0, 32).rows(0, rows), Rows::cols(&t, 32, 32).rows(0, rows), Rows::cols(&t, 64, 32).rows(0, rows));
        let mut rec = Recorder::new(gpu);
        let res = attention_rel_pos(&mut rec, &q, &k, &v, &Rows::all(&o).rows(0, rows), s, &RelPos { grid, h: &rh, w: &rw });
        if res.is_ok() || !rec.is_empty() {
            return Err(format!("attention_rel_pos accepted {rows} rows on a {grid:?} grid with [5, 32] tables").into());
        }
    }
    let f16 = if gpu.caps.f16 { format!("{:.2e}", worst[1]) } else { "not run (no SHADER_F16)".into() };
    Ok(format!("max abs err f32 {:.2e}, f16 {f16}", worst[0]))
}

/// The tiled kernel without bias (the SigLIP tower's attention): rows not a multiple of the
/// 32-row tile, a single row, head dims 32 and 64, and the fused qkv layout.
async fn check_attention_tiled(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(43);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        for (n, heads, d) in [(1, 1, 64), (7, 2, 64), (77, 3, 32), (70, 2, 64)] {
            if !tiled_fits(gpu, d) {
                return Ok(format!("skipped: head dim {d} needs {} bytes of workgroup memory", rel_workgroup_bytes(d)));
            }
            let w = heads * d;
            let qkv = check::round_to(dt, &rng.normals(n * 3 * w, 1.0));
            let t = Tensor::from_f32(gpu, &[n, 3 * w], dt, &qkv)?;
            let o = poisoned(gpu, &[n, w], dt)?;
            let s = AttnShape { heads, kv_heads: heads, head_dim: d, scale: (d as f32).powf(-0.5), causal: false };
            let mut rec = Recorder::new(gpu);
            attention_tiled(&mut rec, &Rows::cols(&t, 0, w), &Rows::cols(&t, w, w), &Rows::cols(&t, 2 * w, w), &Rows::all(&o), s)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&o).await?;
            let split = |c0: usize| -> Vec<f32> { (0..n * w).map(|i| qkv[(i / w) * 3 * w + c0 + i % w]).collect() };
            let want = reference(&split(0), &split(w), &split(2 * w), n, n, s, 0);
            let tol = if dt == DType::F16 { Tol { abs: 3e-3, rel: 3e-3 } } else { Tol { abs: 2e-6, rel: 2e-5 } };
            worst = worst.max(compare(&format!("attention tiled {dt} n={n} h={heads} d={d}"), &got, &want, tol)?);
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_attention_vit, check_attention_causal, check_attention_rel_pos, check_attention_tiled);
