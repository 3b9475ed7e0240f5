//! Linear layers and embedding rows with quantised weights (`quant::QMatrix`): fused
//! dequantise-and-multiply kernels that read the packed codes directly; no dequantised copy of
//! a matrix exists anywhere. Activations are f32 or f16 (f16 needs SHADER_F16); codes and scales
//! are read as u32 everywhere. Reached through `matmul::linear` and `embedding::gather`, which
//! dispatch on the weight. Few rows use `qgemv`, many the tiled `qgemm`; one dispatch per row
//! block, as for dense weights.

use super::matmul::{epilogue_params, gemv_cpg, gemv_groups, reference, Act, Case, Epilogue, GEMV_MAX_ROWS};
use super::{act_flags, shape_err, u32_of, Rows, WG};
use crate::check::{self, compare, compare_mag, poisoned, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;
use super::rope::RopeKv;
use crate::quant::{Packed, QFormat, QMatrix};

params_struct!(QMatmulParams("QMatmulParams") {
    m: u32, n: u32, k: u32, x_off: u32, x_stride: u32, y_off: u32, y_stride: u32, n_off: u32,
    bias_off: u32, flags: u32, act: u32, group: u32, row_words: u32, row_groups: u32, eps: f32, _pad1: u32,
    rope_dim: u32, rope_heads: u32, kv_col: u32, kv_cap: u32,
});
params_struct!(QEmbedParams("QEmbedParams") {
    n_tok: u32, hidden: u32, row0: u32, part_rows: u32, vocab: u32, group: u32, row_words: u32, row_groups: u32,
});

const BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite];
const QGEMM: Kernel = Kernel { shader: "qmatmul", entry: "qgemm", binds: BINDS };
/// The tensor-core GEMM with W dequantised while staged (`shaders/qmatmul_coop.wgsl`).
const QGEMM_COOP: Kernel = Kernel { shader: "qmatmul_coop", entry: "qgemm_coop", binds: BINDS };
const QGEMV: Kernel = Kernel { shader: "qmatmul", entry: "qgemv", binds: BINDS };
/// qgemv over rmsnorm(x) * g, the norm weight g bound last.
const QGEMV_NORM: Kernel = Kernel { shader: "qmatmul", entry: "qgemv", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite, Bind::Read] };
const QGATHER: Kernel = Kernel { shader: "qembed", entry: "qgather", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite] };

fn format_flags(f: QFormat) -> &'static [&'static str] {
    match (f.bits, f.zero) {
        (4, true) => &["Q4", "ZERO"],
        (4, false) => &["Q4"],
        _ => &[],
    }
}

/// QGEMV_NORM with the rotary embedding and KV append (ROPE): frequencies in the bias's place,
/// then seq and the cache.
const QGEMV_NORM_ROPE: Kernel = Kernel {
    shader: "qmatmul",
    entry: "qgemv",
    binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite, Bind::Read, Bind::Read, Bind::ReadWrite],
};

pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for act in [&[][..], &["F16"][..]] {
        for fmt in [QFormat::q8(0), QFormat::q4(32, false), QFormat::q4(32, true)] {
            let base: Vec<&'static str> = act.iter().chain(format_flags(fmt)).copied().collect();
            v.push(PipelineKey::new(QGEMM, &base, &[]));
            v.push(PipelineKey::new(QGATHER, &base, &[]));
            if !act.is_empty() {
                for extra in [&[][..], &["BN64"], &["PIPE2"], &["BN64", "PIPE2"]] {
                    let f: Vec<&'static str> = base.iter().chain(extra).copied().collect();
                    v.push(PipelineKey::new(QGEMM_COOP, &f, &[]));
                }
            }
            for extra in [&[][..], &["VEC"], &["SUBGROUPS"], &["VEC", "SUBGROUPS"]] {
                for fused in [&[][..], &["GLU"], &["NORM"], &["NORM", "GLU"]] {
                    let f: Vec<&'static str> = base.iter().chain(extra).chain(fused).copied().collect();
                    v.push(PipelineKey::new(if fused.contains(&"NORM") { QGEMV_NORM } else { QGEMV }, &f, &[]));
                }
                if extra.contains(&"VEC") {
                    let f: Vec<&'static str> = base.iter().chain(extra).chain(&["NORM", "ROPE"]).copied().collect();
                    v.push(PipelineKey::new(QGEMV_NORM_ROPE, &f, &[]));
                }
                // f32 logits from f16 activations.
                if !act.is_empty() {
                    for fused in [&[][..], &["NORM"]] {
                        let f: Vec<&'static str> = base.iter().chain(extra).chain(fused).chain(&["Y_F32"]).copied().collect();
                        v.push(PipelineKey::new(if fused.is_empty() { QGEMV } else { QGEMV_NORM }, &f, &[]));
                    }
                }
            }
        }
    }
    v
}

/// Whether the tensor-core kernel takes this product (prefill and vision rows, f16 x, whole
/// 16-deep k steps, 16-byte aligned rows), where the f16 GEMM would get tensor cores. It stages
/// the dequantised weights as f16, one more rounding than the other kernels.
fn takes_coop(gpu: &Gpu, x: &Rows) -> bool {
    x.rows > GEMV_MAX_ROWS && super::matmul::coop_staged(gpu) && super::matmul::coop_x_fits(gpu, x)
}

/// `matmul::linear` with a quantised weight, after its shape, dtype and bias checks (and those
/// of the GEMV fusions: `norm` rmsnorm(x) * g, `glu` SwiGLU, as in the dense GEMV).
#[allow(clippy::too_many_arguments)]
pub(crate) fn qlinear(rec: &mut Recorder, x: &Rows, w: &QMatrix, ep: Epilogue, bias: &Tensor, y: &Rows, norm: Option<(&Tensor, f32)>, glu: bool, rope: Option<&RopeKv>) -> Result<()> {
    let op = "linear";
    let (m, k) = (x.rows, x.cols);
    let mut flags = act_flags(op, x.t.dtype())?.to_vec();
    flags.extend(format_flags(w.fmt));
    if y.t.dtype() != x.t.dtype() {
        flags.push("Y_F32");
    }
    let gemv = m <= GEMV_MAX_ROWS;
    if gemv && k.is_multiple_of(32) && x.off.is_multiple_of(4) && x.stride.is_multiple_of(4) {
        flags.push("VEC");
    }
    let caps = &rec.gpu.caps;
    if gemv && caps.subgroups && caps.subgroup_min == 32 && caps.subgroup_max == 32 {
        flags.push("SUBGROUPS");
    }
    if norm.is_some() {
        flags.push("NORM");
    }
    if glu {
        flags.push("GLU");
    }
    if rope.is_some() {
        flags.push("ROPE");
    }
    // ROPE groups take columns in pairs, as GLU does.
    let cpg = gemv_cpg(w.rows, glu || rope.is_some());
    let coop = takes_coop(rec.gpu, x);
    let narrow = coop && super::matmul::staged_narrow();
    let key = if gemv {
        let kernel = if rope.is_some() {
            QGEMV_NORM_ROPE
        } else if norm.is_some() {
            QGEMV_NORM
        } else {
            QGEMV
        };
        PipelineKey::new(kernel, &flags, &[("CPG", cpg)])
    } else if coop {
        let mut f: Vec<&str> = flags.iter().copied().filter(|f| *f != "VEC").collect();
        if narrow {
            f.push("BN64");
        }
        if super::matmul::staged_pipe2() {
            f.push("PIPE2");
        }
        PipelineKey::new(QGEMM_COOP, &f, &[])
    } else {
        PipelineKey::new(QGEMM, &flags, &[])
    };
    let (ep_flags, act) = epilogue_params(&ep);
    let l = &w.layout;
    let rf = super::matmul::rope_fields(rope);
    for part in &w.parts {
        u32_of(op, part.rows * l.row_words)?;
        let params = QMatmulParams {
            m: m as u32,
            n: if glu || rope.is_some() { part.rows / 2 } else { part.rows } as u32,
            k: k as u32,
            x_off: x.off as u32,
            x_stride: x.stride as u32,
            y_off: y.off as u32,
            y_stride: y.stride as u32,
            n_off: part.row0 as u32,
            bias_off: part.row0 as u32,
            flags: ep_flags,
            act,
            group: l.group as u32,
            row_words: l.row_words as u32,
            row_groups: l.row_groups as u32,
            eps: norm.map_or(0.0, |(_, e)| e),
            rope_dim: rf[0],
            rope_heads: rf[1],
            kv_col: rf[2],
            kv_cap: rf[3],
            ..Default::default()
        };
        let wg = if gemv {
            gemv_groups(rec.gpu, part.rows, cpg, m)
        } else if coop {
            [(part.rows as u32).div_ceil(if narrow { 64 } else { 128 }), (m as u32).div_ceil(64), 1]
        } else {
            [(part.rows as u32).div_ceil(128), (m as u32).div_ceil(128), 1]
        };
        match (norm, rope) {
            (Some((g, _)), Some(r)) => rec.dispatch(&key, &params, &[x.t, &part.codes, &part.scales, r.inv_freq, y.t, g, r.seq, r.cache], wg)?,
            (Some((g, _)), None) => rec.dispatch(&key, &params, &[x.t, &part.codes, &part.scales, bias, y.t, g], wg)?,
            _ => rec.dispatch(&key, &params, &[x.t, &part.codes, &part.scales, bias, y.t], wg)?,
        }
    }
    Ok(())
}

/// `embedding::gather` from a quantised table: out[t] = deq(table)[ids[t]] (zeros for ids >=
/// vocab), after its shape checks.
pub(crate) fn qgather(rec: &mut Recorder, ids: &Tensor, table: &QMatrix, out: &Tensor) -> Result<()> {
    let op = "embedding";
    let n_tok = ids.len();
    let mut flags = act_flags(op, out.dtype())?.to_vec();
    flags.extend(format_flags(table.fmt));
    let key = PipelineKey::new(QGATHER, &flags, &[]);
    let n = u32_of(op, n_tok * table.cols)?;
    let l = &table.layout;
    for part in &table.parts {
        let params = QEmbedParams {
            n_tok: n_tok as u32,
            hidden: table.cols as u32,
            row0: part.row0 as u32,
            part_rows: part.rows as u32,
            vocab: u32_of(op, table.rows)?,
            group: l.group as u32,
            row_words: l.row_words as u32,
            row_groups: l.row_groups as u32,
        };
        rec.dispatch(&key, &params, &[ids, &part.codes, &part.scales, out], grid(n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))?;
    }
    if table.parts.is_empty() {
        return Err(shape_err(op, "empty table".into()));
    }
    Ok(())
}

// ---- checks: against the CPU twin (`Packed::dequantize`) in f64 ----


/// Runs one case; returns the max abs error. The weights are the CPU twin's dequantised values,
/// so the only differences are summation order and the f16 output rounding.
async fn run_case(gpu: &Gpu, rng: &mut Rng, c: &Case, act_dt: DType, fmt: QFormat) -> Result<f64, check::CheckError> {
    let x = check::round_to(act_dt, &rng.normals(c.m * c.k, 1.0));
    let w = rng.normals(c.n * c.k, (1.0 / c.k as f32).sqrt());
    let packed = Packed::quantize(fmt, c.n, c.k, &w)?;
    let mut deq = packed.dequantize();
    let b = rng.normals(c.n, 0.5);
    let prev = check::round_to(act_dt, &rng.normals(c.m * c.n, 1.0));
    let xt = Tensor::from_f32(gpu, &[c.m, c.k], act_dt, &x)?;
    if takes_coop(gpu, &Rows::all(&xt)) {
        // The tensor-core kernel multiplies the dequantised weights rounded to f16.
        deq = check::round_to(DType::F16, &deq);
    }
    let wt = QMatrix::upload_parts(gpu, &packed, c.part_rows)?;
    let bt = Tensor::from_f32(gpu, &[c.n], DType::F32, &b)?;
    let yt = if c.residual { Tensor::from_f32(gpu, &[c.m, c.n], act_dt, &prev)? } else { poisoned(gpu, &[c.m, c.n], act_dt)? };
    let mut rec = Recorder::new(gpu);
    let ep = Epilogue { bias: c.bias.then_some(&bt), act: c.act, residual: c.residual };
    super::matmul::linear(&mut rec, &Rows::all(&xt), &wt, ep, &Rows::all(&yt))?;
    rec.finish()?.run(gpu).await?;
    let got = gpu.read_f32(&yt).await?;
    let (want, mag) = reference(&x, &deq, c.bias.then_some(&b[..]), c.m, c.k, c.n, c.act, c.residual.then_some(&prev[..]));
    // f32 sums of x * code, scaled once per 32-column chunk: a few ulp of the sum of |terms|
    // (offsets add m * sum(x), whose terms can exceed |x w|); f16 output adds one f16 rounding.
    let tol = if act_dt == DType::F16 { Tol { abs: 1e-6, rel: 1e-3 } } else { Tol { abs: 1e-6, rel: 0.0 } };
    let what = format!("qlinear {fmt} {}x{}x{} x:{act_dt} parts:{} {:?}", c.m, c.k, c.n, wt.parts.len(), c.act);
    compare_mag(&what, &got, &want, &mag, tol, 2e-5)
}

fn formats() -> [QFormat; 4] {
    [QFormat::q8(0), QFormat::q8(32), QFormat::q4(32, false), QFormat::q4(64, true)]
}

async fn check_qlinear(gpu: &Gpu) -> CheckResult {
    let c = |m, k, n, bias, act, residual| Case { m, k, n, bias, act, residual, part_rows: usize::MAX };
    let cases = [
        c(1, 64, 33, true, Act::None, false),     // GEMV, vec4 x, two groups of 32
        c(3, 40, 7, true, Act::GeluErf, false),   // GEMV, scalar x, K padded to 64
        c(8, 1056, 9, false, Act::None, true),    // GEMV, 33 chunks: lanes with two
        c(1, 64, 4096, true, Act::None, false),   // GEMV, 2 rows per group
        c(2, 32, 8200, false, Act::None, true),   // GEMV, 4 rows per group, a ragged end
        c(9, 72, 17, true, Act::GeluTanh, false), // GEMM, smallest; K padded
        c(33, 96, 130, true, Act::None, true),    // GEMM, N over one tile
        c(130, 100, 33, false, Act::None, false), // GEMM, M over one tile, K not a multiple of 8
        c(70, 80, 140, true, Act::GeluErf, true), // GEMM; where tensor cores take it: two row tiles, a half k step
    ];
    let mut rng = Rng::new(20);
    let mut worst = 0.0f64;
    for act_dt in check::act_dtypes(gpu) {
        for fmt in formats() {
            for c in &cases {
                worst = worst.max(run_case(gpu, &mut rng, c, act_dt, fmt).await?);
            }
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// Row blocks (the lm_head under 128 MiB bindings) and x as a column slice of a wider tensor.
async fn check_qlinear_split(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(21);
    let mut worst = 0.0f64;
    for fmt in formats() {
        for c in [
            Case { m: 1, k: 64, n: 200, bias: true, act: Act::None, residual: false, part_rows: 64 },
            Case { m: 2, k: 48, n: 100, bias: false, act: Act::None, residual: true, part_rows: 17 },
            Case { m: 20, k: 40, n: 300, bias: true, act: Act::GeluErf, residual: false, part_rows: 128 },
        ] {
            worst = worst.max(run_case(gpu, &mut rng, &c, DType::F32, fmt).await?);
        }
    }
    // x columns 8..40 of a 44-wide tensor (scalar loads), y into columns 5..21 of a 30-wide one.
    let (m, k, n, wide_x, wide_y) = (3, 32, 16, 44, 30);
    let big = rng.normals(m * wide_x, 1.0);
    let packed = Packed::quantize(QFormat::q4(32, true), n, k, &rng.normals(n * k, 0.2))?;
    let xt = Tensor::from_f32(gpu, &[m, wide_x], DType::F32, &big)?;
    let yt = poisoned(gpu, &[m, wide_y], DType::F32)?;
    let mut rec = Recorder::new(gpu);
    super::matmul::linear(&mut rec, &Rows::cols(&xt, 8, k), &QMatrix::upload(gpu, &packed)?, Epilogue::default(), &Rows::cols(&yt, 5, n))?;
    rec.finish()?.run(gpu).await?;
    let got = gpu.read_f32(&yt).await?;
    let xs: Vec<f32> = (0..m * k).map(|i| big[(i / k) * wide_x + 8 + i % k]).collect();
    let (want, mag) = reference(&xs, &packed.dequantize(), None, m, k, n, Act::None, None);
    let sel: Vec<f32> = (0..m * n).map(|i| got[(i / n) * wide_y + 5 + i % n]).collect();
    worst = worst.max(compare_mag("qlinear views", &sel, &want, &mag, Tol { abs: 1e-6, rel: 0.0 }, 2e-5)?);
    if let Some(i) = (0..m * wide_y).find(|&i| !(5..5 + n).contains(&(i % wide_y)) && !got[i].is_nan()) {
        return Err(format!("qlinear views: element {i} outside the output slice was written").into());
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// Embedding rows from quantised tables in several parts: exact copies of the CPU twin's rows
/// (one f16 rounding for f16 output); an id past the vocabulary gives zeros.
async fn check_qembed(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(22);
    let (vocab, hidden) = (300, 72);
    let ids: Vec<u32> = vec![0, 63, 64, 299, 300, 17, 128];
    let idt = Tensor::from_u32(gpu, &[ids.len()], &ids)?;
    for fmt in formats() {
        let packed = Packed::quantize(fmt, vocab, hidden, &rng.normals(vocab * hidden, 0.1))?;
        let deq = packed.dequantize();
        let table = QMatrix::upload_parts(gpu, &packed, 64)?;
        for act in check::act_dtypes(gpu) {
            let out = poisoned(gpu, &[ids.len(), hidden], act)?;
            let mut rec = Recorder::new(gpu);
            super::embedding::gather(&mut rec, &idt, &table, &out)?;
            rec.finish()?.run(gpu).await?;
            let deq = &deq;
            let want: Vec<f64> = ids.iter().flat_map(|&id| (0..hidden).map(move |c| if (id as usize) < vocab { deq[id as usize * hidden + c] as f64 } else { 0.0 })).collect();
            // d * q (+ m) in f32 may round differently from the CPU's by an ulp.
            let tol = if act == DType::F16 { Tol { abs: 3e-8, rel: 4.9e-4 } } else { Tol { abs: 1e-9, rel: 2.4e-7 } };
            compare(&format!("qgather {fmt} -> {act}"), &gpu.read_f32(&out).await?, &want, tol)?;
        }
    }
    Ok(format!("{vocab}x{hidden} tables in {} parts, 4 formats", vocab.div_ceil(64)))
}

/// The GEMV fusions with quantised weights: rmsnorm (`rms_linear`) and SwiGLU (`linear_glu`,
/// `rms_linear_glu`) in one dispatch for decode rows, and the unfused paths for more rows,
/// against the CPU twin's dequantised weights in f64.
async fn check_qlinear_fused(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(23);
    let eps = 1e-6f32;
    let mut worst = 0.0f64;
    for act_dt in check::act_dtypes(gpu) {
        for fmt in formats() {
            // (m, k, output columns, norm, glu, residual). With GLU, 8 output columns per
            // workgroup (2 weight rows per group) or 16 (4 per group, from 8200 rows); every width
            // leaves a ragged last workgroup.
            for (m, k, cols, norm, glu, residual, wide) in [
                (1, 64, 40, true, false, false, false),    // vec4 x
                (3, 40, 33, true, false, true, false),     // scalar x (K not a multiple of 32)
                (2, 2048, 20, true, false, true, false),   // long K
                (1, 64, 4100, true, false, false, false),  // 2 rows per group
                (2, 32, 8200, true, false, true, false),   // 4 rows per group, a ragged end
                (12, 64, 20, true, false, false, false),   // GEMM rows: rmsnorm, then the product
                (1, 64, 33, false, true, false, false),    // vec4 x
                (3, 36, 7, false, true, false, false),     // scalar x, K padded
                (2, 32, 4100, false, true, false, false),  // 4 rows per group
                (1, 64, 33, true, true, false, false),
                (4, 40, 21, true, true, false, false),     // norm with scalar x
                (1, 256, 2050, true, true, false, false),  // 2 rows per group
                (12, 64, 20, true, true, false, false),    // GEMM rows: product, then SiluMul
                (1, 2048, 300, true, false, false, true), // f32 output (Y_F32: the logits)
                (3, 40, 33, true, false, true, true),     // the same, scalar x
            ] {
                let n = if glu { 2 * cols } else { cols };
                // f32 output from f16 x where asked (the same as act_dt with f32 activations).
                let out_dt = if wide { DType::F32 } else { act_dt };
                let x = check::round_to(act_dt, &rng.normals(m * k, 2.0));
                let g = rng.normals(k, 1.0);
                let packed = Packed::quantize(fmt, n, k, &rng.normals(n * k, (1.0 / k as f32).sqrt()))?;
                let mut deq = packed.dequantize();
                let prev = check::round_to(out_dt, &rng.normals(m * cols, 1.0));
                let xt = Tensor::from_f32(gpu, &[m, k], act_dt, &x)?;
                let gt = Tensor::from_f32(gpu, &[k], DType::F32, &g)?;
                let wt = QMatrix::upload(gpu, &packed)?;
                let xr = Rows::all(&xt);
                if takes_coop(gpu, &xr) {
                    deq = check::round_to(DType::F16, &deq);
                }
                let in_kernel = m <= GEMV_MAX_ROWS && (!norm || super::matmul::norm_fuses(&xr, &gt));
                // Intermediates rounded to f16 (h, or the product) would need looser bounds.
                if !in_kernel && act_dt == DType::F16 {
                    continue;
                }
                let what = format!("qlinear {fmt} {m}x{k}x{n} x:{act_dt} y:{out_dt} norm:{norm} glu:{glu}");
                let (got, fused) = if glu {
                    super::matmul::run_glu(gpu, &xt, norm.then_some((&gt, eps)), (&wt).into(), cols).await?
                } else {
                    let yt = if residual { Tensor::from_f32(gpu, &[m, n], out_dt, &prev)? } else { poisoned(gpu, &[m, n], out_dt)? };
                    let ht = poisoned(gpu, &[m, k], act_dt)?;
                    let mut rec = Recorder::new(gpu);
                    let ep = Epilogue { residual, ..Default::default() };
                    super::matmul::rms_linear(&mut rec, &xr, &gt, eps, &wt, ep, &Rows::all(&yt), &Rows::all(&ht))?;
                    let fused = rec.len() == 1;
                    rec.finish()?.run(gpu).await?;
                    (gpu.read_f32(&yt).await?, fused)
                };
                if fused != in_kernel {
                    return Err(format!("{what}: one dispatch {fused}, expected {in_kernel}").into());
                }
                let h = if norm { super::matmul::rms_reference(&x, &g, eps, m, k) } else { x.clone() };
                let (a, amag) = reference(&h, &deq, None, m, k, n, Act::None, (residual && !glu).then_some(&prev[..]));
                let (want, mag) = if glu { super::matmul::glu_reference(&a, &amag, m, cols) } else { (a, amag) };
                let tol = if out_dt == DType::F16 { Tol { abs: 1e-6, rel: 2e-3 } } else { Tol { abs: 1e-6, rel: 0.0 } };
                worst = worst.max(compare_mag(&what, &got, &want, &mag, tol, 2e-5)?);
            }
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_qlinear, check_qlinear_split, check_qembed, check_qlinear_fused);
