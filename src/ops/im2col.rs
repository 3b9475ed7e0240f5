//! Convolution inputs as rows (im2col), so a k x k convolution is one GEMM (tensor cores where
//! the adapter has them) against its weight flattened to [Cout, Cin*k*k]. SAM's neck and
//! downsample convs run this way; `UPSAMPLE` samples the bilinear resize that precedes the
//! first downsample conv on the fly instead of storing it.

use super::{act_flags, same_dtype, shape_err, u32_of, WG};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{grid, Bind, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(Im2colParams("Im2colParams") {
    c: u32, h: u32, w: u32, k: u32, stride: u32, pad: u32, ch: u32, cw: u32, ho: u32, wo: u32, scale_h: f32, scale_w: f32,
});

const IM2COL: Kernel = Kernel { shader: "im2col", entry: "im2col", binds: &[Bind::Uniform, Bind::Read, Bind::ReadWrite] };

pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for f in [&[][..], &["F16"], &["UPSAMPLE"], &["F16", "UPSAMPLE"]] {
        v.push(PipelineKey::new(IM2COL, f, &[]));
    }
    v
}

/// A k x k convolution's geometry over token-major input.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Window {
    /// Output side for an input side `n`.
    pub fn out(&self, n: usize) -> usize {
        (n + 2 * self.pad).saturating_sub(self.k) / self.stride + 1
    }
}

/// x: token-major [h*w, C] → out [ho*wo, C*k*k], columns in (c, ky, kx) order (PyTorch's weight
/// order). `upsample`: the convolution reads x bilinearly resized to that (height, width).
/// Returns (ho, wo).
pub fn im2col(rec: &mut Recorder, x: &Tensor, (h, w): (usize, usize), win: Window, upsample: Option<(usize, usize)>, out: &Tensor) -> Result<(usize, usize)> {
    let op = "im2col";
    let (ch, cw) = upsample.unwrap_or((h, w));
    if h == 0 || w == 0 || win.k == 0 || win.stride == 0 || ch + 2 * win.pad < win.k || cw + 2 * win.pad < win.k || !x.len().is_multiple_of(h * w) {
        return Err(shape_err(op, format!("input {:?} as {h}x{w}, conv input {ch}x{cw}, {win:?}", x.shape())));
    }
    let c = x.len() / (h * w);
    let (ho, wo) = (win.out(ch), win.out(cw));
    if out.shape() != [ho * wo, c * win.k * win.k] {
        return Err(shape_err(op, format!("out {:?}, expected [{}, {}]", out.shape(), ho * wo, c * win.k * win.k)));
    }
    same_dtype(op, x.dtype(), &[out])?;
    let mut flags = act_flags(op, x.dtype())?.to_vec();
    if upsample.is_some() {
        flags.push("UPSAMPLE");
    }
    u32_of(op, out.len())?;
    let threads = u32_of(op, ho * wo * c)?;
    let params = Im2colParams {
        c: c as u32,
        h: h as u32,
        w: w as u32,
        k: win.k as u32,
        stride: win.stride as u32,
        pad: win.pad as u32,
        ch: ch as u32,
        cw: cw as u32,
        ho: ho as u32,
        wo: wo as u32,
        // torch's scale for a given output size: in / out in f32.
        scale_h: h as f32 / ch as f32,
        scale_w: w as f32 / cw as f32,
    };
    rec.dispatch(&PipelineKey::new(IM2COL, &flags, &[]), &params, &[x, out], grid(threads.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))?;
    Ok((ho, wo))
}

/// torch's bilinear resize (align_corners False) of token-major [h*w, c] to (oh, ow), in f64.
fn bilinear_ref(x: &[f32], c: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f64> {
    let src = |d: usize, n: usize, o: usize| (((d as f64 + 0.5) * (n as f32 / o as f32) as f64) - 0.5).max(0.0);
    let mut out = vec![0.0; oh * ow * c];
    for oy in 0..oh {
        let sy = src(oy, h, oh);
        let y0 = (sy as usize).min(h - 1);
        let (y1, fy) = ((y0 + 1).min(h - 1), sy - y0 as f64);
        for ox in 0..ow {
            let sx = src(ox, w, ow);
            let x0 = (sx as usize).min(w - 1);
            let (x1, fx) = ((x0 + 1).min(w - 1), sx - x0 as f64);
            for ci in 0..c {
                let at = |y: usize, xx: usize| x[(y * w + xx) * c + ci] as f64;
                let a = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let b = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out[(oy * ow + ox) * c + ci] = a * (1.0 - fy) + b * fy;
            }
        }
    }
    out
}

async fn check_im2col(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(71);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        // (h, w, c, k, stride, pad, upsample): SAM's 1x1 and 3x3 neck convs, the stride-2
        // downsamples (one reading a 64 → 96-style upsample), odd sizes.
        for (h, w, c, k, s, p, up) in [(5, 7, 6, 1, 1, 0, None), (6, 6, 4, 3, 1, 1, None), (8, 8, 3, 3, 2, 1, Some((12, 12))), (5, 6, 2, 3, 2, 1, None), (4, 4, 5, 3, 2, 1, Some((7, 9)))] {
            let x = check::round_to(dt, &rng.vec(h * w * c, -1.0, 1.0));
            let xt = Tensor::from_f32(gpu, &[h * w, c], dt, &x)?;
            let win = Window { k, stride: s, pad: p };
            let (ch, cw) = up.unwrap_or((h, w));
            let (ho, wo) = (win.out(ch), win.out(cw));
            let out = poisoned(gpu, &[ho * wo, c * k * k], dt)?;
            let mut rec = Recorder::new(gpu);
            im2col(&mut rec, &xt, (h, w), win, up, &out)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&out).await?;
            let src: Vec<f64> = match up {
                Some(u) => bilinear_ref(&x, c, (h, w), u),
                None => x.iter().map(|&v| v as f64).collect(),
            };
            let mut want = vec![0.0; ho * wo * c * k * k];
            for r in 0..ho * wo {
                for ci in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = ((r / wo * s + ky) as isize - p as isize, (r % wo * s + kx) as isize - p as isize);
                            if iy >= 0 && ix >= 0 && (iy as usize) < ch && (ix as usize) < cw {
                                want[r * c * k * k + ci * k * k + ky * k + kx] = src[(iy as usize * cw + ix as usize) * c + ci];
                            }
                        }
                    }
                }
            }
            let tol = if dt == crate::gpu::DType::F16 { Tol { abs: 1e-3, rel: 1e-3 } } else { Tol { abs: 1e-6, rel: 1e-6 } };
            worst = worst.max(compare(&format!("im2col {dt} {h}x{w}x{c} k{k} s{s} p{p} up {up:?}"), &got, &want, tol)?);
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

crate::checks!(check_im2col);
