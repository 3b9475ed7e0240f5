//! Tensor names → GPU tensors, for both checkpoint layouts.
//!
//! Loading runs in two passes: the first resolves every tensor the graph uses (names from the
//! layout, shapes from the config) and checks it exists with the expected shape, so a bad
//! checkpoint fails before anything is uploaded and the progress total is exact; the second
//! uploads. Matrices go from the file's bytes (a memory-mapped slice natively) to the GPU and are
//! converted there (`ops::convert::upload_matrix`); vectors (norms, biases, the position table)
//! are small and converted on the host. Tensors the graph does not use (the SigLIP pooling
//! head, blocks past `select_layer`) are never read. A source read on demand (the browser)
//! is fetched tensor by tensor, large matrices in row chunks of at most the fetcher's
//! `max_read` bytes, so host memory holds one chunk at a time.

use std::borrow::Cow;

use half::{bf16, f16};

use super::config::{Layout, ModelConfig};
use super::safetensors::{TensorInfo, TensorSource};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, RowSplit, Tensor};
use crate::ops::convert::{stack_rows, upload_matrix, Source};

pub struct Linear {
    /// [out, in] in the weight dtype.
    pub w: RowSplit,
    /// [out], always f32.
    pub b: Option<Tensor>,
}

pub struct VisionBlock {
    pub norm1_w: Tensor,
    pub norm1_b: Tensor,
    /// [3*width, width], rows q | k | v.
    pub qkv: Linear,
    pub proj: Linear,
    pub norm2_w: Tensor,
    pub norm2_b: Tensor,
    pub fc1: Linear,
    pub fc2: Linear,
}

pub struct VisionWeights {
    /// The patch conv as a matrix [width, 3*p*p], columns in (c, ky, kx) order, with its bias.
    pub patch: Linear,
    /// [num_tokens, width] in the activation dtype.
    pub pos_embed: Tensor,
    pub blocks: Vec<VisionBlock>,
    pub norm_w: Tensor,
    pub norm_b: Tensor,
}

pub struct AlignerWeights {
    /// `depth` linears; GELU between consecutive ones.
    pub layers: Vec<Linear>,
}

pub struct LlmLayer {
    pub input_norm: Tensor,
    /// q | k | v projections stacked: [heads*hd + 2*kv_heads*hd, hidden] (one matmul).
    pub qkv: Linear,
    pub o: Linear,
    pub post_norm: Tensor,
    /// gate | up stacked: [2*intermediate, hidden] (one matmul).
    pub gate_up: Linear,
    pub down: Linear,
}

pub struct LlmWeights {
    /// [vocab, hidden] in the weight dtype.
    pub embed: RowSplit,
    pub layers: Vec<LlmLayer>,
    pub norm: Tensor,
    /// [vocab, hidden]; shares `embed`'s buffers when the checkpoint ties them.
    pub lm_head: RowSplit,
}

pub struct Weights {
    pub vision: VisionWeights,
    pub aligner: AlignerWeights,
    pub llm: LlmWeights,
}

/// The tensor names of one layout.
struct Names {
    layout: Layout,
}

impl Names {
    fn vis(&self, rest: &str) -> String {
        match self.layout {
            Layout::Original => format!("vision_model.vision_tower.{rest}"),
            Layout::Hf => format!("model.vision_model.vision_model.{rest}"),
        }
    }
    fn patch(&self, wb: &str) -> String {
        self.vis(&match self.layout {
            Layout::Original => format!("patch_embed.proj.{wb}"),
            Layout::Hf => format!("embeddings.patch_embedding.{wb}"),
        })
    }
    fn pos(&self) -> String {
        self.vis(match self.layout {
            Layout::Original => "pos_embed",
            Layout::Hf => "embeddings.position_embedding.weight",
        })
    }
    /// A block's tensor; `part` uses the original names (norm1, norm2, attn.proj, mlp.fc1, mlp.fc2; attn.q/k/v for HF only).
    fn block(&self, i: usize, part: &str, wb: &str) -> String {
        match self.layout {
            Layout::Original => self.vis(&format!("blocks.{i}.{part}.{wb}")),
            Layout::Hf => {
                let p = match part {
                    "norm1" => "layer_norm1",
                    "norm2" => "layer_norm2",
                    "attn.proj" => "self_attn.out_proj",
                    "attn.q" => "self_attn.q_proj",
                    "attn.k" => "self_attn.k_proj",
                    "attn.v" => "self_attn.v_proj",
                    other => other,
                };
                self.vis(&format!("encoder.layers.{i}.{p}.{wb}"))
            }
        }
    }
    fn vis_norm(&self, wb: &str) -> String {
        self.vis(&match self.layout {
            Layout::Original => format!("norm.{wb}"),
            Layout::Hf => format!("post_layernorm.{wb}"),
        })
    }
    fn aligner(&self, i: usize, depth: usize, wb: &str) -> String {
        match self.layout {
            Layout::Original if depth == 1 => format!("aligner.layers.{wb}"),
            Layout::Original => format!("aligner.layers.{}.{wb}", 2 * i),
            Layout::Hf => format!("model.aligner.linear{}.{wb}", i + 1),
        }
    }
    fn llm(&self, rest: &str) -> String {
        match self.layout {
            Layout::Original => format!("language_model.model.{rest}"),
            Layout::Hf => format!("model.language_model.{rest}"),
        }
    }
    fn lm_head(&self) -> String {
        match self.layout {
            Layout::Original => "language_model.lm_head.weight".into(),
            Layout::Hf => "lm_head.weight".into(),
        }
    }
}

/// Every tensor the graph reads, with its expected shape, in load order.
fn plan(cfg: &ModelConfig, src: &TensorSource) -> Vec<(String, Vec<usize>)> {
    let n = Names { layout: cfg.layout };
    let (v, a, l) = (&cfg.vision, &cfg.aligner, &cfg.llm);
    let (w, p, t) = (v.width, v.patch_size, cfg.num_image_tokens);
    let mut out: Vec<(String, Vec<usize>)> = vec![(n.patch("weight"), vec![w, 3, p, p]), (n.patch("bias"), vec![w])];
    out.push((n.pos(), if cfg.layout == Layout::Original { vec![1, t, w] } else { vec![t, w] }));
    for i in 0..v.layers {
        for norm in ["norm1", "norm2"] {
            out.push((n.block(i, norm, "weight"), vec![w]));
            out.push((n.block(i, norm, "bias"), vec![w]));
        }
        match cfg.layout {
            Layout::Original => {
                out.push((n.block(i, "attn.qkv", "weight"), vec![3 * w, w]));
                out.push((n.block(i, "attn.qkv", "bias"), vec![3 * w]));
            }
            Layout::Hf => {
                for part in ["attn.q", "attn.k", "attn.v"] {
                    out.push((n.block(i, part, "weight"), vec![w, w]));
                    out.push((n.block(i, part, "bias"), vec![w]));
                }
            }
        }
        for (part, o, inp) in [("attn.proj", w, w), ("mlp.fc1", v.mlp_dim, w), ("mlp.fc2", w, v.mlp_dim)] {
            out.push((n.block(i, part, "weight"), vec![o, inp]));
            out.push((n.block(i, part, "bias"), vec![o]));
        }
    }
    out.push((n.vis_norm("weight"), vec![w]));
    out.push((n.vis_norm("bias"), vec![w]));
    for i in 0..a.depth {
        let inp = if i == 0 { a.input_dim } else { a.n_embed };
        out.push((n.aligner(i, a.depth, "weight"), vec![a.n_embed, inp]));
        out.push((n.aligner(i, a.depth, "bias"), vec![a.n_embed]));
    }
    let (h, q, kv) = (l.hidden, l.heads * l.head_dim, l.kv_heads * l.head_dim);
    out.push((n.llm("embed_tokens.weight"), vec![l.vocab, h]));
    for i in 0..l.layers {
        let ly = |s: &str| n.llm(&format!("layers.{i}.{s}.weight"));
        out.push((ly("input_layernorm"), vec![h]));
        out.push((ly("self_attn.q_proj"), vec![q, h]));
        out.push((ly("self_attn.k_proj"), vec![kv, h]));
        out.push((ly("self_attn.v_proj"), vec![kv, h]));
        out.push((ly("self_attn.o_proj"), vec![h, q]));
        out.push((ly("post_attention_layernorm"), vec![h]));
        out.push((ly("mlp.gate_proj"), vec![l.intermediate, h]));
        out.push((ly("mlp.up_proj"), vec![l.intermediate, h]));
        out.push((ly("mlp.down_proj"), vec![h, l.intermediate]));
    }
    out.push((n.llm("norm.weight"), vec![h]));
    // A tied checkpoint may omit lm_head; the embedding table serves then.
    if !l.tie_embeddings || src.contains(&n.lm_head()) {
        out.push((n.lm_head(), vec![l.vocab, h]));
    }
    out
}

struct Loader<'a> {
    gpu: &'a Gpu,
    src: &'a TensorSource,
    wdtype: DType,
    act: DType,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

fn weight_err(file: &str, tensor: &str, message: impl Into<String>) -> Error {
    Error::Weight { file: file.to_string(), tensor: tensor.to_string(), message: message.into() }
}

/// GPU limit and memory errors name the tensor that hit them.
fn named(e: Error, file: &str, tensor: &str) -> Error {
    let at = |what: String| format!("{what} of tensor `{tensor}` in {file}");
    match e {
        Error::BindingLimit { op, what, needed, limit } => Error::BindingLimit { op, what: at(what), needed, limit },
        Error::BufferLimit { what, needed, limit } => Error::BufferLimit { what: at(what), needed, limit },
        Error::OutOfMemory { context } => Error::OutOfMemory { context: at(context) },
        e => e,
    }
}

/// Host decode of a small tensor (norms, biases, positions) to f32.
fn decode(t: &TensorInfo, bytes: &[u8]) -> Vec<f32> {
    match t.dtype {
        Source::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Source::F16 => bytes.chunks_exact(2).map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
        Source::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
    }
}

impl<'a> Loader<'a> {
    /// The tensor's entry, checked against the shape `plan` expects (already validated; re-checked cheaply).
    fn info(&self, name: &str, shape: &[usize]) -> Result<(&'a TensorInfo, &'a str)> {
        let (t, file) = self.src.need_info(name)?;
        if t.shape != shape {
            return Err(weight_err(file, name, format!("shape {:?}, expected {shape:?}", t.shape)));
        }
        Ok((t, file))
    }

    /// The tensor and its bytes (borrowed from memory or fetched).
    async fn get(&self, name: &str, shape: &[usize]) -> Result<(&'a TensorInfo, Cow<'a, [u8]>, &'a str)> {
        let (t, file) = self.info(name, shape)?;
        let bytes = self.src.read(name, 0..t.range.len()).await?;
        Ok((t, bytes, file))
    }

    fn tick(&mut self, bytes: usize) {
        self.done += bytes as u64;
        (self.progress)(self.done, self.total);
    }

    /// A 1-D tensor (norm weight, bias) as f32.
    async fn vector(&mut self, name: &str, n: usize) -> Result<Tensor> {
        let (t, bytes, file) = self.get(name, &[n]).await?;
        let data = decode(t, &bytes);
        let len = bytes.len();
        let out = Tensor::from_f32(self.gpu, &[n], DType::F32, &data).map_err(|e| named(e, file, name))?;
        self.tick(len);
        Ok(out)
    }

    /// A weight matrix stored with `shape` (whose product is rows*cols) as [rows, cols] in the weight dtype.
    async fn matrix(&mut self, name: &str, shape: &[usize], rows: usize, cols: usize) -> Result<RowSplit> {
        let (t, file) = self.info(name, shape)?;
        if rows == 0 {
            return upload_matrix(self.gpu, rows, cols, t.dtype, &[], self.wdtype, usize::MAX).await;
        }
        let row_bytes = cols * t.dtype.size();
        // In memory (a mapped file): one upload. Fetched: row chunks, each uploaded before the next is read.
        let per = self.src.max_read(name).map_or(rows, |m| (m / row_bytes.max(1)).max(1));
        let mut out = RowSplit { rows, cols, dtype: self.wdtype, parts: Vec::new() };
        let mut r0 = 0;
        while r0 < rows {
            let n = per.min(rows - r0);
            let bytes = self.src.read(name, r0 * row_bytes..(r0 + n) * row_bytes).await?;
            let m = upload_matrix(self.gpu, n, cols, t.dtype, &bytes, self.wdtype, usize::MAX).await.map_err(|e| named(e, file, name))?;
            out.parts.extend(m.parts.into_iter().map(|(r, p)| (r0 + r, p)));
            self.tick(bytes.len());
            r0 += n;
        }
        Ok(out)
    }

    async fn linear(&mut self, w: &str, b: Option<&str>, out: usize, inp: usize) -> Result<Linear> {
        let w = self.matrix(w, &[out, inp], out, inp).await?;
        let b = match b {
            Some(b) => Some(self.vector(b, out).await?),
            None => None,
        };
        Ok(Linear { w, b })
    }

    /// Bias-free weights [rows_i, cols] stacked row-wise into one matrix (one matmul instead of
    /// several): each is uploaded as any matrix (streamed in row chunks where fetched), then the
    /// GPU copies them into the stacked parts.
    async fn stacked(&mut self, parts: &[(&str, usize)], cols: usize) -> Result<Linear> {
        let mut mats = Vec::with_capacity(parts.len());
        for &(name, rows) in parts {
            mats.push(self.matrix(name, &[rows, cols], rows, cols).await?);
        }
        let w = stack_rows(self.gpu, mats).await.map_err(|e| named(e, self.src.origin(), parts[0].0))?;
        Ok(Linear { w, b: None })
    }

    /// q, k, v weights [w, w] each stacked into one [3w, w] matrix (HF layout), biases likewise.
    async fn qkv_concat(&mut self, names: [(String, String); 3], w: usize) -> Result<Linear> {
        let mut dtype = None;
        let mut bytes = Vec::new();
        let mut bias = Vec::with_capacity(3 * w);
        for (wn, bn) in &names {
            let (t, b, file) = self.get(wn, &[w, w]).await?;
            if dtype.is_some_and(|d| d != t.dtype) {
                return Err(weight_err(file, wn, format!("dtype {:?} differs from the other projections' {:?}", t.dtype, dtype)));
            }
            dtype = Some(t.dtype);
            bytes.extend_from_slice(&b);
            let (tb, bb, _) = self.get(bn, &[w]).await?;
            bias.extend(decode(tb, &bb));
        }
        let Some(dtype) = dtype else { return Err(Error::Invalid("qkv: no projections".into())) };
        let m = upload_matrix(self.gpu, 3 * w, w, dtype, &bytes, self.wdtype, usize::MAX).await.map_err(|e| named(e, self.src.origin(), &names[0].0))?;
        let b = Tensor::from_f32(self.gpu, &[3 * w], DType::F32, &bias)?;
        self.tick(bytes.len() + bias.len() * dtype.size());
        Ok(Linear { w: m, b: Some(b) })
    }
}

/// Uploads every tensor the graph uses. `wdtype` (F32 or F16) is the matrices' dtype on the GPU,
/// `act` (F32 or F16) the activation dtype (the position table is stored in it). `progress`
/// receives (bytes done, bytes total) after each tensor.
pub async fn load_weights(gpu: &Gpu, cfg: &ModelConfig, files: &TensorSource, wdtype: DType, act: DType, progress: &mut dyn FnMut(u64, u64)) -> Result<Weights> {
    for (what, d) in [("weight", wdtype), ("activation", act)] {
        if d == DType::U32 {
            return Err(Error::DType { op: "load", dtype: d.to_string(), detail: format!("the {what} dtype is f32 or f16") });
        }
    }
    // Pass 1: every tensor present with its expected shape, before anything is uploaded.
    let mut total = 0u64;
    for (name, shape) in plan(cfg, files) {
        let (t, file) = files.need_info(&name)?;
        if t.shape != shape {
            return Err(weight_err(file, &name, format!("shape {:?}, expected {shape:?}", t.shape)));
        }
        total += t.range.len() as u64;
    }
    let mut ld = Loader { gpu, src: files, wdtype, act, done: 0, total, progress };
    let n = Names { layout: cfg.layout };
    let (vc, ac, lc) = (&cfg.vision, &cfg.aligner, &cfg.llm);
    let (w, p, t) = (vc.width, vc.patch_size, cfg.num_image_tokens);

    // Vision tower. The conv weight [w, 3, p, p] is already [w, 3*p*p] in (c, ky, kx) order.
    let patch = Linear { w: ld.matrix(&n.patch("weight"), &[w, 3, p, p], w, 3 * p * p).await?, b: Some(ld.vector(&n.patch("bias"), w).await?) };
    let pos_shape = if cfg.layout == Layout::Original { vec![1, t, w] } else { vec![t, w] };
    let (pi, pb, pf) = ld.get(&n.pos(), &pos_shape).await?;
    let pos_embed = Tensor::from_f32(gpu, &[t, w], ld.act, &decode(pi, &pb)).map_err(|e| named(e, pf, &n.pos()))?; // [num_tokens, width]
    ld.tick(pb.len());
    let mut blocks = Vec::with_capacity(vc.layers);
    for i in 0..vc.layers {
        let b = |part: &str, wb: &str| n.block(i, part, wb);
        let norm1_w = ld.vector(&b("norm1", "weight"), w).await?;
        let norm1_b = ld.vector(&b("norm1", "bias"), w).await?;
        let qkv = match cfg.layout {
            Layout::Original => ld.linear(&b("attn.qkv", "weight"), Some(&b("attn.qkv", "bias")), 3 * w, w).await?,
            Layout::Hf => ld.qkv_concat(["attn.q", "attn.k", "attn.v"].map(|p| (b(p, "weight"), b(p, "bias"))), w).await?,
        };
        let proj = ld.linear(&b("attn.proj", "weight"), Some(&b("attn.proj", "bias")), w, w).await?;
        let norm2_w = ld.vector(&b("norm2", "weight"), w).await?;
        let norm2_b = ld.vector(&b("norm2", "bias"), w).await?;
        let fc1 = ld.linear(&b("mlp.fc1", "weight"), Some(&b("mlp.fc1", "bias")), vc.mlp_dim, w).await?;
        let fc2 = ld.linear(&b("mlp.fc2", "weight"), Some(&b("mlp.fc2", "bias")), w, vc.mlp_dim).await?;
        blocks.push(VisionBlock { norm1_w, norm1_b, qkv, proj, norm2_w, norm2_b, fc1, fc2 });
    }
    let norm_w = ld.vector(&n.vis_norm("weight"), w).await?;
    let norm_b = ld.vector(&n.vis_norm("bias"), w).await?;
    let vision = VisionWeights { patch, pos_embed, blocks, norm_w, norm_b };

    let mut layers = Vec::with_capacity(ac.depth);
    for i in 0..ac.depth {
        let inp = if i == 0 { ac.input_dim } else { ac.n_embed };
        layers.push(ld.linear(&n.aligner(i, ac.depth, "weight"), Some(&n.aligner(i, ac.depth, "bias")), ac.n_embed, inp).await?);
    }
    let aligner = AlignerWeights { layers };

    let (h, q, kv) = (lc.hidden, lc.heads * lc.head_dim, lc.kv_heads * lc.head_dim);
    let embed = ld.matrix(&n.llm("embed_tokens.weight"), &[lc.vocab, h], lc.vocab, h).await?;
    let mut layers = Vec::with_capacity(lc.layers);
    for i in 0..lc.layers {
        let ly = |s: &str| n.llm(&format!("layers.{i}.{s}.weight"));
        layers.push(LlmLayer {
            input_norm: ld.vector(&ly("input_layernorm"), h).await?,
            qkv: ld.stacked(&[(&ly("self_attn.q_proj"), q), (&ly("self_attn.k_proj"), kv), (&ly("self_attn.v_proj"), kv)], h).await?,
            o: ld.linear(&ly("self_attn.o_proj"), None, h, q).await?,
            post_norm: ld.vector(&ly("post_attention_layernorm"), h).await?,
            gate_up: ld.stacked(&[(&ly("mlp.gate_proj"), lc.intermediate), (&ly("mlp.up_proj"), lc.intermediate)], h).await?,
            down: ld.linear(&ly("mlp.down_proj"), None, h, lc.intermediate).await?,
        });
    }
    let norm = ld.vector(&n.llm("norm.weight"), h).await?;
    let lm_head = if files.contains(&n.lm_head()) || !lc.tie_embeddings { ld.matrix(&n.lm_head(), &[lc.vocab, h], lc.vocab, h).await? } else { embed.clone() };
    let llm = LlmWeights { embed, layers, norm, lm_head };
    Ok(Weights { vision, aligner, llm })
}
