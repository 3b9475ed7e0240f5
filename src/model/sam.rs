//! DeepSeek-VL 7B's hybrid vision encoder: SAM-B over the high-res image and SigLIP over a
//! 384 px copy, fused by the split aligner into the same number of tokens as SigLIP alone.
//!
//! SAM-B (the original `ImageEncoderViT` with `sam_hd`): patch embedding + absolute positions,
//! blocks of window attention (grid zero-padded to whole windows, padded rows attended to as
//! SAM does) or global attention, both with decomposed relative positions; then
//! neck → bilinear resize → stride-2 convs, plus alpha × the same after a second neck over the
//! first global block's output. The bilinear target is 2^convs × SigLIP's grid, so both towers
//! give the same tokens (96 → 24 at the real sizes, which the original hard-codes).

use super::config::{ModelConfig, SamConfig};
use super::sam_weights::{Neck, SamWeights};
use super::siglip::{apply, record_aligner, record_tower};
use super::weights::{Linear, Weights};
use crate::error::{Error, Result};
use crate::gpu::{DType, Recorder, Tensor};
use crate::ops::attention::{attention_rel_pos, AttnShape, RelPos};
use crate::ops::elementwise::{binary, Binary};
use crate::ops::im2col::{im2col, Window};
use crate::ops::interp::resize_aa_bilinear;
use crate::ops::matmul::Act;
use crate::ops::norm::layernorm;
use crate::ops::normalise::channel_affine;
use crate::ops::patchify::patchify;
use crate::ops::window::{window_partition, window_unpartition};
use crate::ops::Rows;

/// LayerNorm2d's epsilon in the neck (the original's default).
const NECK_EPS: f32 = 1e-6;

/// `Normalize(mean, std)` of a [3, H, W] f32 image into a new tensor; the image itself when None.
pub(crate) fn record_pixel_norm(rec: &mut Recorder, x: &Tensor, norm: Option<([f32; 3], [f32; 3])>) -> Result<Tensor> {
    let Some((mean, std)) = norm else { return Ok(x.clone()) };
    let scale: Vec<f32> = std.iter().map(|&s| (1.0 / s as f64) as f32).collect();
    let shift: Vec<f32> = mean.iter().zip(&std).map(|(&m, &s)| (-(m as f64) / s as f64) as f32).collect();
    let y = Tensor::empty(rec.gpu, x.shape(), DType::F32)?;
    channel_affine(rec, x, &scale, &shift, &y)?;
    Ok(y)
}

/// Neck, bilinear resize to `side` and the downsample convs: tokens [g*g, width] of the SAM
/// grid → tokens [(side >> convs)^2, channels]. Token-major throughout: LayerNorm2d is a row
/// LayerNorm, each conv one GEMM over im2col rows, the resize sampled by the first
/// downsample's im2col.
fn record_neck_down(rec: &mut Recorder, s: &SamConfig, neck: &Neck, down: &[Linear], x: &Tensor, side: usize, act: DType) -> Result<Tensor> {
    let g = rec.gpu;
    let grid = s.grid();
    let n = grid * grid;
    let rows = |r: usize, c: usize| Tensor::empty(g, &[r, c], act);
    let t1 = rows(n, s.neck)?;
    apply(rec, &neck.conv1, &Rows::all(x), Act::None, false, &Rows::all(&t1))?;
    let l1 = rows(n, s.neck)?;
    layernorm(rec, &Rows::all(&t1), &neck.ln1_w, &neck.ln1_b, NECK_EPS, &Rows::all(&l1))?;
    let same = Window { k: 3, stride: 1, pad: 1 };
    let col = rows(n, s.neck * 9)?;
    im2col(rec, &l1, (grid, grid), same, None, &col)?;
    let t2 = rows(n, s.neck)?;
    apply(rec, &neck.conv2, &Rows::all(&col), Act::None, false, &Rows::all(&t2))?;
    let mut cur = rows(n, s.neck)?;
    layernorm(rec, &Rows::all(&t2), &neck.ln2_w, &neck.ln2_b, NECK_EPS, &Rows::all(&cur))?;
    let (mut hw, mut up) = ((grid, grid), Some((side, side)));
    let half = Window { k: 3, stride: 2, pad: 1 };
    for d in down {
        let (ch, cw) = up.unwrap_or(hw);
        let (ho, wo) = (half.out(ch), half.out(cw));
        let col = rows(ho * wo, d.w.cols())?;
        im2col(rec, &cur, hw, half, up.take(), &col)?;
        let y = rows(ho * wo, d.w.rows())?;
        apply(rec, d, &Rows::all(&col), Act::None, false, &Rows::all(&y))?;
        (cur, hw) = (y, (ho, wo));
    }
    Ok(cur)
}

/// Records SAM-B over `pixels` (f32 [3, S, S], normalised for it) and returns its tokens
/// [out_side^2, channels] in `act`.
pub fn record_sam(rec: &mut Recorder, s: &SamConfig, w: &SamWeights, pixels: &Tensor, act: DType, out_side: usize) -> Result<Tensor> {
    let g = rec.gpu;
    let (grid, width) = (s.grid(), s.width);
    let n = grid * grid;
    let patches = Tensor::empty(g, &[n, 3 * s.patch_size * s.patch_size], act)?;
    patchify(rec, pixels, s.patch_size, &patches)?;
    let emb = Tensor::empty(g, &[n, width], act)?;
    apply(rec, &w.patch, &Rows::all(&patches), Act::None, false, &Rows::all(&emb))?;
    let x = Tensor::empty(g, &[n, width], act)?; // the residual stream, row-major over the grid
    binary(rec, Binary::Add, &Rows::all(&emb), &Rows::all(&w.pos_embed), &Rows::all(&x))?;

    let hd = width / s.heads;
    let shape = AttnShape { heads: s.heads, kv_heads: s.heads, head_dim: hd, scale: (hd as f32).powf(-0.5), causal: false };
    let h = Tensor::empty(g, &[n, width], act)?;
    let a = Tensor::empty(g, &[n, width], act)?;
    let f = Tensor::empty(g, &[n, s.mlp_dim], act)?;
    let (xr, hr) = (Rows::all(&x), Rows::all(&h));
    // Scratch of window blocks (grid padded to whole windows) and of global ones.
    let padded = grid.div_ceil(s.window) * s.window;
    let win_rows = padded * padded;
    let hp = Tensor::empty(g, &[win_rows, width], act)?;
    let qkv_w = Tensor::empty(g, &[win_rows, 3 * width], act)?;
    let a_w = Tensor::empty(g, &[win_rows, width], act)?;
    let qkv_g = Tensor::empty(g, &[n, 3 * width], act)?;
    let first_global = s.global.iter().copied().min();
    let side = out_side << w.downsample.len();
    let mut hd_tokens = None;
    for (i, b) in w.blocks.iter().enumerate() {
        layernorm(rec, &xr, &b.norm1_w, &b.norm1_b, s.eps as f32, &hr)?;
        let (qkv, out, rel_side) = match b.window {
            Some(win) => {
                window_partition(rec, &hr, (grid, grid), win, &hp)?;
                apply(rec, &b.qkv, &Rows::all(&hp), Act::None, false, &Rows::all(&qkv_w))?;
                (&qkv_w, &a_w, win)
            }
            None => {
                apply(rec, &b.qkv, &hr, Act::None, false, &Rows::all(&qkv_g))?;
                (&qkv_g, &a, grid)
            }
        };
        let (q, k, v) = (Rows::cols(qkv, 0, width), Rows::cols(qkv, width, width), Rows::cols(qkv, 2 * width, width));
        let rel = RelPos { grid: (rel_side, rel_side), h: &b.rel_h, w: &b.rel_w };
        attention_rel_pos(rec, &q, &k, &v, &Rows::all(out), shape, &rel)?;
        if let Some(win) = b.window {
            window_unpartition(rec, &a_w, (grid, grid), win, &Rows::all(&a))?;
        }
        apply(rec, &b.proj, &Rows::all(&a), Act::None, true, &xr)?;
        layernorm(rec, &xr, &b.norm2_w, &b.norm2_b, s.eps as f32, &hr)?;
        apply(rec, &b.lin1, &hr, Act::GeluErf, false, &Rows::all(&f))?;
        apply(rec, &b.lin2, &Rows::all(&f), Act::None, true, &xr)?;
        // The hd path reads the first global block's output before later blocks change x.
        if Some(i) == first_global
            && let Some(neck_hd) = &w.neck_hd
        {
            hd_tokens = Some(record_neck_down(rec, s, neck_hd, &w.downsample, &x, side, act)?);
        }
    }
    let main = record_neck_down(rec, s, &w.neck, &w.downsample, &x, side, act)?;
    let Some(hd) = hd_tokens else { return Ok(main) };
    let sum = Tensor::empty(g, main.shape(), act)?;
    binary(rec, Binary::Add, &Rows::all(&main), &Rows::all(&hd), &Rows::all(&sum))?;
    Ok(sum)
}

/// Records the hybrid encoder and aligner for one processed image (f32 [3, S, S] at the high
/// resolution) into `out` ([tokens, n_embed] rows). `seq` holds [0, tokens] for SigLIP.
pub fn record_hybrid(rec: &mut Recorder, cfg: &ModelConfig, w: &Weights, pixels: &Tensor, act: DType, seq: &Tensor, out: &Rows) -> Result<()> {
    let (Some(s), Some(sw), Some((high_up, low_up))) = (&cfg.sam, &w.sam, &w.aligner.hybrid) else {
        return Err(Error::Invalid("the hybrid encoder needs its SAM tower and split aligner".into()));
    };
    let low_size = cfg.vision.image_size;
    // torchvision Resize(low, antialias=True) of the processed image, then each tower's Normalize.
    let low_raw = Tensor::empty(rec.gpu, &[3, low_size, low_size], DType::F32)?;
    resize_aa_bilinear(rec, pixels, &low_raw)?;
    let low = record_pixel_norm(rec, &low_raw, cfg.vision.pixel_norm)?;
    let high = record_pixel_norm(rec, pixels, s.pixel_norm)?;
    let out_side = cfg.vision.image_size / cfg.vision.patch_size;
    let t_high = record_sam(rec, s, sw, &high, act, out_side)?;
    let t_low = record_tower(rec, cfg, &w.vision, &low, act, seq)?;
    let tokens = out_side * out_side;
    if t_high.shape()[0] != tokens || t_low.shape()[0] != tokens {
        return Err(Error::Shape { op: "hybrid", detail: format!("SAM gives {:?} tokens, SigLIP {:?}", t_high.shape(), t_low.shape()) });
    }
    // GELU(concat(high_up(h), low_up(l))), fused into the two projections, then the rest.
    let e = cfg.aligner.n_embed;
    let rest = &w.aligner.layers;
    let act_in = if rest.is_empty() { Act::None } else { Act::GeluErf };
    let cat = if rest.is_empty() { None } else { Some(Tensor::empty(rec.gpu, &[tokens, e], act)?) };
    let halves = |c0| match &cat {
        Some(t) => Rows::cols(t, c0, e / 2),
        None => Rows { off: out.off + c0, cols: e / 2, ..out.clone() },
    };
    apply(rec, high_up, &Rows::all(&t_high), act_in, false, &halves(0))?;
    apply(rec, low_up, &Rows::all(&t_low), act_in, false, &halves(e / 2))?;
    match &cat {
        Some(c) => record_aligner(rec, &w.aligner, c, act, out),
        None => Ok(()),
    }
}
