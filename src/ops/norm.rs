//! Row normalisation: LayerNorm (weight, bias, eps) and RMSNorm (weight, eps), plus the row
//! softmax. One workgroup per row; statistics in f32.

use super::{act_flags, shape_err, Rows};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(NormParams("NormParams") { rows: u32, cols: u32, x_off: u32, x_stride: u32, y_off: u32, y_stride: u32, eps: f32, _pad0: u32 });
params_struct!(SoftmaxParams("SoftmaxParams") { rows: u32, cols: u32, off: u32, stride: u32 });

const NORM_BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite];
const LAYERNORM: Kernel = Kernel { shader: "norm", entry: "layernorm", binds: NORM_BINDS };
const RMSNORM: Kernel = Kernel { shader: "norm", entry: "rmsnorm", binds: NORM_BINDS };
const SOFTMAX: Kernel = Kernel { shader: "softmax", entry: "softmax", binds: &[Bind::Uniform, Bind::ReadWrite] };

pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for f in [&[][..], &["F16"][..]] {
        v.push(PipelineKey::new(SOFTMAX, f, &[]));
        for sub in [&[][..], &["SUBGROUPS"][..]] {
            let flags: Vec<&'static str> = f.iter().chain(sub).copied().collect();
            v.push(PipelineKey::new(LAYERNORM, &flags, &[]));
            v.push(PipelineKey::new(RMSNORM, &flags, &[]));
        }
    }
    v
}

fn norm(rec: &mut Recorder, kernel: Kernel, x: &Rows, weight: &Tensor, bias: Option<&Tensor>, eps: f32, y: &Rows) -> Result<()> {
    let op = kernel.entry;
    x.check(op)?;
    y.check(op)?;
    if (x.rows, x.cols) != (y.rows, y.cols) {
        return Err(shape_err(op, format!("input {}x{} vs output {}x{}", x.rows, x.cols, y.rows, y.cols)));
    }
    for (name, t) in [("weight", Some(weight)), ("bias", bias)] {
        if let Some(t) = t
            && (t.dtype() != DType::F32 || t.len() != x.cols) {
                return Err(shape_err(op, format!("{name} {:?} {} for {} columns (f32 expected)", t.shape(), t.dtype(), x.cols)));
            }
    }
    if x.t.same_buffer(y.t) || y.t.dtype() != x.t.dtype() {
        return Err(shape_err(op, "output must be a separate tensor of the input's dtype".into()));
    }
    let params = NormParams {
        rows: x.rows as u32,
        cols: x.cols as u32,
        x_off: x.off as u32,
        x_stride: x.stride as u32,
        y_off: y.off as u32,
        y_stride: y.stride as u32,
        eps,
        _pad0: 0,
    };
    let mut flags = act_flags(op, x.t.dtype())?.to_vec();
    if rec.gpu.caps.subgroups {
        flags.push("SUBGROUPS");
    }
    let key = PipelineKey::new(kernel, &flags, &[]);
    let bias = bias.unwrap_or(weight); // rmsnorm never reads it
    rec.dispatch(&key, &params, &[x.t, weight, bias, y.t], grid(x.rows as u32, rec.gpu.caps.max_workgroups_per_dim))
}

/// y = (x - mean) / sqrt(var + eps) * weight + bias over each row (f32 weight and bias).
pub fn layernorm(rec: &mut Recorder, x: &Rows, weight: &Tensor, bias: &Tensor, eps: f32, y: &Rows) -> Result<()> {
    norm(rec, LAYERNORM, x, weight, Some(bias), eps, y)
}

/// y = x / sqrt(mean(x²) + eps) * weight over each row (f32 weight).
pub fn rmsnorm(rec: &mut Recorder, x: &Rows, weight: &Tensor, eps: f32, y: &Rows) -> Result<()> {
    norm(rec, RMSNORM, x, weight, None, eps, y)
}

/// Softmax over each row, in place.
pub fn softmax(rec: &mut Recorder, x: &Rows) -> Result<()> {
    x.check("softmax")?;
    let params = SoftmaxParams { rows: x.rows as u32, cols: x.cols as u32, off: x.off as u32, stride: x.stride as u32 };
    let key = PipelineKey::new(SOFTMAX, act_flags("softmax", x.t.dtype())?, &[]);
    rec.dispatch(&key, &params, &[x.t], grid(x.rows as u32, rec.gpu.caps.max_workgroups_per_dim))
}

// ---- checks ----

fn ref_norm(x: &[f32], w: &[f32], b: Option<&[f32]>, cols: usize, eps: f64) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|row| {
            let n = cols as f64;
            let out: Vec<f64> = match b {
                Some(b) => {
                    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
                    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                    let r = 1.0 / (var + eps).sqrt();
                    row.iter().enumerate().map(|(c, &v)| (v as f64 - mean) * r * w[c] as f64 + b[c] as f64).collect()
                }
                None => {
                    let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n;
                    let r = 1.0 / (ms + eps).sqrt();
                    row.iter().enumerate().map(|(c, &v)| v as f64 * r * w[c] as f64).collect()
                }
            };
            out
        })
        .collect()
}

async fn check_norms(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(20);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        for (rows, cols) in [(1, 1), (7, 33), (3, 577), (2, 2048), (1, 5632), (300, 64)] {
            for layer in [true, false] {
                // An offset mean tests the two-pass variance.
                let x = check::round_to(dt, &rng.normals(rows * cols, 2.0).iter().map(|v| v + 3.0).collect::<Vec<_>>());
                let w = rng.normals(cols, 1.0);
                let b = rng.normals(cols, 1.0);
                let xt = Tensor::from_f32(gpu, &[rows, cols], dt, &x)?;
                let wt = Tensor::from_f32(gpu, &[cols], DType::F32, &w)?;
                let bt = Tensor::from_f32(gpu, &[cols], DType::F32, &b)?;
                let yt = poisoned(gpu, &[rows, cols], dt)?;
                let mut rec = Recorder::new(gpu);
                let eps = 1e-6;
                if layer {
                    layernorm(&mut rec, &Rows::all(&xt), &wt, &bt, eps, &Rows::all(&yt))?;
                } else {
                    rmsnorm(&mut rec, &Rows::all(&xt), &wt, eps, &Rows::all(&yt))?;
                }
                rec.finish()?.run(gpu).await?;
                let got = gpu.read_f32(&yt).await?;
                let want = ref_norm(&x, &w, layer.then_some(&b[..]), cols, eps as f64);
                let tol = if dt == DType::F16 { Tol { abs: 2e-3, rel: 2e-3 } } else { Tol { abs: 2e-5, rel: 2e-5 } };
                let name = if layer { "layernorm" } else { "rmsnorm" };
                worst = worst.max(compare(&format!("{name} {dt} {rows}x{cols}"), &got, &want, tol)?);
            }
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

async fn check_softmax(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(21);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        for (rows, cols) in [(1, 1), (7, 33), (3, 577), (2, 5632)] {
            // Large logits: only a max-subtracted softmax stays finite.
            let x = check::round_to(dt, &rng.vec(rows * cols, -40.0, 90.0));
            let xt = Tensor::from_f32(gpu, &[rows, cols], dt, &x)?;
            let mut rec = Recorder::new(gpu);
            softmax(&mut rec, &Rows::all(&xt))?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&xt).await?;
            let want: Vec<f64> = x
                .chunks(cols)
                .flat_map(|r| {
                    let m = r.iter().fold(f64::MIN, |a, &v| a.max(v as f64));
                    let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
                    r.iter().map(move |&v| (v as f64 - m).exp() / s).collect::<Vec<_>>()
                })
                .collect();
            let tol = if dt == DType::F16 { Tol { abs: 1e-4, rel: 2e-3 } } else { Tol { abs: 1e-7, rel: 2e-5 } };
            worst = worst.max(compare(&format!("softmax {dt} {rows}x{cols}"), &got, &want, tol)?);
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_norms, check_softmax);
