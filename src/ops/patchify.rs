//! Image patches as rows, so a ViT's patch embedding (a P x P, stride-P convolution) runs as a
//! GEMM against the conv weight flattened to [width, C*P*P].

use super::{act_flags, shape_err, u32_of, WG};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(PatchParams("PatchParams") { channels: u32, height: u32, width: u32, psize: u32 });

const PATCHIFY: Kernel = Kernel { shader: "patchify", entry: "patchify", binds: &[Bind::Uniform, Bind::Read, Bind::ReadWrite] };

pub fn variants() -> Vec<PipelineKey> {
    vec![PipelineKey::new(PATCHIFY, &[], &[]), PipelineKey::new(PATCHIFY, &["F16"], &[])]
}

/// img: f32 [C, H, W] (H, W multiples of `patch`) -> out [(H/P)*(W/P), C*P*P] in out's dtype.
pub fn patchify(rec: &mut Recorder, img: &Tensor, patch: usize, out: &Tensor) -> Result<()> {
    let op = "patchify";
    let &[c, h, w] = img.shape() else {
        return Err(shape_err(op, format!("image {:?} is not [C, H, W]", img.shape())));
    };
    if img.dtype() != DType::F32 || patch == 0 || h % patch != 0 || w % patch != 0 {
        return Err(shape_err(op, format!("image {:?} {} with patch {patch}", img.shape(), img.dtype())));
    }
    let rows = (h / patch) * (w / patch);
    if out.shape() != [rows, c * patch * patch] {
        return Err(shape_err(op, format!("out {:?}, expected [{rows}, {}]", out.shape(), c * patch * patch)));
    }
    let n = u32_of(op, out.len())?;
    let params = PatchParams { channels: c as u32, height: h as u32, width: w as u32, psize: patch as u32 };
    let key = PipelineKey::new(PATCHIFY, act_flags(op, out.dtype())?, &[]);
    rec.dispatch(&key, &params, &[img, out], grid(n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

async fn check_patchify(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(70);
    for dt in check::act_dtypes(gpu) {
        for (c, h, w, p) in [(3, 32, 48, 16), (1, 7, 7, 7), (2, 6, 9, 3)] {
            let img = rng.vec(c * h * w, -1.0, 1.0);
            let it = Tensor::from_f32(gpu, &[c, h, w], DType::F32, &img)?;
            let rows = (h / p) * (w / p);
            let out = poisoned(gpu, &[rows, c * p * p], dt)?;
            let mut rec = Recorder::new(gpu);
            patchify(&mut rec, &it, p, &out)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&out).await?;
            let gw = w / p;
            let want: Vec<f64> = (0..rows * c * p * p)
                .map(|i| {
                    let (r, e) = (i / (c * p * p), i % (c * p * p));
                    let (ch, ky, kx) = (e / (p * p), (e / p) % p, e % p);
                    let v = img[(ch * h + (r / gw) * p + ky) * w + (r % gw) * p + kx];
                    check::round_to(dt, &[v])[0] as f64
                })
                .collect();
            compare(&format!("patchify {dt} {c}x{h}x{w}/{p}"), &got, &want, Tol { abs: 0.0, rel: 0.0 })?;
        }
    }
    Ok("exact".into())
}

crate::checks!(check_patchify);
