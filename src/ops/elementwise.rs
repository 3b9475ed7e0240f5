//! Element-wise ops on strided row views: GELU (exact erf and tanh forms), SiLU,
//! SiLU·mul (SwiGLU) and residual add. Arithmetic in f32 for f32 and f16 activations.

use super::{act_flags, same_dtype, shape_err, u32_of, Rows, WG};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{grid, Bind, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(EltParams("EltParams") {
    rows: u32, cols: u32, a_off: u32, a_stride: u32, b_off: u32, b_stride: u32, y_off: u32, y_stride: u32,
});

const UNARY: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::ReadWrite];
const BINARY: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    GeluErf,
    GeluTanh,
    Silu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    SiluMul,
}

const UNARY_KERNEL: Kernel = Kernel { shader: "elementwise", entry: "unary", binds: UNARY };
const BINARY_KERNEL: Kernel = Kernel { shader: "elementwise", entry: "binary", binds: BINARY };

impl Unary {
    /// The shader's `OP` pipeline constant.
    fn op(self) -> u32 {
        match self {
            Unary::GeluErf => 0,
            Unary::GeluTanh => 1,
            Unary::Silu => 2,
        }
    }
    /// f64 reference.
    pub fn reference(self, x: f64) -> f64 {
        match self {
            Unary::GeluErf => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
            Unary::GeluTanh => {
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + u.tanh())
            }
            Unary::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

impl Binary {
    fn op(self) -> u32 {
        match self {
            Binary::Add => 0,
            Binary::SiluMul => 1,
        }
    }
    pub fn reference(self, a: f64, b: f64) -> f64 {
        match self {
            Binary::Add => a + b,
            Binary::SiluMul => a / (1.0 + (-a).exp()) * b,
        }
    }
}

/// Every pipeline this file can ask for (validated by naga in the tests).
pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for flags in [&[][..], &["F16"][..]] {
        for u in [Unary::GeluErf, Unary::GeluTanh, Unary::Silu] {
            v.push(PipelineKey::new(UNARY_KERNEL, flags, &[("OP", u.op())]));
        }
        for b in [Binary::Add, Binary::SiluMul] {
            let f: Vec<&'static str> = flags.iter().copied().chain(["BINARY"]).collect();
            v.push(PipelineKey::new(BINARY_KERNEL, &f, &[("OP", b.op())]));
            let f: Vec<&'static str> = flags.iter().copied().chain(["BINARY", "VEC4"]).collect();
            v.push(PipelineKey::new(BINARY_KERNEL, &f, &[("OP", b.op())]));
        }
    }
    v
}

fn same_extent(op: &'static str, a: &Rows, y: &Rows) -> Result<()> {
    if a.rows != y.rows || a.cols != y.cols {
        return Err(shape_err(op, format!("input {}x{} vs output {}x{}", a.rows, a.cols, y.rows, y.cols)));
    }
    Ok(())
}

/// y = f(a), element-wise over the view. `y` must not share a buffer with `a`.
pub fn unary(rec: &mut Recorder, f: Unary, a: &Rows, y: &Rows) -> Result<()> {
    let op = "unary";
    a.check(op)?;
    y.check(op)?;
    same_extent(op, a, y)?;
    same_dtype(op, a.t.dtype(), &[y.t])?;
    let n = u32_of(op, a.rows * a.cols)?;
    let params = EltParams {
        rows: a.rows as u32,
        cols: a.cols as u32,
        a_off: a.off as u32,
        a_stride: a.stride as u32,
        b_off: 0,
        b_stride: 0,
        y_off: y.off as u32,
        y_stride: y.stride as u32,
    };
    let key = PipelineKey::new(UNARY_KERNEL, act_flags(op, a.t.dtype())?, &[("OP", f.op())]);
    rec.dispatch(&key, &params, &[a.t, y.t], grid(n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// y = f(a, b), element-wise over the views.
pub fn binary(rec: &mut Recorder, f: Binary, a: &Rows, b: &Rows, y: &Rows) -> Result<()> {
    let op = "binary";
    a.check(op)?;
    b.check(op)?;
    y.check(op)?;
    same_extent(op, a, y)?;
    same_extent(op, b, y)?;
    same_dtype(op, a.t.dtype(), &[b.t, y.t])?;
    let n = u32_of(op, a.rows * a.cols)?;
    let params = EltParams {
        rows: a.rows as u32,
        cols: a.cols as u32,
        a_off: a.off as u32,
        a_stride: a.stride as u32,
        b_off: b.off as u32,
        b_stride: b.stride as u32,
        y_off: y.off as u32,
        y_stride: y.stride as u32,
    };
    let mut flags = act_flags(op, a.t.dtype())?.to_vec();
    flags.push("BINARY");
    // Four elements per invocation where no vector can straddle a row or start unaligned.
    let vec4 = a.cols.is_multiple_of(4) && [a, b, y].iter().all(|r| r.off.is_multiple_of(4) && r.stride.is_multiple_of(4));
    if vec4 {
        flags.push("VEC4");
    }
    let per = if vec4 { 4 * WG } else { WG };
    let key = PipelineKey::new(BINARY_KERNEL, &flags, &[("OP", f.op())]);
    rec.dispatch(&key, &params, &[a.t, b.t, y.t], grid(n.div_ceil(per), rec.gpu.caps.max_workgroups_per_dim))
}

// ---- checks ----

async fn check_unary(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(1);
    let mut report = Vec::new();
    for dtype in check::act_dtypes(gpu) {
        for f in [Unary::GeluErf, Unary::GeluTanh, Unary::Silu] {
            for (rows, cols) in [(1, 1), (7, 33), (3, 577), (2, 5632)] {
                let n = rows * cols;
                // Wide range, including large |x| where tanh/exp can overflow.
                let mut x = rng.vec(n, -8.0, 8.0);
                if n > 4 {
                    x[0] = -30.0;
                    x[1] = 30.0;
                    x[2] = 0.0;
                    x[3] = -1e-4;
                }
                let x = check::round_to(dtype, &x);
                let a = Tensor::from_f32(gpu, &[rows, cols], dtype, &x)?;
                let y = poisoned(gpu, &[rows, cols], dtype)?;
                let mut rec = Recorder::new(gpu);
                unary(&mut rec, f, &Rows::all(&a), &Rows::all(&y))?;
                rec.finish()?.run(gpu).await?;
                let got = gpu.read_f32(&y).await?;
                let want: Vec<f64> = x.iter().map(|&v| f.reference(v as f64)).collect();
                // f32: the 1e-6 absolute bound torch parity needs; f16: one rounding of the output.
                let tol = if dtype == crate::gpu::DType::F16 { Tol { abs: 1e-3, rel: 1e-3 } } else { Tol { abs: 1e-6, rel: 1e-6 } };
                let err = compare(&format!("{f:?} {dtype} {rows}x{cols}"), &got, &want, tol)?;
                report.push(format!("{f:?}/{dtype}/{n}:{err:.1e}"));
            }
        }
    }
    Ok(report.join(" "))
}

async fn check_binary_strided(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(2);
    let mut worst = 0.0f64;
    for dtype in check::act_dtypes(gpu) {
        for f in [Binary::Add, Binary::SiluMul] {
            // (rows, cols, first column): a and b are column slices of one fused
            // [rows, 2 * cols + 4] tensor (as gate|up); from column 0, with cols a multiple of
            // 4, they take the 4-wide path (VEC4).
            for (rows, cols, c0) in [(1, 1, 1), (7, 33, 1), (5, 577, 1), (1, 5632, 1), (3, 64, 0), (7, 36, 0), (2, 5632, 0)] {
                let wide = 2 * cols + 4;
                let src = check::round_to(dtype, &rng.vec(rows * wide, -6.0, 6.0));
                let ab = Tensor::from_f32(gpu, &[rows, wide], dtype, &src)?;
                let y = poisoned(gpu, &[rows, cols], dtype)?;
                let mut rec = Recorder::new(gpu);
                binary(&mut rec, f, &Rows::cols(&ab, c0, cols), &Rows::cols(&ab, c0 + cols, cols), &Rows::all(&y))?;
                rec.finish()?.run(gpu).await?;
                let got = gpu.read_f32(&y).await?;
                let want: Vec<f64> = (0..rows * cols)
                    .map(|i| {
                        let (r, c) = (i / cols, i % cols);
                        f.reference(src[r * wide + c0 + c] as f64, src[r * wide + c0 + cols + c] as f64)
                    })
                    .collect();
                let tol = if dtype == crate::gpu::DType::F16 { Tol { abs: 2e-3, rel: 2e-3 } } else { Tol { abs: 1e-6, rel: 1e-6 } };
                worst = worst.max(compare(&format!("{f:?} {dtype} {rows}x{cols}"), &got, &want, tol)?);
            }
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_unary, check_binary_strided);
