//! Linear layers: y = x·Wᵀ (+ bias) with PyTorch's [out, in] weight layout, optionally
//! followed by GELU and/or added to y (residual). Few rows (decode) use the GEMV kernel;
//! many rows use the 128x128 tiled GEMM. Weights are f32 or f16 (f16 read as packed pairs,
//! so it works without SHADER_F16) and may be split in row blocks (`RowSplit`) to respect the
//! binding limit: one dispatch per block, each writing its own output columns.

use super::{act_flags, shape_err, u32_of, Rows};
use crate::check::{self, compare_mag, poisoned, CheckResult, Rng, Tol};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, RowSplit, Tensor};
use crate::params_struct;
use crate::quant::WeightRef;
use super::rope::RopeKv;

params_struct!(MatmulParams("MatmulParams") {
    m: u32, n: u32, k: u32, x_off: u32, x_stride: u32, y_off: u32, y_stride: u32,
    n_off: u32, bias_off: u32, flags: u32, act: u32, eps: f32,
    rope_dim: u32, rope_heads: u32, kv_col: u32, kv_cap: u32,
});

const BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite];
const GEMM: Kernel = Kernel { shader: "matmul", entry: "gemm", binds: BINDS };
const GEMV: Kernel = Kernel { shader: "matmul", entry: "gemv", binds: BINDS };
/// GEMV over rmsnorm(x) * g, the norm weight g bound last.
const GEMV_NORM: Kernel = Kernel { shader: "matmul", entry: "gemv", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite, Bind::Read] };
/// GEMV_NORM with the rotary embedding and KV append (ROPE): frequencies in the bias's place,
/// then seq and the cache.
const GEMV_NORM_ROPE: Kernel = Kernel {
    shader: "matmul",
    entry: "gemv",
    binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite, Bind::Read, Bind::Read, Bind::ReadWrite],
};
/// Tensor cores (Caps::coop16): f16 x and W only.
const GEMM_COOP: Kernel = Kernel { shader: "matmul_coop", entry: "gemm_coop", binds: BINDS };
/// The tensor-core GEMM with operand tiles staged through workgroup memory (`shaders/matmul_coop_staged.wgsl`).
const GEMM_COOP_STAGED: Kernel = Kernel { shader: "matmul_coop_staged", entry: "gemm_coop_staged", binds: GEMM.binds };
/// Workgroup memory the staged kernel declares: two stages of 64 + 128 rows of 40 f16, and 4 KiB
/// of results; with 64-wide tiles (BN64) 64 + 64 rows, which fits 32 KiB adapters.
const STAGED_WG_BYTES: u32 = (2 * (64 + 128) * 40) * 2 + 4096;
const STAGED_BN64_WG_BYTES: u32 = (2 * (64 + 64) * 40) * 2 + 4096;

/// Rows up to which the GEMV kernel is used (its per-workgroup row capacity).
pub const GEMV_MAX_ROWS: usize = 8;

/// Activation applied after the bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Act {
    #[default]
    None,
    GeluErf,
    GeluTanh,
}

/// What happens after the product: `y = act(x·Wᵀ + bias) (+ y if residual)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// f32 bias [out].
    pub bias: Option<&'a Tensor>,
    pub act: Act,
    /// Add the product to what y holds (fuses the residual add).
    pub residual: bool,
}

pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for act in [&[][..], &["F16"][..]] {
        for w in [&[][..], &["W_F16"][..]] {
            let base: Vec<&'static str> = act.iter().chain(w).copied().collect();
            v.push(PipelineKey::new(GEMM, &base, &[]));
            v.push(PipelineKey::new(GEMV, &base, &[]));
            for extra in [&["VEC"][..], &["SUBGROUPS"], &["VEC", "SUBGROUPS"]] {
                let f: Vec<&'static str> = base.iter().chain(extra).copied().collect();
                v.push(PipelineKey::new(GEMV, &f, &[]));
            }
            for extra in [&[][..], &["VEC"], &["SUBGROUPS"], &["VEC", "SUBGROUPS"]] {
                let f: Vec<&'static str> = base.iter().chain(extra).chain(&["GLU"]).copied().collect();
                v.push(PipelineKey::new(GEMV, &f, &[]));
            }
            for extra in [&["VEC", "NORM"][..], &["VEC", "SUBGROUPS", "NORM"], &["VEC", "NORM", "GLU"], &["VEC", "SUBGROUPS", "NORM", "GLU"]] {
                let f: Vec<&'static str> = base.iter().chain(extra).copied().collect();
                v.push(PipelineKey::new(GEMV_NORM, &f, &[]));
            }
            for extra in [&["VEC", "NORM", "ROPE"][..], &["VEC", "SUBGROUPS", "NORM", "ROPE"]] {
                let f: Vec<&'static str> = base.iter().chain(extra).copied().collect();
                v.push(PipelineKey::new(GEMV_NORM_ROPE, &f, &[]));
            }
            // f32 logits from f16 activations.
            if !act.is_empty() {
                for extra in [&["Y_F32"][..], &["Y_F32", "VEC", "SUBGROUPS"], &["Y_F32", "VEC", "NORM"], &["Y_F32", "VEC", "SUBGROUPS", "NORM"]] {
                    let f: Vec<&'static str> = base.iter().chain(extra).copied().collect();
                    v.push(PipelineKey::new(if extra.contains(&"NORM") { GEMV_NORM } else { GEMV }, &f, &[]));
                }
            }
        }
    }
    v.push(PipelineKey::new(GEMM_COOP, &["F16"], &[]));
    for pipe in [&[][..], &["PIPE2"]] {
        for tile in [&[][..], &["BN64"], &["BN64", "BK64"]] {
            let f: Vec<&'static str> = ["F16"].iter().chain(tile).chain(pipe).copied().collect();
            v.push(PipelineKey::new(GEMM_COOP_STAGED, &f, &[]));
        }
    }
    v
}

/// Whether the staged tensor-core GEMMs (f16 and quantised) take 64-wide tiles (flag BN64):
/// twice the workgroups of the 128-wide tiles, which at 576-616 rows leave most of a large
/// GPU idle. Faster for every vision and prefill product measured on the H200 (run s5: 55-58
/// against 64-66 TFLOP/s on the wide ones); `DSVL_GEMM_BN64=0` keeps 128 (to compare).
pub(crate) fn staged_narrow() -> bool {
    std::env::var("DSVL_GEMM_BN64").map_or(true, |v| v != "0")
}

/// Workgroup memory of the staged f16 GEMM with 64-wide tiles and 64-deep steps (BK64):
/// two stages of a 64 x 72 f16 tile each for x and W, and the 4 KiB epilogue tile.
const STAGED_BK64_WG_BYTES: u32 = 2 * 2 * 64 * 72 * 2 + 4096;

/// Whether the staged f16 GEMM with 64-wide tiles takes 64-deep k steps (flag BK64: half the
/// barriers per product). Off unless `DSVL_GEMM_BK64=1`: with PIPE2 it was slower on 7 of 9
/// shapes in run t1 (H100); alone it has not been timed (docs/PERFORMANCE.md).
fn staged_deep(gpu: &Gpu) -> bool {
    gpu.caps.max_workgroup_storage >= STAGED_BK64_WG_BYTES && std::env::var("DSVL_GEMM_BK64").is_ok_and(|v| v == "1")
}

/// Whether the staged tensor-core GEMMs (f16 and quantised) load two k steps ahead (flag
/// PIPE2). Off unless `DSVL_GEMM_PIPE2=1`: run t1 (H100) measured 4-7% on four prefill
/// products with the f16 tile loads since reverted, so it is to be timed again before it
/// becomes the default (docs/PERFORMANCE.md).
pub(crate) fn staged_pipe2() -> bool {
    std::env::var("DSVL_GEMM_PIPE2").is_ok_and(|v| v == "1")
}

/// Whether tensor-core GEMMs stage their tiles through workgroup memory: where the adapter
/// gives the workgroup memory, unless `DSVL_COOP_STAGED=0` (the direct-load kernel, for comparison).
pub(crate) fn coop_staged(gpu: &Gpu) -> bool {
    let need = if staged_narrow() { STAGED_BN64_WG_BYTES } else { STAGED_WG_BYTES };
    gpu.caps.max_workgroup_storage >= need && std::env::var("DSVL_COOP_STAGED").map_or(true, |v| v != "0")
}

/// Tensor-core GEMM shape: 16x16 tiles per subgroup along N (2 or 4) and k steps per loop
/// iteration (1 or 2); `DSVL_COOP_NT` / `DSVL_COOP_KU` override the defaults (NT 4, KU 1: the
/// fastest on the H200, bench/logs/h200-2026-11-29-c-coop-tune.log) for tuning.
fn coop_tuning() -> (u32, u32) {
    let env = |k: &str, ok: &[u32], d: u32| std::env::var(k).ok().and_then(|v| v.parse().ok()).filter(|v| ok.contains(v)).unwrap_or(d);
    (env("DSVL_COOP_NT", &[2, 4], 4), env("DSVL_COOP_KU", &[1, 2], 1))
}

/// Whether the cooperative-matrix GEMM takes this product: tensor cores present, f16 x and W,
/// whole 16-deep k steps, at least one 16x16 tile, and 16-byte aligned x rows. `DSVL_NO_COOP`
/// (at device creation) turns it off.
fn coop_fits(gpu: &Gpu, x: &Rows, w: &RowSplit) -> bool {
    coop_x_fits(gpu, x) && w.dtype == DType::F16 && w.parts.iter().all(|(_, t)| t.shape()[0] >= 16)
}

/// The tensor-core GEMMs' conditions on x (the dense and the quantised one): tensor cores
/// present, f16, at least 16 rows, whole 16-deep k steps, 16-byte aligned rows.
pub(crate) fn coop_x_fits(gpu: &Gpu, x: &Rows) -> bool {
    gpu.caps.coop16 && x.t.dtype() == DType::F16 && x.rows >= 16 && x.cols.is_multiple_of(16) && x.off.is_multiple_of(8) && x.stride.is_multiple_of(8)
}

/// GEMV columns per 32-lane group (1, 2 or 4) for `n` output columns, and k-chunks per step
/// (1, 2 or 4; the scalar path's only). Columns per group: the most that still gives `GEMV_MIN_GROUPS` workgroups, so
/// narrow products (2048 outputs: 64 workgroups at 4 per group) do not leave most of a large
/// GPU idle. `DSVL_GEMV_CPG` / `DSVL_GEMV_UNROLL` override them for tuning.
pub(crate) fn gemv_tuning(n: usize) -> (u32, u32) {
    let env = |k: &str, ok: &[u32]| std::env::var(k).ok().and_then(|v| v.parse().ok()).filter(|v| ok.contains(v));
    let cpg = env("DSVL_GEMV_CPG", &[1, 2, 4]).unwrap_or_else(|| [4, 2].into_iter().find(|&c| n.div_ceil(8 * c as usize) >= GEMV_MIN_GROUPS).unwrap_or(1));
    (cpg, env("DSVL_GEMV_UNROLL", &[1, 2, 4]).unwrap_or(1))
}

/// Workgroups a GEMV should have at least (two per SM of a large GPU).
const GEMV_MIN_GROUPS: usize = 256;

/// Weight rows per group for a GEMV over `n` weight rows: `gemv_tuning`'s, at least 2 with GLU
/// (a group takes gate and up rows in pairs). The workgroup count stays the unfused product's
/// (halved where `gemv_tuning` picks 1: small products only).
pub(crate) fn gemv_cpg(n: usize, glu: bool) -> u32 {
    let cpg = gemv_tuning(n).0;
    if glu { cpg.max(2) } else { cpg }
}

/// GEMV workgroups for `n` weight rows and `cpg` rows per group (GLU: `n / 2` output columns,
/// `cpg / 2` per group).
pub(crate) fn gemv_groups(gpu: &Gpu, n: usize, cpg: u32, m: usize) -> [u32; 3] {
    let [gx, gy, _] = grid((n as u32).div_ceil(8 * cpg), gpu.caps.max_workgroups_per_dim);
    [gx, gy, m as u32]
}

/// y = act(x·Wᵀ + bias) (+ y). x: [M, K] view, w: [N, K] dense (`RowSplit`) or quantised
/// (`QMatrix`, see `ops::qmatmul`), or a `Weight` holding either; y: [M, N] view.
pub fn linear<'w>(rec: &mut Recorder, x: &Rows, w: impl Into<WeightRef<'w>>, ep: Epilogue, y: &Rows) -> Result<()> {
    linear_impl(rec, x, w.into(), ep, y, None, false, None)
}

/// Whether `rms_linear` fuses the norm: the GEMV with 16-byte loads takes these rows (for a
/// quantised weight: those it reads x with, vec4 or scalar).
pub(crate) fn norm_fuses(x: &Rows, g: &Tensor) -> bool {
    x.rows <= GEMV_MAX_ROWS && x.cols.is_multiple_of(8) && x.off.is_multiple_of(4) && x.stride.is_multiple_of(4) && g.dtype() == DType::F32 && g.len() == x.cols
}

/// Whether the GEMV can fuse SwiGLU: decode rows, and one weight part (a column's gate and up
/// rows in one binding).
pub(crate) fn glu_fuses(x: &Rows, w: WeightRef) -> bool {
    let parts = match w {
        WeightRef::Dense(d) => d.parts.len(),
        WeightRef::Quant(q) => q.parts.len(),
    };
    x.rows <= GEMV_MAX_ROWS && parts == 1
}

/// y = linear(rmsnorm(x) * g): for decode rows the GEMV normalises x itself (no dispatch of
/// its own); otherwise the norm goes through `h` (a [M, K] scratch view) first.
#[allow(clippy::too_many_arguments)]
pub fn rms_linear<'w>(rec: &mut Recorder, x: &Rows, g: &Tensor, eps: f32, w: impl Into<WeightRef<'w>>, ep: Epilogue, y: &Rows, h: &Rows) -> Result<()> {
    let w = w.into();
    if norm_fuses(x, g) {
        return linear_impl(rec, x, w, ep, y, Some((g, eps)), false, None);
    }
    super::norm::rmsnorm(rec, x, g, eps, h)?;
    linear_impl(rec, h, w, ep, y, None, false, None)
}

/// `rms_linear` into a q | k | v row view `y`, then `rope::rope_kv` (q's and k's heads rotated,
/// k and v appended to the cache): one GEMV dispatch for decode rows where the norm fuses and
/// the weight is in one part (`DSVL_FUSE_ROPE=0` keeps the two steps, to compare), else both.
#[allow(clippy::too_many_arguments)]
pub fn rms_linear_rope_kv<'w>(rec: &mut Recorder, x: &Rows, g: &Tensor, eps: f32, w: impl Into<WeightRef<'w>>, y: &Rows, r: &RopeKv, h: &Rows) -> Result<()> {
    let w = w.into();
    // The quantised GEMV fuses it with its 16-byte loads only (K a multiple of 32).
    let (rows, k_ok) = match w {
        WeightRef::Dense(d) => (d.rows, true),
        WeightRef::Quant(q) => (q.rows, x.cols.is_multiple_of(32)),
    };
    let fits = norm_fuses(x, g)
        && k_ok
        && glu_fuses(x, w)
        && r.dim.is_multiple_of(2)
        && rows == (r.q_heads + 2 * r.kv_heads) * r.dim
        && y.cols == rows
        && r.inv_freq.dtype() == DType::F32
        && r.inv_freq.len() == r.dim / 2
        && r.seq.dtype() == DType::U32
        && !r.seq.is_empty()
        && matches!(r.cache.shape(), &[_, c] if c == 2 * r.kv_heads * r.dim)
        && r.cache.dtype() == y.t.dtype()
        && std::env::var("DSVL_FUSE_ROPE").map_or(true, |v| v != "0");
    if fits {
        return linear_impl(rec, x, w, Epilogue::default(), y, Some((g, eps)), false, Some(r));
    }
    rms_linear(rec, x, g, eps, w, Epilogue::default(), y, h)?;
    super::rope::rope_kv(rec, y, r)
}

/// SwiGLU over `rms_linear`: y = silu(a[:, ..I]) * a[:, I..] with a = linear(rmsnorm(x) * g) and
/// w gate's rows stacked over up's ([2I, K]); y is [M, I]. Decode rows take one GEMV dispatch
/// (the norm too where `rms_linear` would fuse it); otherwise a goes through `t` ([M, 2I]
/// scratch) and a SiluMul dispatch, the norm through `h` as in `rms_linear`.
#[allow(clippy::too_many_arguments)]
pub fn rms_linear_glu<'w>(rec: &mut Recorder, x: &Rows, g: &Tensor, eps: f32, w: impl Into<WeightRef<'w>>, y: &Rows, h: &Rows, t: &Rows) -> Result<()> {
    let w = w.into();
    if !glu_fuses(x, w) {
        if !t.cols.is_multiple_of(2) {
            return Err(shape_err("linear", format!("SwiGLU over an odd product ({} columns)", t.cols)));
        }
        rms_linear(rec, x, g, eps, w, Epilogue::default(), t, h)?;
        let half = t.cols / 2;
        let (gate, up) = (Rows { cols: half, ..t.clone() }, Rows { off: t.off + half, cols: half, ..t.clone() });
        return super::elementwise::binary(rec, super::elementwise::Binary::SiluMul, &gate, &up, y);
    }
    if norm_fuses(x, g) {
        return linear_impl(rec, x, w, Epilogue::default(), y, Some((g, eps)), true, None);
    }
    super::norm::rmsnorm(rec, x, g, eps, h)?;
    linear_glu(rec, h, w, y)
}

/// y = silu(a[:, ..I]) * a[:, I..] with a = x·Wᵀ ([M, 2I], w gate's rows over up's): GEMV
/// rows and a weight in one part only (`rms_linear_glu` falls back otherwise).
pub(crate) fn linear_glu(rec: &mut Recorder, x: &Rows, w: WeightRef, y: &Rows) -> Result<()> {
    linear_impl(rec, x, w, Epilogue::default(), y, None, true, None)
}

/// The product behind `linear`, `rms_linear` and their GLU forms: `norm` fuses rmsnorm(x) * g
/// into the GEMV, `glu` SwiGLU (y then has half the weight's rows as columns).
#[allow(clippy::too_many_arguments)]
fn linear_impl(rec: &mut Recorder, x: &Rows, w: WeightRef, ep: Epilogue, y: &Rows, norm: Option<(&Tensor, f32)>, glu: bool, rope: Option<&RopeKv>) -> Result<()> {
    let op = "linear";
    x.check(op)?;
    y.check(op)?;
    let (rows, cols) = match w {
        WeightRef::Dense(d) => (d.rows, d.cols),
        WeightRef::Quant(q) => (q.rows, q.cols),
    };
    let (m, k, n) = (x.rows, x.cols, rows);
    if cols != k {
        return Err(shape_err(op, format!("x has {k} columns, weight is [{rows}, {cols}]")));
    }
    if glu && (!n.is_multiple_of(2) || !glu_fuses(x, w) || ep.bias.is_some() || ep.act != Act::None) {
        return Err(shape_err(op, format!("SwiGLU needs an even weight in one part ([{rows}, {cols}]), at most {GEMV_MAX_ROWS} rows, no bias or activation")));
    }
    let n_out = if glu { n / 2 } else { n };
    if y.rows != m || y.cols != n_out {
        return Err(shape_err(op, format!("output {}x{}, expected {m}x{n_out}", y.rows, y.cols)));
    }
    if x.t.same_buffer(y.t) {
        return Err(shape_err(op, "x and y share a buffer".into()));
    }
    // f32 output from f16 x (flag Y_F32): GEMV rows without SwiGLU or RoPE (the logits).
    let widened = y.t.dtype() == DType::F32 && x.t.dtype() == DType::F16 && m <= GEMV_MAX_ROWS && !glu && rope.is_none();
    if y.t.dtype() != x.t.dtype() && !widened {
        return Err(Error::DType { op, dtype: y.t.dtype().name().into(), detail: format!("output must match x ({}), or be f32 for at most {GEMV_MAX_ROWS} rows", x.t.dtype()) });
    }
    act_flags(op, x.t.dtype())?;
    let dummy;
    let bias = match ep.bias {
        Some(b) => {
            if b.dtype() != DType::F32 || b.len() < n {
                return Err(shape_err(op, format!("bias {:?} {} for {n} outputs (f32 expected)", b.shape(), b.dtype())));
            }
            b
        }
        None => {
            dummy = Tensor::empty(rec.gpu, &[1], DType::F32)?;
            &dummy
        }
    };
    if let Some((g, _)) = norm
        && (m > GEMV_MAX_ROWS || !k.is_multiple_of(4) || g.dtype() != DType::F32 || g.len() != k)
    {
        return Err(shape_err(op, format!("a fused norm needs at most {GEMV_MAX_ROWS} rows, K a multiple of 4 and an f32 weight of {k}")));
    }
    match w {
        WeightRef::Dense(w) => dense(rec, x, w, ep, bias, y, norm, glu, rope),
        WeightRef::Quant(q) => super::qmatmul::qlinear(rec, x, q, ep, bias, y, norm, glu, rope),
    }
}

/// The GEMVs' ROPE parameters (rope_dim, rope_heads, kv_col, kv_cap); zeros without ROPE.
pub(crate) fn rope_fields(rope: Option<&RopeKv>) -> [u32; 4] {
    rope.map_or([0; 4], |r| [r.dim as u32, (r.q_heads + r.kv_heads) as u32, (r.q_heads * r.dim) as u32, r.cache.shape()[0] as u32])
}

/// The epilogue as the kernels' (flags, act) parameters.
pub(crate) fn epilogue_params(ep: &Epilogue) -> (u32, u32) {
    let act = match ep.act {
        Act::None => 0,
        Act::GeluErf => 1,
        Act::GeluTanh => 2,
    };
    (ep.bias.is_some() as u32 | (ep.residual as u32) << 1, act)
}

/// `linear` with a dense weight, after the checks.
#[allow(clippy::too_many_arguments)]
fn dense(rec: &mut Recorder, x: &Rows, w: &RowSplit, ep: Epilogue, bias: &Tensor, y: &Rows, norm: Option<(&Tensor, f32)>, glu: bool, rope: Option<&RopeKv>) -> Result<()> {
    let op = "linear";
    let (m, k) = (x.rows, x.cols);
    let mut flags = act_flags(op, x.t.dtype())?.to_vec();
    if y.t.dtype() != x.t.dtype() {
        flags.push("Y_F32");
    }
    match w.dtype {
        DType::F32 => {}
        DType::F16 => flags.push("W_F16"),
        DType::U32 => return Err(Error::DType { op, dtype: "u32".into(), detail: "weights are f32 or f16".into() }),
    }
    let gemv = m <= GEMV_MAX_ROWS;
    // 16-byte loads need K and every row start of x to be multiples of 8 elements.
    if gemv && k >= 8 && k % 8 == 0 && x.off.is_multiple_of(4) && x.stride.is_multiple_of(4) {
        flags.push("VEC");
    }
    let caps = &rec.gpu.caps;
    if gemv && caps.subgroups && caps.subgroup_min == 32 && caps.subgroup_max == 32 {
        flags.push("SUBGROUPS");
    }
    // ROPE groups take columns in pairs, as GLU does. The 16-byte path is software-pipelined:
    // UNROLL steps only the scalar one (1 elsewhere, so no twin pipelines).
    let unroll = if flags.contains(&"VEC") { 1 } else { gemv_tuning(w.rows).1 };
    let tuning = (gemv_cpg(w.rows, glu || rope.is_some()), unroll);
    let coop = !gemv && coop_fits(rec.gpu, x, w);
    let staged = coop && coop_staged(rec.gpu);
    let narrow = staged && staged_narrow();
    if norm.is_some() {
        if !flags.contains(&"VEC") {
            return Err(shape_err(op, "a fused norm needs the GEMV's 16-byte loads".into()));
        }
        flags.push("NORM");
    }
    if glu {
        flags.push("GLU");
    }
    if rope.is_some() {
        flags.push("ROPE");
    }
    let key = if rope.is_some() {
        PipelineKey::new(GEMV_NORM_ROPE, &flags, &[("CPG", tuning.0), ("UNROLL", tuning.1)])
    } else if norm.is_some() {
        PipelineKey::new(GEMV_NORM, &flags, &[("CPG", tuning.0), ("UNROLL", tuning.1)])
    } else if gemv {
        PipelineKey::new(GEMV, &flags, &[("CPG", tuning.0), ("UNROLL", tuning.1)])
    } else if coop && staged {
        let mut f = vec!["F16"];
        if narrow {
            f.push("BN64");
            if staged_deep(rec.gpu) {
                f.push("BK64");
            }
        }
        if staged_pipe2() {
            f.push("PIPE2");
        }
        PipelineKey::new(GEMM_COOP_STAGED, &f, &[])
    } else if coop {
        PipelineKey::new(GEMM_COOP, &["F16"], &[("NT", coop_tuning().0), ("KU", coop_tuning().1)])
    } else {
        PipelineKey::new(GEMM, &flags, &[])
    };
    let (ep_flags, act) = epilogue_params(&ep);
    let rf = rope_fields(rope);
    for (row0, part) in &w.parts {
        let pn = part.shape()[0];
        u32_of(op, pn * k)?;
        let params = MatmulParams {
            m: m as u32,
            n: if glu || rope.is_some() { pn / 2 } else { pn } as u32,
            k: k as u32,
            x_off: x.off as u32,
            x_stride: x.stride as u32,
            y_off: y.off as u32,
            y_stride: y.stride as u32,
            n_off: *row0 as u32,
            bias_off: *row0 as u32,
            flags: ep_flags,
            act,
            eps: norm.map_or(0.0, |(_, e)| e),
            rope_dim: rf[0],
            rope_heads: rf[1],
            kv_col: rf[2],
            kv_cap: rf[3],
        };
        let wg = if gemv {
            gemv_groups(rec.gpu, pn, tuning.0, m)
        } else if coop && staged {
            [(pn as u32).div_ceil(if narrow { 64 } else { 128 }), (m as u32).div_ceil(64), 1]
        } else if coop {
            [(pn as u32).div_ceil(32 * coop_tuning().0), (m as u32).div_ceil(64), 1]
        } else {
            [(pn as u32).div_ceil(128), (m as u32).div_ceil(128), 1]
        };
        match (norm, rope) {
            (Some((g, _)), Some(r)) => rec.dispatch(&key, &params, &[x.t, part, r.inv_freq, y.t, g, r.seq, r.cache], wg)?,
            (Some((g, _)), None) => rec.dispatch(&key, &params, &[x.t, part, bias, y.t, g], wg)?,
            _ => rec.dispatch(&key, &params, &[x.t, part, bias, y.t], wg)?,
        }
    }
    Ok(())
}

// ---- checks ----

/// Reference y (and per-element magnitude sum |x w|) in f64.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize, act: Act, prev: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; m * n];
    let mut mag = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut a) = (0.0f64, 0.0f64);
            for t in 0..k {
                let p = x[i * k + t] as f64 * w[j * k + t] as f64;
                s += p;
                a += p.abs();
            }
            if let Some(b) = bias {
                s += b[j] as f64;
                a += (b[j] as f64).abs();
            }
            s = match act {
                Act::None => s,
                Act::GeluErf => super::elementwise::Unary::GeluErf.reference(s),
                Act::GeluTanh => super::elementwise::Unary::GeluTanh.reference(s),
            };
            if let Some(p) = prev {
                s += p[i * n + j] as f64;
                a += (p[i * n + j] as f64).abs();
            }
            y[i * n + j] = s;
            mag[i * n + j] = a;
        }
    }
    (y, mag)
}

/// One product of the checks (here and in `ops::qmatmul`).
pub(crate) struct Case {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub bias: bool,
    pub act: Act,
    pub residual: bool,
    /// Weight rows per part (splits under the binding limit).
    pub part_rows: usize,
}

async fn run_case(gpu: &Gpu, rng: &mut Rng, c: &Case, act_dt: DType, w_dt: DType) -> Result<f64, check::CheckError> {
    let x = check::round_to(act_dt, &rng.normals(c.m * c.k, 1.0));
    let w = check::round_to(w_dt, &rng.normals(c.n * c.k, (1.0 / c.k as f32).sqrt()));
    let b = rng.normals(c.n, 0.5);
    let prev = check::round_to(act_dt, &rng.normals(c.m * c.n, 1.0));
    let xt = Tensor::from_f32(gpu, &[c.m, c.k], act_dt, &x)?;
    let wt = RowSplit::from_bytes_parts(gpu, c.n, c.k, w_dt, &w_dt.encode_f32(&w), c.part_rows)?;
    let bt = Tensor::from_f32(gpu, &[c.n], DType::F32, &b)?;
    let yt = if c.residual { Tensor::from_f32(gpu, &[c.m, c.n], act_dt, &prev)? } else { poisoned(gpu, &[c.m, c.n], act_dt)? };
    let mut rec = Recorder::new(gpu);
    let ep = Epilogue { bias: c.bias.then_some(&bt), act: c.act, residual: c.residual };
    linear(&mut rec, &Rows::all(&xt), &wt, ep, &Rows::all(&yt))?;
    rec.finish()?.run(gpu).await?;
    let got = gpu.read_f32(&yt).await?;
    let (want, mag) = reference(&x, &w, c.bias.then_some(&b[..]), c.m, c.k, c.n, c.act, c.residual.then_some(&prev[..]));
    // f32 accumulation: a few ulp of the sum of |terms|; f16 output adds one f16 rounding.
    let tol = if act_dt == DType::F16 { Tol { abs: 1e-6, rel: 1e-3 } } else { Tol { abs: 1e-6, rel: 0.0 } };
    let what = format!("linear {}x{}x{} x:{act_dt} w:{w_dt} parts:{} {:?}", c.m, c.k, c.n, wt.parts.len(), c.act);
    compare_mag(&what, &got, &want, &mag, tol, 4e-6)
}

fn cases() -> Vec<Case> {
    let c = |m, k, n, bias, act, residual, part_rows| Case { m, k, n, bias, act, residual, part_rows };
    vec![
        c(1, 1, 1, false, Act::None, false, usize::MAX),
        c(1, 64, 33, true, Act::None, false, usize::MAX),        // GEMV, 16-byte loads
        c(3, 33, 7, true, Act::GeluErf, false, usize::MAX),      // GEMV, scalar path
        c(8, 5632, 9, false, Act::None, true, usize::MAX),       // GEMV, long K, residual
        c(1, 16, 4096, true, Act::None, false, usize::MAX),      // GEMV, 2 columns per group
        c(2, 16, 8200, false, Act::None, true, usize::MAX),      // GEMV, 4 per group, a ragged end
        c(9, 40, 17, true, Act::GeluTanh, false, usize::MAX),    // GEMM, smallest
        c(33, 64, 130, true, Act::None, true, usize::MAX),       // GEMM, N over one tile
        c(577, 24, 129, false, Act::GeluErf, false, usize::MAX), // GEMM, vision-like rows
        c(130, 257, 33, true, Act::None, false, usize::MAX),     // GEMM, K not a multiple of 8
        // Shapes the tensor-core GEMM takes (f16 x and W where Caps::coop16): edge tiles in
        // both dimensions, then two weight parts with a residual.
        c(77, 80, 50, true, Act::GeluErf, false, usize::MAX),
        c(40, 96, 96, true, Act::None, true, 48),
    ]
}

async fn check_linear(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(10);
    let mut worst = 0.0f64;
    for act_dt in check::act_dtypes(gpu) {
        for w_dt in [DType::F32, DType::F16] {
            for c in cases() {
                worst = worst.max(run_case(gpu, &mut rng, &c, act_dt, w_dt).await?);
            }
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// Weights split into several row blocks (as the 102400-row lm_head is under 128 MiB bindings).
async fn check_linear_split(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(11);
    let mut worst = 0.0f64;
    for w_dt in [DType::F32, DType::F16] {
        for c in [
            Case { m: 1, k: 64, n: 200, bias: true, act: Act::None, residual: false, part_rows: 64 },
            Case { m: 2, k: 48, n: 100, bias: false, act: Act::None, residual: true, part_rows: 17 },
            Case { m: 20, k: 40, n: 300, bias: true, act: Act::GeluErf, residual: false, part_rows: 128 },
        ] {
            worst = worst.max(run_case(gpu, &mut rng, &c, DType::F32, w_dt).await?);
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// Column/row views: x as a column slice of a wider tensor, y written into a column slice.
async fn check_linear_views(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(12);
    let (m, k, n, wide_x, wide_y) = (10, 16, 24, 40, 60);
    let big = rng.normals(m * wide_x, 1.0);
    let w = rng.normals(n * k, 0.3);
    let xt = Tensor::from_f32(gpu, &[m, wide_x], DType::F32, &big)?;
    let wt = RowSplit::from_f32(gpu, n, k, DType::F32, &w)?;
    let yt = poisoned(gpu, &[m, wide_y], DType::F32)?;
    let mut rec = Recorder::new(gpu);
    linear(&mut rec, &Rows::cols(&xt, 8, k), &wt, Epilogue::default(), &Rows::cols(&yt, 30, n))?;
    rec.finish()?.run(gpu).await?;
    let got = gpu.read_f32(&yt).await?;
    let xs: Vec<f32> = (0..m * k).map(|i| big[(i / k) * wide_x + 8 + i % k]).collect();
    let (want, mag) = reference(&xs, &w, None, m, k, n, Act::None, None);
    let sel: Vec<f32> = (0..m * n).map(|i| got[(i / n) * wide_y + 30 + i % n]).collect();
    let err = compare_mag("linear views", &sel, &want, &mag, Tol { abs: 1e-6, rel: 0.0 }, 4e-6)?;
    // Columns outside the written slice must still hold the poison.
    if let Some(i) = (0..m * wide_y).find(|&i| !(30..30 + n).contains(&(i % wide_y)) && !got[i].is_nan()) {
        return Err(format!("linear views: element {i} outside the output slice was written").into());
    }
    Ok(format!("max abs err {err:.2e}"))
}

/// rmsnorm fused into the GEMV (decode rows) and the unfused path (more rows), against rmsnorm
/// then the product in f64.
async fn check_rms_linear(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(13);
    let mut worst = 0.0f64;
    let eps = 1e-6f32;
    for act_dt in check::act_dtypes(gpu) {
        for w_dt in [DType::F32, DType::F16] {
            // Output widths giving 1, 2 and 4 columns per GEMV group.
            // (m, k, n, residual, f32 output): the last two, f16 x with f32 output (Y_F32, the logits).
            for (m, k, n, residual, wide) in [(1, 64, 40, false, false), (3, 2048, 33, true, false), (12, 64, 20, true, false), (1, 16, 4100, false, false), (2, 16, 8200, true, false), (1, 2048, 300, false, true), (3, 40, 33, true, true)] {
                let out_dt = if wide { DType::F32 } else { act_dt };
                let x = check::round_to(act_dt, &rng.normals(m * k, 2.0));
                let g = rng.normals(k, 1.0);
                let w = check::round_to(w_dt, &rng.normals(n * k, (1.0 / k as f32).sqrt()));
                let prev = check::round_to(out_dt, &rng.normals(m * n, 1.0));
                let xt = Tensor::from_f32(gpu, &[m, k], act_dt, &x)?;
                let gt = Tensor::from_f32(gpu, &[k], DType::F32, &g)?;
                let wt = RowSplit::from_f32(gpu, n, k, w_dt, &w)?;
                let yt = if residual { Tensor::from_f32(gpu, &[m, n], out_dt, &prev)? } else { poisoned(gpu, &[m, n], out_dt)? };
                let ht = poisoned(gpu, &[m, k], act_dt)?;
                let mut rec = Recorder::new(gpu);
                let ep = Epilogue { residual, ..Default::default() };
                rms_linear(&mut rec, &Rows::all(&xt), &gt, eps, &wt, ep, &Rows::all(&yt), &Rows::all(&ht))?;
                rec.finish()?.run(gpu).await?;
                let got = gpu.read_f32(&yt).await?;
                let mut h = rms_reference(&x, &g, eps, m, k);
                // The unfused path rounds h to the activation dtype before the product.
                if !norm_fuses(&Rows::all(&xt), &gt) {
                    h = check::round_to(act_dt, &h);
                }
                let (want, mag) = reference(&h, &w, None, m, k, n, Act::None, residual.then_some(&prev[..]));
                // f16 output adds its rounding; f32 output from f16 x only the f32 sums' error.
                let tol = if out_dt == DType::F16 { Tol { abs: 1e-6, rel: 2e-3 } } else { Tol { abs: 1e-6, rel: 0.0 } };
                worst = worst.max(compare_mag(&format!("rms_linear {m}x{k}x{n} x:{act_dt} w:{w_dt} y:{out_dt}"), &got, &want, &mag, tol, 1e-5)?);
            }
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// rmsnorm(x) * g of [m, k] rows in f64, rounded to f32.
pub(crate) fn rms_reference(x: &[f32], g: &[f32], eps: f32, m: usize, k: usize) -> Vec<f32> {
    let mut h = vec![0.0f32; m * k];
    for i in 0..m {
        let row = &x[i * k..(i + 1) * k];
        let inv = 1.0 / ((row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k as f64 + eps as f64).sqrt());
        for j in 0..k {
            h[i * k + j] = (row[j] as f64 * inv * g[j] as f64) as f32;
        }
    }
    h
}

/// SwiGLU of a reference product a ([m, 2 * half], with its magnitudes): silu(gate) * up, and
/// magnitudes the sums' errors carry into it (through silu'(gate) and up), plus |y| for the f32 SiLU.
pub(crate) fn glu_reference(a: &[f64], mag: &[f64], m: usize, half: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut ymag) = (Vec::with_capacity(m * half), Vec::with_capacity(m * half));
    for i in 0..m {
        for j in 0..half {
            let (ig, iu) = (i * 2 * half + j, i * 2 * half + half + j);
            let (gate, up) = (a[ig], a[iu]);
            let sig = 1.0 / (1.0 + (-gate).exp());
            let (silu, dsilu) = (gate * sig, sig * (1.0 + gate * (1.0 - sig)));
            y.push(silu * up);
            ymag.push(dsilu.abs() * mag[ig] * up.abs() + silu.abs() * mag[iu] + (silu * up).abs());
        }
    }
    (y, ymag)
}

/// Runs `linear_glu`, or `rms_linear_glu` when `g` is given, into a poisoned [m, half] output;
/// returns y and whether it took one dispatch.
pub(crate) async fn run_glu(gpu: &Gpu, x: &Tensor, g: Option<(&Tensor, f32)>, w: WeightRef<'_>, half: usize) -> Result<(Vec<f32>, bool), check::CheckError> {
    let xr = Rows::all(x);
    let (m, k, act_dt) = (xr.rows, xr.cols, x.dtype());
    let yt = poisoned(gpu, &[m, half], act_dt)?;
    let ht = poisoned(gpu, &[m, k], act_dt)?;
    let tt = poisoned(gpu, &[m, 2 * half], act_dt)?;
    let mut rec = Recorder::new(gpu);
    match g {
        Some((g, eps)) => rms_linear_glu(&mut rec, &xr, g, eps, w, &Rows::all(&yt), &Rows::all(&ht), &Rows::all(&tt))?,
        None => linear_glu(&mut rec, &xr, w, &Rows::all(&yt))?,
    }
    let fused = rec.len() == 1;
    rec.finish()?.run(gpu).await?;
    Ok((gpu.read_f32(&yt).await?, fused))
}

/// SwiGLU fused into the GEMV, with and without the norm, and `rms_linear_glu`'s fallbacks (more
/// rows; a weight in several parts), against the f64 product followed by silu(gate) * up.
async fn check_linear_glu(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(14);
    let eps = 1e-6f32;
    let mut worst = 0.0f64;
    for act_dt in check::act_dtypes(gpu) {
        for w_dt in [DType::F32, DType::F16] {
            // (m, k, output columns, norm, weight rows per part). Output columns per workgroup
            // are 8 (2 weight rows per group) or 16 (4 per group, from 8200 rows): each width
            // leaves a ragged last workgroup.
            for (m, k, half, norm, part_rows) in [
                (1, 64, 33, false, usize::MAX),  // vec4 x
                (3, 33, 7, false, usize::MAX),   // scalar x
                (2, 16, 4100, false, usize::MAX), // 4 rows per group
                (1, 64, 33, true, usize::MAX),
                (3, 2048, 20, true, usize::MAX), // long K
                (2, 16, 2050, true, usize::MAX),
                (8, 16, 4100, true, usize::MAX),
                (3, 33, 7, true, usize::MAX),    // norm unfused (K not a multiple of 8)
                (12, 64, 20, true, usize::MAX),  // GEMM rows: product, then SiluMul
                (2, 64, 40, true, 24),           // weight in 4 parts: the same
            ] {
                let n = 2 * half;
                let x = check::round_to(act_dt, &rng.normals(m * k, 2.0));
                let g = rng.normals(k, 1.0);
                let w = check::round_to(w_dt, &rng.normals(n * k, (1.0 / k as f32).sqrt()));
                let xt = Tensor::from_f32(gpu, &[m, k], act_dt, &x)?;
                let gt = Tensor::from_f32(gpu, &[k], DType::F32, &g)?;
                let wt = RowSplit::from_bytes_parts(gpu, n, k, w_dt, &w_dt.encode_f32(&w), part_rows)?;
                let in_kernel = glu_fuses(&Rows::all(&xt), (&wt).into()) && (!norm || norm_fuses(&Rows::all(&xt), &gt));
                // Intermediates rounded to f16 (h, or the product) would need looser bounds.
                if !in_kernel && act_dt == DType::F16 {
                    continue;
                }
                let (got, fused) = run_glu(gpu, &xt, norm.then_some((&gt, eps)), (&wt).into(), half).await?;
                let what = format!("linear_glu {m}x{k}x{n} x:{act_dt} w:{w_dt} norm:{norm} parts:{}", wt.parts.len());
                if fused != in_kernel {
                    return Err(format!("{what}: one dispatch {fused}, expected {in_kernel}").into());
                }
                let h = if norm { rms_reference(&x, &g, eps, m, k) } else { x.clone() };
                let (a, amag) = reference(&h, &w, None, m, k, n, Act::None, None);
                let (want, mag) = glu_reference(&a, &amag, m, half);
                let tol = if act_dt == DType::F16 { Tol { abs: 1e-6, rel: 2e-3 } } else { Tol { abs: 1e-6, rel: 0.0 } };
                worst = worst.max(compare_mag(&what, &got, &want, &mag, tol, 1e-5)?);
            }
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_linear, check_linear_split, check_linear_views, check_rms_linear, check_linear_glu);
