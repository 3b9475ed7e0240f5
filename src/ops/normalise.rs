//! Per-channel affine map of a planar [C, H, W] f32 tensor (C <= 4): y = x * scale[c] + shift[c].
//! Image preprocessing uses it for `x / 255` then `(x - mean) / std` (`scale = 1 / (255 std)`,
//! `shift = -mean / std`, computed in f64 and rounded once to f32).

use super::{shape_err, u32_of, WG};
use crate::check::{compare, poisoned, CheckResult, Rng, Tol};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(NormaliseParams("NormaliseParams") {
    n: u32, plane: u32, _pad0: u32, _pad1: u32,
    scale0: f32, scale1: f32, scale2: f32, scale3: f32,
    shift0: f32, shift1: f32, shift2: f32, shift3: f32,
});

const NORMALISE: Kernel = Kernel { shader: "normalise", entry: "normalise", binds: &[Bind::Uniform, Bind::Read, Bind::ReadWrite] };

/// Every pipeline this file can ask for (validated by naga in the tests).
pub fn variants() -> Vec<PipelineKey> {
    vec![PipelineKey::new(NORMALISE, &[], &[])]
}

/// The per-channel (scale, shift) of `(x / 255 - mean) / std`.
pub fn from_mean_std(mean: &[f32], std: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale = std.iter().map(|&s| (1.0 / (255.0 * s as f64)) as f32).collect();
    let shift = mean.iter().zip(std).map(|(&m, &s)| (-(m as f64) / s as f64) as f32).collect();
    (scale, shift)
}

/// y = x * scale[c] + shift[c] over [C, H, W] (or [1, C, H, W]) f32 tensors of the same shape;
/// `scale` and `shift` have C <= 4 entries.
pub fn channel_affine(rec: &mut Recorder, x: &Tensor, scale: &[f32], shift: &[f32], y: &Tensor) -> Result<()> {
    let op = "channel_affine";
    let c = match *x.shape() {
        [c, h, w] | [1, c, h, w] if c * h * w > 0 => c,
        ref s => return Err(shape_err(op, format!("{s:?} is not a non-empty [C, H, W]"))),
    };
    if c > 4 || scale.len() != c || shift.len() != c || y.len() != x.len() {
        return Err(shape_err(op, format!("input {:?}, output {:?}, {} scales, {} shifts", x.shape(), y.shape(), scale.len(), shift.len())));
    }
    for t in [x, y] {
        if t.dtype() != DType::F32 {
            return Err(Error::DType { op, dtype: t.dtype().name().into(), detail: "f32 only".into() });
        }
    }
    let n = u32_of(op, x.len())?;
    let (s, b) = (|i: usize| scale.get(i).copied().unwrap_or(0.0), |i: usize| shift.get(i).copied().unwrap_or(0.0));
    let params = NormaliseParams {
        n,
        plane: n / c as u32,
        scale0: s(0),
        scale1: s(1),
        scale2: s(2),
        scale3: s(3),
        shift0: b(0),
        shift1: b(1),
        shift2: b(2),
        shift3: b(3),
        ..Default::default()
    };
    rec.dispatch(&PipelineKey::new(NORMALISE, &[], &[]), &params, &[x, y], grid(n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

// ---- checks ----

async fn check_channel_affine(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(11);
    let mut worst = 0.0f64;
    for (c, h, w) in [(1, 1, 1), (3, 7, 33), (3, 384, 384), (4, 5, 577)] {
        let n = c * h * w;
        // 8-bit values, as the image canvas holds.
        let x: Vec<f32> = rng.vec(n, 0.0, 255.0).iter().map(|v| v.round()).collect();
        let mean: Vec<f32> = (0..c).map(|i| [0.5, 0.481, 0.458, 0.1][i]).collect();
        let std: Vec<f32> = (0..c).map(|i| [0.5, 0.269, 0.276, 2.0][i]).collect();
        let (scale, shift) = from_mean_std(&mean, &std);
        let xt = Tensor::from_f32(gpu, &[c, h, w], DType::F32, &x)?;
        let y = poisoned(gpu, &[c, h, w], DType::F32)?;
        let mut rec = Recorder::new(gpu);
        channel_affine(&mut rec, &xt, &scale, &shift, &y)?;
        rec.finish()?.run(gpu).await?;
        let got = gpu.read_f32(&y).await?;
        let want: Vec<f64> = (0..n).map(|i| (x[i] as f64 / 255.0 - mean[i / (h * w)] as f64) / std[i / (h * w)] as f64).collect();
        // Values up to ~4: f32 rounding of scale, shift and the fma.
        worst = worst.max(compare(&format!("channel_affine {c}x{h}x{w}"), &got, &want, Tol { abs: 1e-6, rel: 1e-6 })?);
    }
    // Five channels are refused.
    let x = Tensor::empty(gpu, &[5, 1, 1], DType::F32)?;
    let mut rec = Recorder::new(gpu);
    if channel_affine(&mut rec, &x, &[1.0; 5], &[0.0; 5], &x).is_ok() {
        return Err("channel_affine accepted 5 channels".to_string().into());
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_channel_affine);
