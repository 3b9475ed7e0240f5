//! The SAM-B high-resolution tower's tensors (DeepSeek-VL 7B's hybrid encoder), in both layouts.
//!
//! Original: `vision_model.vision_tower_high.vision_tower.*` (`patch_embed.proj`, `pos_embed`,
//! `blocks.N.{norm1, attn.qkv, attn.proj, attn.rel_pos_h|w, norm2, mlp.lin1|2}`, `neck.0..3`,
//! `neck_hd.0..3`, `downsamples.N`, `hd_alpha_downsamples`). HF: `model.high_res_vision_model.vision_encoder.*`
//! (`patch_embed.projection`, `layers.N.{layer_norm1|2, ...}`, `neck.{conv1, layer_norm1, conv2,
//! layer_norm2}`), `model.high_res_vision_neck.*` (= neck_hd), `model.high_res_vision_proj.convN`
//! (= downsamples) and `model.high_res_vision_alpha`.

use super::config::{Layout, SamConfig};
use super::weights::{decode, named, weight_err, Linear, Loader, Planned};
use crate::error::Result;
use crate::gpu::{DType, Tensor};
use crate::ops::convert::upload_matrix;
use crate::quant::{Part, Weight};

pub struct SamBlock {
    pub norm1_w: Tensor,
    pub norm1_b: Tensor,
    /// [3*width, width], rows q | k | v.
    pub qkv: Linear,
    pub proj: Linear,
    /// Decomposed relative positions [2*side-1, head_dim] in the activation dtype.
    pub rel_h: Tensor,
    pub rel_w: Tensor,
    pub norm2_w: Tensor,
    pub norm2_b: Tensor,
    pub lin1: Linear,
    pub lin2: Linear,
    /// Attention window side; None for a global block.
    pub window: Option<usize>,
}

/// conv1x1 → LayerNorm2d → conv3x3 → LayerNorm2d. Convs are matrices [Cout, Cin*k*k] (columns
/// in PyTorch's (c, ky, kx) order) in the activation dtype, run as GEMMs over im2col rows.
pub struct Neck {
    pub conv1: Linear,
    pub ln1_w: Tensor,
    pub ln1_b: Tensor,
    pub conv2: Linear,
    pub ln2_w: Tensor,
    pub ln2_b: Tensor,
}

pub struct SamWeights {
    /// The patch conv as a matrix [width, 3*p*p], with its bias.
    pub patch: Linear,
    /// [grid*grid, width] in the activation dtype.
    pub pos_embed: Tensor,
    pub blocks: Vec<SamBlock>,
    pub neck: Neck,
    /// The second neck, over the first global block's output, with `hd_alpha_downsamples`
    /// folded into its last LayerNorm (the paths after it are linear and bias-free). None when
    /// alpha is zero: the path adds nothing.
    pub neck_hd: Option<Neck>,
    /// The stride-2 3x3 convs after the bilinear resize, as `Neck`'s convs.
    pub downsample: Vec<Linear>,
}

struct SamNames {
    layout: Layout,
}

impl SamNames {
    fn tower(&self, rest: &str) -> String {
        match self.layout {
            Layout::Original => format!("vision_model.vision_tower_high.vision_tower.{rest}"),
            Layout::Hf => format!("model.high_res_vision_model.vision_encoder.{rest}"),
        }
    }
    fn patch(&self, wb: &str) -> String {
        self.tower(&match self.layout {
            Layout::Original => format!("patch_embed.proj.{wb}"),
            Layout::Hf => format!("patch_embed.projection.{wb}"),
        })
    }
    fn pos(&self) -> String {
        self.tower("pos_embed")
    }
    /// `part` in the original's names: norm1, norm2, attn.qkv, attn.proj, attn.rel_pos_h|w, mlp.lin1|2.
    fn block(&self, i: usize, part: &str) -> String {
        match self.layout {
            Layout::Original => self.tower(&format!("blocks.{i}.{part}")),
            Layout::Hf => {
                let p = part.replace("norm1", "layer_norm1").replace("norm2", "layer_norm2");
                self.tower(&format!("layers.{i}.{p}"))
            }
        }
    }
    /// Tensor `k` (0..4: conv, norm, conv, norm) of the main neck or the hd one.
    fn neck(&self, hd: bool, k: usize, wb: &str) -> String {
        match self.layout {
            Layout::Original => self.tower(&format!("{}.{k}.{wb}", if hd { "neck_hd" } else { "neck" })),
            Layout::Hf => {
                let part = ["conv1", "layer_norm1", "conv2", "layer_norm2"][k];
                if hd { format!("model.high_res_vision_neck.{part}.{wb}") } else { self.tower(&format!("neck.{part}.{wb}")) }
            }
        }
    }
    fn downsample(&self, i: usize) -> String {
        match self.layout {
            Layout::Original => self.tower(&format!("downsamples.{i}.weight")),
            Layout::Hf => format!("model.high_res_vision_proj.conv{}.weight", i + 1),
        }
    }
    fn alpha(&self) -> String {
        match self.layout {
            Layout::Original => self.tower("hd_alpha_downsamples"),
            Layout::Hf => "model.high_res_vision_alpha".into(),
        }
    }
}

/// Side of block `i`'s relative-position grid: its window, or the whole grid when global.
fn side(s: &SamConfig, i: usize) -> usize {
    if s.global.contains(&i) { s.grid() } else { s.window }
}

/// (Cout, Cin, k) of the neck's convs and then the downsample convs.
fn convs(s: &SamConfig) -> Vec<(usize, usize, usize)> {
    let mut v = vec![(s.neck, s.width, 1), (s.neck, s.neck, 3)];
    let mut cin = s.neck;
    for &c in &s.downsample {
        v.push((c, cin, 3));
        cin = c;
    }
    v
}

/// Every SAM tensor the graph reads, with its shape.
pub(super) fn plan(layout: Layout, s: &SamConfig, out: &mut Vec<Planned>) {
    let n = SamNames { layout };
    let (w, p, g) = (s.width, s.patch_size, s.grid());
    let hd = s.width / s.heads;
    let mut push = |name: String, shape: Vec<usize>, matrix: Option<(usize, usize)>, act: bool| {
        out.push(Planned { name, shape, matrix: matrix.map(|(r, c)| (Part::Vision, r, c)), act });
    };
    push(n.patch("weight"), vec![w, 3, p, p], Some((w, 3 * p * p)), false);
    push(n.patch("bias"), vec![w], None, false);
    push(n.pos(), vec![1, g, g, w], None, true);
    for i in 0..s.layers {
        let b = |part: &str| n.block(i, part);
        for norm in ["norm1", "norm2"] {
            push(b(&format!("{norm}.weight")), vec![w], None, false);
            push(b(&format!("{norm}.bias")), vec![w], None, false);
        }
        for (part, o, inp) in [("attn.qkv", 3 * w, w), ("attn.proj", w, w), ("mlp.lin1", s.mlp_dim, w), ("mlp.lin2", w, s.mlp_dim)] {
            push(b(&format!("{part}.weight")), vec![o, inp], Some((o, inp)), false);
            push(b(&format!("{part}.bias")), vec![o], None, false);
        }
        let r = 2 * side(s, i) - 1;
        push(b("attn.rel_pos_h"), vec![r, hd], None, true);
        push(b("attn.rel_pos_w"), vec![r, hd], None, true);
    }
    let cv = convs(s);
    for hd in [false, true] {
        for (k, &(co, ci, ks)) in cv[..2].iter().enumerate() {
            push(n.neck(hd, 2 * k, "weight"), vec![co, ci, ks, ks], None, true);
            push(n.neck(hd, 2 * k + 1, "weight"), vec![co], None, false);
            push(n.neck(hd, 2 * k + 1, "bias"), vec![co], None, false);
        }
    }
    for (i, &(co, ci, ks)) in cv[2..].iter().enumerate() {
        push(n.downsample(i), vec![co, ci, ks, ks], None, true);
    }
    push(n.alpha(), vec![1], None, false);
}

impl Loader<'_> {
    /// A conv weight [Cout, Cin, k, k] as a [Cout, Cin*k*k] matrix in the activation dtype
    /// (converted on the GPU).
    async fn conv(&mut self, name: &str, (co, ci, k): (usize, usize, usize)) -> Result<Linear> {
        let (t, bytes, file) = self.get(name, &[co, ci, k, k]).await?;
        let m = upload_matrix(self.gpu, co, ci * k * k, t.dtype, &bytes, self.act, usize::MAX).await.map_err(|e| named(e, file, name))?;
        self.tick(bytes.len());
        Ok(Linear { w: Weight::Dense(m), b: None })
    }

    /// A small tensor decoded on the host, in f32.
    async fn host(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (t, bytes, file) = self.get(name, shape).await?;
        let v = decode(t, &bytes, file)?;
        self.tick(bytes.len());
        Ok(v)
    }

    /// A small tensor in the activation dtype.
    async fn act_table(&mut self, name: &str, shape: &[usize], as_shape: &[usize]) -> Result<Tensor> {
        let v = self.host(name, shape).await?;
        Tensor::from_f32(self.gpu, as_shape, self.act, &v).map_err(|e| named(e, "", name))
    }

    /// One neck; `scale` multiplies its last LayerNorm's weight and bias.
    async fn neck(&mut self, n: &SamNames, hd: bool, cv: &[(usize, usize, usize)], scale: f32) -> Result<Neck> {
        let conv1 = self.conv(&n.neck(hd, 0, "weight"), cv[0]).await?;
        let ln1_w = self.vector(&n.neck(hd, 1, "weight"), cv[0].0).await?;
        let ln1_b = self.vector(&n.neck(hd, 1, "bias"), cv[0].0).await?;
        let conv2 = self.conv(&n.neck(hd, 2, "weight"), cv[1]).await?;
        let c = cv[1].0;
        let scaled = |v: Vec<f32>| v.into_iter().map(|x| x * scale).collect::<Vec<f32>>();
        let w = scaled(self.host(&n.neck(hd, 3, "weight"), &[c]).await?);
        let b = scaled(self.host(&n.neck(hd, 3, "bias"), &[c]).await?);
        let ln2_w = Tensor::from_f32(self.gpu, &[c], DType::F32, &w)?;
        let ln2_b = Tensor::from_f32(self.gpu, &[c], DType::F32, &b)?;
        Ok(Neck { conv1, ln1_w, ln1_b, conv2, ln2_w, ln2_b })
    }
}

/// Uploads the SAM tower (matrices in the recipe's vision format; convs and tables in the
/// activation dtype).
pub(super) async fn load(ld: &mut Loader<'_>, layout: Layout, s: &SamConfig) -> Result<SamWeights> {
    let n = SamNames { layout };
    let (w, p, g) = (s.width, s.patch_size, s.grid());
    let hd = s.width / s.heads;
    let patch = Linear { w: ld.matrix(&n.patch("weight"), &[w, 3, p, p], w, 3 * p * p, Part::Vision).await?, b: Some(ld.vector(&n.patch("bias"), w).await?) };
    let pos_embed = ld.act_table(&n.pos(), &[1, g, g, w], &[g * g, w]).await?;
    let mut blocks = Vec::with_capacity(s.layers);
    for i in 0..s.layers {
        let b = |part: &str| n.block(i, part);
        let r = side(s, i);
        let lin = async |ld: &mut Loader<'_>, part: &str, o: usize, inp: usize| ld.linear(&b(&format!("{part}.weight")), Some(&b(&format!("{part}.bias"))), o, inp, Part::Vision).await;
        blocks.push(SamBlock {
            norm1_w: ld.vector(&b("norm1.weight"), w).await?,
            norm1_b: ld.vector(&b("norm1.bias"), w).await?,
            qkv: lin(ld, "attn.qkv", 3 * w, w).await?,
            proj: lin(ld, "attn.proj", w, w).await?,
            rel_h: ld.act_table(&b("attn.rel_pos_h"), &[2 * r - 1, hd], &[2 * r - 1, hd]).await?,
            rel_w: ld.act_table(&b("attn.rel_pos_w"), &[2 * r - 1, hd], &[2 * r - 1, hd]).await?,
            norm2_w: ld.vector(&b("norm2.weight"), w).await?,
            norm2_b: ld.vector(&b("norm2.bias"), w).await?,
            lin1: lin(ld, "mlp.lin1", s.mlp_dim, w).await?,
            lin2: lin(ld, "mlp.lin2", w, s.mlp_dim).await?,
            window: (!s.global.contains(&i)).then_some(s.window),
        });
    }
    let cv = convs(s);
    let neck = ld.neck(&n, false, &cv, 1.0).await?;
    let alpha = ld.host(&n.alpha(), &[1]).await?[0];
    if !alpha.is_finite() {
        let file = ld.info(&n.alpha(), &[1])?.1;
        return Err(weight_err(file, &n.alpha(), format!("{alpha} is not finite")));
    }
    let neck_hd = if alpha != 0.0 {
        Some(ld.neck(&n, true, &cv, alpha).await?)
    } else {
        // Unread, but counted as done so progress reaches its total.
        for (k, &(co, ci, ks)) in cv[..2].iter().enumerate() {
            for (name, shape) in [(n.neck(true, 2 * k, "weight"), vec![co, ci, ks, ks]), (n.neck(true, 2 * k + 1, "weight"), vec![co]), (n.neck(true, 2 * k + 1, "bias"), vec![co])] {
                let len = ld.info(&name, &shape)?.0.range.len();
                ld.tick(len);
            }
        }
        None
    };
    let mut downsample = Vec::with_capacity(cv.len() - 2);
    for (i, &c) in cv[2..].iter().enumerate() {
        downsample.push(ld.conv(&n.downsample(i), c).await?);
    }
    Ok(SamWeights { patch, pos_embed, blocks, neck, neck_hd, downsample })
}
