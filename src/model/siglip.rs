//! The SigLIP vision tower and the MLP aligner, recorded as dispatches: one image's pixels
//! [3, S, S] become `num_image_tokens` rows of the language model's width.

use super::config::ModelConfig;
use super::weights::{AlignerWeights, Linear, VisionWeights};
use crate::error::Result;
use crate::gpu::{DType, Recorder, Tensor};
use crate::ops::attention::{attention, attention_tiled, tiled_fits, AttnShape};
use crate::ops::elementwise::{binary, Binary};
use crate::ops::matmul::{linear, Act, Epilogue};
use crate::ops::norm::layernorm;
use crate::ops::patchify::patchify;
use crate::ops::Rows;

/// `y = act(x·Wᵀ + b) (+ y when residual)`: one place that turns a checkpoint `Linear` into a matmul.
pub(crate) fn apply(rec: &mut Recorder, l: &Linear, x: &Rows, act: Act, residual: bool, y: &Rows) -> Result<()> {
    linear(rec, x, &l.w, Epilogue { bias: l.b.as_ref(), act, residual }, y)
}

/// Records the vision tower for `pixels` (f32 [3, S, S]) and returns its final normed tokens
/// [n, width] in `act`. `seq` is a u32 [2] tensor holding [0, n] (bidirectional attention over n).
pub fn record_tower(rec: &mut Recorder, cfg: &ModelConfig, w: &VisionWeights, pixels: &Tensor, act: DType, seq: &Tensor) -> Result<Tensor> {
    let v = &cfg.vision;
    let g = rec.gpu;
    let n = (v.image_size / v.patch_size).pow(2);
    let (width, eps) = (v.width, v.eps as f32);
    // Patch embedding as a GEMM over patch rows, then the position embedding.
    let patches = Tensor::empty(g, &[n, 3 * v.patch_size * v.patch_size], act)?;
    patchify(rec, pixels, v.patch_size, &patches)?;
    let emb = Tensor::empty(g, &[n, width], act)?;
    apply(rec, &w.patch, &Rows::all(&patches), Act::None, false, &Rows::all(&emb))?;
    let x = Tensor::empty(g, &[n, width], act)?; // the residual stream
    binary(rec, Binary::Add, &Rows::all(&emb), &Rows::all(&w.pos_embed), &Rows::all(&x))?;

    let h = Tensor::empty(g, &[n, width], act)?;
    let qkv = Tensor::empty(g, &[n, 3 * width], act)?;
    let a = Tensor::empty(g, &[n, width], act)?;
    let f = Tensor::empty(g, &[n, v.mlp_dim], act)?;
    let shape = AttnShape { heads: v.heads, kv_heads: v.heads, head_dim: width / v.heads, scale: ((width / v.heads) as f32).powf(-0.5), causal: false };
    let (xr, hr) = (Rows::all(&x), Rows::all(&h));
    for b in &w.blocks {
        // x += proj(attn(norm1(x)))
        layernorm(rec, &xr, &b.norm1_w, &b.norm1_b, eps, &hr)?;
        apply(rec, &b.qkv, &hr, Act::None, false, &Rows::all(&qkv))?; // [n, 3w]: q | k | v
        let (q, k, vv) = (Rows::cols(&qkv, 0, width), Rows::cols(&qkv, width, width), Rows::cols(&qkv, 2 * width, width));
        if tiled_fits(g, shape.head_dim) {
            attention_tiled(rec, &q, &k, &vv, &Rows::all(&a), shape)?;
        } else {
            attention(rec, &q, &k, &vv, &Rows::all(&a), shape, seq)?;
        }
        apply(rec, &b.proj, &Rows::all(&a), Act::None, true, &xr)?;
        // x += fc2(gelu(fc1(norm2(x))))
        layernorm(rec, &xr, &b.norm2_w, &b.norm2_b, eps, &hr)?;
        apply(rec, &b.fc1, &hr, Act::GeluErf, false, &Rows::all(&f))?;
        apply(rec, &b.fc2, &Rows::all(&f), Act::None, true, &xr)?;
    }
    layernorm(rec, &xr, &w.norm_w, &w.norm_b, eps, &hr)?;
    Ok(h)
}

/// Records the aligner: Linear, then GELU + Linear for each further layer, into `out` ([n, n_embed] rows).
pub fn record_aligner(rec: &mut Recorder, w: &AlignerWeights, tokens: &Tensor, act: DType, out: &Rows) -> Result<()> {
    let n = tokens.shape()[0];
    let mut cur = tokens.clone();
    for (i, l) in w.layers.iter().enumerate() {
        if i + 1 == w.layers.len() {
            return apply(rec, l, &Rows::all(&cur), Act::None, false, out);
        }
        // GELU (erf) between layers, fused into this layer's epilogue.
        let next = Tensor::empty(rec.gpu, &[n, l.w.rows()], act)?;
        apply(rec, l, &Rows::all(&cur), Act::GeluErf, false, &Rows::all(&next))?;
        cur = next;
    }
    Err(crate::Error::Invalid("the aligner has no layers".into()))
}
