//! 2-D convolution (batch 1) and LayerNorm2d, for the patch embedding and the SAM neck.
//!
//! `conv2d`: input [Cin, H, W] or token-major [H*W, Cin]; weight [Cout, Cin, kh, kw] (PyTorch
//! layout) in f32 or f16 (f16 read as packed u32 pairs, so no SHADER_F16 is needed); optional
//! bias [Cout] in the weight's dtype; symmetric padding per dimension; output [Cout, Ho, Wo] or
//! token-major [Ho*Wo, Cout]. Activations f32 or f16; accumulation f32. The kernel is an
//! implicit GEMM with 64x64 output tiles (see `shaders/conv.wgsl`).
//!
//! `layernorm2d`: y[c, p] = (x[c, p] - mean_c) / sqrt(var_c + eps) * weight[c] + bias[c], with
//! mean and biased variance over the channels of each pixel p of a [C, H, W] tensor.

use super::{act_flags, same_dtype, shape_err, u32_of, WG};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(ConvParams("ConvParams") {
    cin: u32, h: u32, w: u32, cout: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, ho: u32, wo: u32,
    _pad0: u32, _pad1: u32, _pad2: u32, _pad3: u32,
});

params_struct!(Ln2dParams("Ln2dParams") { c: u32, hw: u32, eps: f32, _pad0: u32 });

/// Output tile of one conv workgroup: 64 channels x 64 pixels.
const TILE: usize = 64;

const CONV: Kernel = Kernel { shader: "conv", entry: "conv2d", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite] };
const CONV_BIAS: Kernel =
    Kernel { shader: "conv", entry: "conv2d", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite] };
const LN2D: Kernel =
    Kernel { shader: "conv", entry: "layernorm2d", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::Read, Bind::ReadWrite] };

/// How a feature map is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvLayout {
    /// Planar [C, H, W] (PyTorch NCHW with batch 1).
    Chw,
    /// Token-major [H*W, C] (a ViT's token rows).
    Tokens,
}

/// Geometry of a convolution; the kernel size comes from the weight.
#[derive(Clone, Copy, Debug)]
pub struct Conv2d {
    /// (vertical, horizontal) stride.
    pub stride: (usize, usize),
    /// (vertical, horizontal) zero padding, applied on both sides.
    pub pad: (usize, usize),
    pub input: ConvLayout,
    pub output: ConvLayout,
}

impl Conv2d {
    /// Output (height, width) for an (h, w) input and a (kh, kw) kernel.
    pub fn out_hw(&self, (h, w): (usize, usize), (kh, kw): (usize, usize)) -> Result<(usize, usize)> {
        let (sh, sw) = self.stride;
        let (ph, pw) = self.pad;
        if sh == 0 || sw == 0 || kh == 0 || kw == 0 || h + 2 * ph < kh || w + 2 * pw < kw {
            return Err(shape_err("conv2d", format!("input {h}x{w} pad {ph},{pw} kernel {kh}x{kw} stride {sh},{sw}")));
        }
        Ok(((h + 2 * ph - kh) / sh + 1, (w + 2 * pw - kw) / sw + 1))
    }
}

/// Flags for a weight dtype (f32, or f16 read as packed u32).
fn weight_flags(op: &'static str, dtype: DType) -> Result<&'static [&'static str]> {
    match dtype {
        DType::F32 => Ok(&[]),
        DType::F16 => Ok(&["W16"]),
        DType::U32 => Err(Error::DType { op, dtype: dtype.name().into(), detail: "weights are f32 or f16".into() }),
    }
}

/// Every pipeline this file can ask for (validated by naga in the tests).
pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for act in [None, Some("F16")] {
        for w16 in [None, Some("W16")] {
            let base: Vec<&'static str> = act.into_iter().chain(w16).collect();
            for bias in [false, true] {
                for xtok in [None, Some("XTOK")] {
                    for ytok in [None, Some("YTOK")] {
                        let mut f = base.clone();
                        f.extend(xtok);
                        f.extend(ytok);
                        let k = if bias {
                            f.push("BIAS");
                            CONV_BIAS
                        } else {
                            CONV
                        };
                        v.push(PipelineKey::new(k, &f, &[]));
                    }
                }
            }
            let mut f = base.clone();
            f.push("LN2D");
            v.push(PipelineKey::new(LN2D, &f, &[]));
        }
    }
    v
}

/// y = conv(x, weight) + bias. `x_hw` is the input's (height, width); `x` holds Cin*H*W values
/// in `cfg.input`'s layout and `y` Cout*Ho*Wo values in `cfg.output`'s layout (their shapes may
/// be any with that element count, e.g. [Cin, H, W] or [1, Cin, H, W]). Returns (Ho, Wo).
pub fn conv2d(rec: &mut Recorder, x: &Tensor, x_hw: (usize, usize), weight: &Tensor, bias: Option<&Tensor>, cfg: &Conv2d, y: &Tensor) -> Result<(usize, usize)> {
    let op = "conv2d";
    let &[cout, cin, kh, kw] = weight.shape() else {
        return Err(shape_err(op, format!("weight {:?} is not [Cout, Cin, kh, kw]", weight.shape())));
    };
    let (h, w) = x_hw;
    let (ho, wo) = cfg.out_hw((h, w), (kh, kw))?;
    if cout == 0 || cin == 0 || x.len() != cin * h * w {
        return Err(shape_err(op, format!("input {:?} is not {cin}x{h}x{w} values for weight {:?}", x.shape(), weight.shape())));
    }
    if y.len() != cout * ho * wo {
        return Err(shape_err(op, format!("output {:?} is not {cout}x{ho}x{wo} values", y.shape())));
    }
    same_dtype(op, x.dtype(), &[y])?;
    let mut flags = act_flags(op, x.dtype())?.to_vec();
    flags.extend_from_slice(weight_flags(op, weight.dtype())?);
    if let Some(b) = bias {
        if b.len() != cout {
            return Err(shape_err(op, format!("bias {:?} for {cout} output channels", b.shape())));
        }
        same_dtype(op, weight.dtype(), &[b])?;
        flags.push("BIAS");
    }
    if cfg.input == ConvLayout::Tokens {
        flags.push("XTOK");
    }
    if cfg.output == ConvLayout::Tokens {
        flags.push("YTOK");
    }
    // Index arithmetic in the shader is u32.
    u32_of(op, x.len())?;
    u32_of(op, y.len())?;
    u32_of(op, weight.len())?;
    let (sh, sw) = cfg.stride;
    let (ph, pw) = cfg.pad;
    let params = ConvParams {
        cin: cin as u32,
        h: h as u32,
        w: w as u32,
        cout: cout as u32,
        kh: kh as u32,
        kw: kw as u32,
        sh: u32_of(op, sh)?,
        sw: u32_of(op, sw)?,
        ph: u32_of(op, ph)?,
        pw: u32_of(op, pw)?,
        ho: ho as u32,
        wo: wo as u32,
        ..Default::default()
    };
    let groups = [u32_of(op, (ho * wo).div_ceil(TILE))?, u32_of(op, cout.div_ceil(TILE))?, 1];
    let max = rec.gpu.caps.max_workgroups_per_dim;
    if groups[0] > max || groups[1] > max {
        return Err(shape_err(op, format!("{ho}x{wo} pixels x {cout} channels need {groups:?} workgroups, limit {max}")));
    }
    match bias {
        Some(b) => rec.dispatch(&PipelineKey::new(CONV_BIAS, &flags, &[]), &params, &[x, weight, b, y], groups)?,
        None => rec.dispatch(&PipelineKey::new(CONV, &flags, &[]), &params, &[x, weight, y], groups)?,
    }
    Ok((ho, wo))
}

/// LayerNorm2d over the channels of `x` ([C, H, W] or [1, C, H, W]); `weight` and `bias` are
/// [C] in f32 or f16 (the same dtype); `y` has x's shape and dtype.
pub fn layernorm2d(rec: &mut Recorder, x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32, y: &Tensor) -> Result<()> {
    let op = "layernorm2d";
    let s = x.shape();
    let c = weight.len();
    let ok = match s.len() {
        3 => s[0] == c,
        4 => s[0] == 1 && s[1] == c,
        _ => false,
    };
    if !ok || c == 0 || x.is_empty() {
        return Err(shape_err(op, format!("input {s:?} is not [C, H, W] with C = {c}")));
    }
    if bias.len() != c || y.len() != x.len() {
        return Err(shape_err(op, format!("bias {:?}, output {:?} for input {s:?}", bias.shape(), y.shape())));
    }
    same_dtype(op, x.dtype(), &[y])?;
    same_dtype(op, weight.dtype(), &[bias])?;
    let mut flags = act_flags(op, x.dtype())?.to_vec();
    flags.extend_from_slice(weight_flags(op, weight.dtype())?);
    flags.push("LN2D");
    let hw = x.len() / c;
    u32_of(op, x.len())?;
    let params = Ln2dParams { c: c as u32, hw: hw as u32, eps, _pad0: 0 };
    let key = PipelineKey::new(LN2D, &flags, &[]);
    rec.dispatch(&key, &params, &[x, weight, bias, y], grid((hw as u32).div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

// ---- checks ----

/// The f16 part of a check summary.
fn f16_summary(gpu: &Gpu, err: f64) -> String {
    if gpu.caps.f16 { format!("{err:.2e}") } else { "not run (no SHADER_F16)".into() }
}

/// f64 reference convolution. x is [Cin, H, W] planar; returns [Cout, Ho, Wo] planar.
#[allow(clippy::too_many_arguments)]
fn conv_ref(x: &[f32], cin: usize, h: usize, w: usize, wt: &[f32], cout: usize, kh: usize, kw: usize, bias: Option<&[f32]>, stride: (usize, usize), pad: (usize, usize)) -> (Vec<f64>, usize, usize) {
    let ho = (h + 2 * pad.0 - kh) / stride.0 + 1;
    let wo = (w + 2 * pad.1 - kw) / stride.1 + 1;
    let mut out = vec![0.0f64; cout * ho * wo];
    for co in 0..cout {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut s = bias.map_or(0.0, |b| b[co] as f64);
                for ci in 0..cin {
                    for ky in 0..kh {
                        let iy = (oy * stride.0 + ky) as isize - pad.0 as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * stride.1 + kx) as isize - pad.1 as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let xv = x[(ci * h + iy as usize) * w + ix as usize] as f64;
                            let wv = wt[((co * cin + ci) * kh + ky) * kw + kx] as f64;
                            s += xv * wv;
                        }
                    }
                }
                out[(co * ho + oy) * wo + ox] = s;
            }
        }
    }
    (out, ho, wo)
}

/// [C, P] planar to [P, C] token-major.
fn to_tokens<T: Copy>(v: &[T], c: usize, p: usize) -> Vec<T> {
    (0..p * c).map(|i| v[(i % c) * p + i / c]).collect()
}

async fn check_conv2d(gpu: &Gpu) -> CheckResult {
    use ConvLayout::{Chw, Tokens};
    let mut rng = Rng::new(11);
    let mut worst = [0.0f64; 2];
    // (name, cin, h, w, cout, kh, kw, stride, pad, bias, input layout, output layout)
    #[allow(clippy::type_complexity)]
    let cases: &[(&str, usize, usize, usize, usize, usize, usize, (usize, usize), (usize, usize), bool, ConvLayout, ConvLayout)] = &[
        ("patch-embed", 3, 35, 35, 40, 5, 5, (5, 5), (0, 0), true, Chw, Tokens),
        ("3x3 pad1", 7, 33, 17, 20, 3, 3, (1, 1), (1, 1), true, Chw, Chw),
        ("3x3 s2 pad1", 16, 33, 17, 70, 3, 3, (2, 2), (1, 1), false, Tokens, Tokens),
        ("1x1 no bias", 33, 9, 7, 65, 1, 1, (1, 1), (0, 0), false, Tokens, Chw),
        ("2x3 s(1,2) pad(0,1)", 5, 13, 11, 9, 2, 3, (1, 2), (0, 1), true, Chw, Chw),
        ("1x1 image", 7, 1, 1, 3, 3, 3, (1, 1), (1, 1), true, Chw, Tokens),
    ];
    for &(name, cin, h, w, cout, kh, kw, stride, pad, has_bias, lin, lout) in cases {
        let k = cin * kh * kw;
        let x0 = rng.vec(cin * h * w, -1.0, 1.0);
        let wt0 = rng.normals(cout * k, 1.0 / (k as f32).sqrt());
        let b0 = rng.vec(cout, -0.5, 0.5);
        for act in check::act_dtypes(gpu) {
            for wdt in [DType::F32, DType::F16] {
                let xr = check::round_to(act, &x0);
                let wr = check::round_to(wdt, &wt0);
                let br = check::round_to(wdt, &b0);
                let (want, ho, wo) = conv_ref(&xr, cin, h, w, &wr, cout, kh, kw, has_bias.then_some(&br[..]), stride, pad);
                let xin = if lin == Tokens { to_tokens(&xr, cin, h * w) } else { xr.clone() };
                let xt = Tensor::from_f32(gpu, &[xin.len()], act, &xin)?;
                let wtt = Tensor::from_f32(gpu, &[cout, cin, kh, kw], wdt, &wr)?;
                let bt = Tensor::from_f32(gpu, &[cout], wdt, &br)?;
                let yshape = if lout == Tokens { vec![ho * wo, cout] } else { vec![cout, ho, wo] };
                let y = poisoned(gpu, &yshape, act)?;
                let cfg = Conv2d { stride, pad, input: lin, output: lout };
                let mut rec = Recorder::new(gpu);
                let hw = conv2d(&mut rec, &xt, (h, w), &wtt, has_bias.then_some(&bt), &cfg, &y)?;
                if hw != (ho, wo) {
                    return Err(format!("conv2d {name}: output size {hw:?}, expected {:?}", (ho, wo)).into());
                }
                rec.finish()?.run(gpu).await?;
                let got = gpu.read_f32(&y).await?;
                let want = if lout == Tokens { to_tokens(&want, cout, ho * wo) } else { want };
                // Inputs are rounded like the GPU's, so the error is f32 accumulation (f32 out)
                // or one f16 rounding of the output (f16 out).
                let (tol, slot) = if act == DType::F16 { (Tol { abs: 2e-3, rel: 2e-3 }, 1) } else { (Tol { abs: 2e-5, rel: 1e-5 }, 0) };
                let err = compare(&format!("conv2d {name} act {act} weights {wdt}"), &got, &want, tol)?;
                worst[slot] = worst[slot].max(err);
            }
        }
    }
    // Mismatched shapes are errors, not dispatches.
    let x = Tensor::empty(gpu, &[3, 8, 8], DType::F32)?;
    let wt = Tensor::empty(gpu, &[4, 3, 3, 3], DType::F32)?;
    let y = Tensor::empty(gpu, &[4, 7, 7], DType::F32)?;
    let cfg = Conv2d { stride: (1, 1), pad: (1, 1), input: ConvLayout::Chw, output: ConvLayout::Chw };
    let mut rec = Recorder::new(gpu);
    if conv2d(&mut rec, &x, (8, 8), &wt, None, &cfg, &y).is_ok() || conv2d(&mut rec, &x, (4, 16), &wt, Some(&x), &cfg, &y).is_ok() || !rec.is_empty() {
        return Err("conv2d accepted mismatched shapes".to_string().into());
    }
    Ok(format!("max abs err f32 {:.2e}, f16 {}", worst[0], f16_summary(gpu, worst[1])))
}

/// The patch embedding at full size (3x384x384, 16x16 stride 16, 1024 channels -> [576, 1024]):
/// checks the dispatch fits the limits, and spot-checks a sample of outputs.
async fn check_conv2d_patch_embed(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(12);
    let (cin, h, w, cout, k) = (3, 384, 384, 1024, 16);
    let x = rng.vec(cin * h * w, -1.0, 1.0);
    let wt = rng.normals(cout * cin * k * k, 0.03);
    let b = rng.vec(cout, -0.1, 0.1);
    let wt = check::round_to(DType::F16, &wt);
    let b = check::round_to(DType::F16, &b);
    let xt = Tensor::from_f32(gpu, &[cin, h, w], DType::F32, &x)?;
    let wtt = Tensor::from_f32(gpu, &[cout, cin, k, k], DType::F16, &wt)?;
    let bt = Tensor::from_f32(gpu, &[cout], DType::F16, &b)?;
    let y = poisoned(gpu, &[576, cout], DType::F32)?;
    let cfg = Conv2d { stride: (16, 16), pad: (0, 0), input: ConvLayout::Chw, output: ConvLayout::Tokens };
    let mut rec = Recorder::new(gpu);
    conv2d(&mut rec, &xt, (h, w), &wtt, Some(&bt), &cfg, &y)?;
    rec.finish()?.run(gpu).await?;
    let got = gpu.read_f32(&y).await?;
    // Every output is written (no NaN left); a strided sample is compared in f64.
    let mut gs = Vec::new();
    let mut ws = Vec::new();
    for i in (0..got.len()).step_by(97) {
        let (tok, co) = (i / cout, i % cout);
        let (ty, tx) = (tok / 24, tok % 24);
        let mut s = b[co] as f64;
        for ci in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    s += x[(ci * h + ty * k + ky) * w + tx * k + kx] as f64 * wt[((co * cin + ci) * k + ky) * k + kx] as f64;
                }
            }
        }
        gs.push(got[i]);
        ws.push(s);
    }
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        return Err(format!("patch embed: element {i} is {}", got[i]).into());
    }
    let err = compare("patch embed 3x384x384 -> [576, 1024]", &gs, &ws, Tol { abs: 5e-5, rel: 1e-5 })?;
    Ok(format!("max abs err {err:.2e} on {} samples", gs.len()))
}

async fn check_layernorm2d(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(13);
    let mut worst = [0.0f64; 2];
    let eps = 1e-6f32;
    for (c, h, w) in [(7, 33, 17), (256, 5, 7), (3, 1, 1), (33, 1, 300)] {
        let hw = h * w;
        // A channel offset far from zero tests the centred variance.
        let x0: Vec<f32> = rng.vec(c * hw, -2.0, 2.0).iter().map(|v| v + 3.0).collect();
        let g0 = rng.vec(c, 0.5, 1.5);
        let b0 = rng.vec(c, -0.5, 0.5);
        for act in check::act_dtypes(gpu) {
            for wdt in [DType::F32, DType::F16] {
                let x = check::round_to(act, &x0);
                let g = check::round_to(wdt, &g0);
                let b = check::round_to(wdt, &b0);
                let mut want = vec![0.0f64; c * hw];
                for pix in 0..hw {
                    let mean = (0..c).map(|ch| x[ch * hw + pix] as f64).sum::<f64>() / c as f64;
                    let var = (0..c).map(|ch| (x[ch * hw + pix] as f64 - mean).powi(2)).sum::<f64>() / c as f64;
                    for ch in 0..c {
                        want[ch * hw + pix] = (x[ch * hw + pix] as f64 - mean) / (var + eps as f64).sqrt() * g[ch] as f64 + b[ch] as f64;
                    }
                }
                let xt = Tensor::from_f32(gpu, &[c, h, w], act, &x)?;
                let gt = Tensor::from_f32(gpu, &[c], wdt, &g)?;
                let bt = Tensor::from_f32(gpu, &[c], wdt, &b)?;
                let y = poisoned(gpu, &[c, h, w], act)?;
                let mut rec = Recorder::new(gpu);
                layernorm2d(&mut rec, &xt, &gt, &bt, eps, &y)?;
                rec.finish()?.run(gpu).await?;
                let got = gpu.read_f32(&y).await?;
                let (tol, slot) = if act == DType::F16 { (Tol { abs: 4e-3, rel: 2e-3 }, 1) } else { (Tol { abs: 1e-5, rel: 1e-5 }, 0) };
                let err = compare(&format!("layernorm2d {c}x{h}x{w} act {act} weights {wdt}"), &got, &want, tol)?;
                worst[slot] = worst[slot].max(err);
            }
        }
    }
    Ok(format!("max abs err f32 {:.2e}, f16 {}", worst[0], f16_summary(gpu, worst[1])))
}

crate::checks!(check_conv2d, check_conv2d_patch_embed, check_layernorm2d);
