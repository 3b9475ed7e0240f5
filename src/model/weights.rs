//! Tensor names → GPU tensors, for both checkpoint layouts.
//!
//! Loading runs in two passes: the first resolves every tensor the graph uses (names from the
//! layout, shapes from the config) and checks it exists with the expected shape, so a bad
//! checkpoint fails before anything is uploaded and the progress total is exact; the second
//! uploads. Matrices go from the file's bytes (a memory-mapped slice natively) to the GPU and are
//! converted there (`ops::convert::upload_matrix`), or quantised there in row chunks when the
//! recipe gives them an int8/int4 format (`quant::load`); vectors (norms, biases, the position table)
//! are small and converted on the host. Tensors the graph does not use (the SigLIP pooling
//! head, blocks past `select_layer`) are never read. A source read on demand (the browser)
//! is fetched tensor by tensor, large matrices in row chunks of at most the fetcher's
//! `max_read` bytes, so host memory holds one chunk at a time.

use std::borrow::Cow;

use super::config::{Layout, ModelConfig};
use super::safetensors::{TensorInfo, TensorSource};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, RowSplit, Tensor};
use crate::ops::convert::{stack_rows, upload_matrix, Source};
use crate::quant::{file, Format, Packed, Part, QFormat, QMatrix, QuantOn, Quantiser, Recipe, Weight};

pub struct Linear {
    /// [out, in], dense or quantised.
    pub w: Weight,
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
    /// The hybrid aligner's (high_up_proj, low_up_proj): each tower to n_embed/2, concatenated.
    pub hybrid: Option<(Linear, Linear)>,
    /// The linears after the input (all `depth` of them without `hybrid`); GELU before each
    /// but the first of a plain aligner.
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
    /// [vocab, hidden], dense or quantised.
    pub embed: Weight,
    pub layers: Vec<LlmLayer>,
    pub norm: Tensor,
    /// [vocab, hidden]; shares `embed`'s buffers when the checkpoint ties them (same format).
    pub lm_head: Weight,
}

pub struct Weights {
    /// SigLIP (the low-res tower of the hybrid).
    pub vision: VisionWeights,
    /// The hybrid's high-res SAM-B tower.
    pub sam: Option<super::sam_weights::SamWeights>,
    pub aligner: AlignerWeights,
    pub llm: LlmWeights,
}

/// The tensor names of one layout.
pub(super) struct Names {
    pub(super) layout: Layout,
    /// The hybrid checkpoint: SigLIP is its low-res tower, the aligner splits.
    pub(super) hybrid: bool,
}

impl Names {
    pub(super) fn of(cfg: &ModelConfig) -> Names {
        Names { layout: cfg.layout, hybrid: cfg.sam.is_some() }
    }
    fn vis(&self, rest: &str) -> String {
        match (self.layout, self.hybrid) {
            (Layout::Original, false) => format!("vision_model.vision_tower.{rest}"),
            (Layout::Original, true) => format!("vision_model.vision_tower_low.vision_tower.{rest}"),
            (Layout::Hf, _) => format!("model.vision_model.vision_model.{rest}"),
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
    /// Linear `i` of a plain aligner, or the `i`-th after the inputs of the hybrid one.
    fn aligner(&self, i: usize, depth: usize, wb: &str) -> String {
        match (self.layout, self.hybrid) {
            (Layout::Original, false) if depth == 1 => format!("aligner.layers.{wb}"),
            (Layout::Original, false) => format!("aligner.layers.{}.{wb}", 2 * i),
            // Sequential(GELU, Linear, GELU, Linear, ...) after the concatenation.
            (Layout::Original, true) => format!("aligner.layers.{}.{wb}", 2 * i + 1),
            (Layout::Hf, false) => format!("model.aligner.linear{}.{wb}", i + 1),
            (Layout::Hf, true) => format!("model.aligner.proj.{wb}"),
        }
    }
    /// The hybrid aligner's input projection of the high-res (SAM) or low-res (SigLIP) tower.
    fn aligner_in(&self, high: bool, wb: &str) -> String {
        match (self.layout, high) {
            (Layout::Original, true) => format!("aligner.high_up_proj.{wb}"),
            (Layout::Original, false) => format!("aligner.low_up_proj.{wb}"),
            (Layout::Hf, true) => format!("model.aligner.high_res_vision_proj.{wb}"),
            (Layout::Hf, false) => format!("model.aligner.vision_proj.{wb}"),
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

/// One tensor the graph reads: its name, its shape in the checkpoint and, for weight matrices,
/// the part of the model it belongs to and its [rows, cols] as a matrix.
#[derive(Clone, Debug)]
pub struct Planned {
    pub name: String,
    pub shape: Vec<usize>,
    pub matrix: Option<(Part, usize, usize)>,
    /// Held on the GPU in the activation dtype (position and relative-position tables, convs);
    /// other non-matrix tensors are f32.
    pub act: bool,
}

/// Every tensor the graph reads, with its expected shape, in load order.
pub fn plan(cfg: &ModelConfig, src: &TensorSource) -> Vec<Planned> {
    plan_with(cfg, file::has(src, &Names::of(cfg).lm_head()))
}

pub(crate) fn plan_with(cfg: &ModelConfig, lm_head_present: bool) -> Vec<Planned> {
    let n = Names::of(cfg);
    let (v, a, l) = (&cfg.vision, &cfg.aligner, &cfg.llm);
    let (w, p, t) = (v.width, v.patch_size, cfg.num_image_tokens);
    let mut out = Vec::new();
    let vector = |out: &mut Vec<Planned>, name: String, shape: Vec<usize>| out.push(Planned { name, shape, matrix: None, act: false });
    let matrix = |out: &mut Vec<Planned>, name: String, part: Part, rows: usize, cols: usize| out.push(Planned { name, shape: vec![rows, cols], matrix: Some((part, rows, cols)), act: false });
    if let Some(sam) = &cfg.sam {
        super::sam_weights::plan(cfg.layout, sam, &mut out);
    }
    // The patch conv [w, 3, p, p] is a [w, 3*p*p] matrix.
    out.push(Planned { name: n.patch("weight"), shape: vec![w, 3, p, p], matrix: Some((Part::Vision, w, 3 * p * p)), act: false });
    vector(&mut out, n.patch("bias"), vec![w]);
    out.push(Planned { name: n.pos(), shape: if cfg.layout == Layout::Original { vec![1, t, w] } else { vec![t, w] }, matrix: None, act: true });
    for i in 0..v.layers {
        for norm in ["norm1", "norm2"] {
            vector(&mut out, n.block(i, norm, "weight"), vec![w]);
            vector(&mut out, n.block(i, norm, "bias"), vec![w]);
        }
        match cfg.layout {
            Layout::Original => {
                matrix(&mut out, n.block(i, "attn.qkv", "weight"), Part::Vision, 3 * w, w);
                vector(&mut out, n.block(i, "attn.qkv", "bias"), vec![3 * w]);
            }
            Layout::Hf => {
                for part in ["attn.q", "attn.k", "attn.v"] {
                    matrix(&mut out, n.block(i, part, "weight"), Part::Vision, w, w);
                    vector(&mut out, n.block(i, part, "bias"), vec![w]);
                }
            }
        }
        for (part, o, inp) in [("attn.proj", w, w), ("mlp.fc1", v.mlp_dim, w), ("mlp.fc2", w, v.mlp_dim)] {
            matrix(&mut out, n.block(i, part, "weight"), Part::Vision, o, inp);
            vector(&mut out, n.block(i, part, "bias"), vec![o]);
        }
    }
    vector(&mut out, n.vis_norm("weight"), vec![w]);
    vector(&mut out, n.vis_norm("bias"), vec![w]);
    for (high, dim) in hybrid_inputs(cfg) {
        matrix(&mut out, n.aligner_in(high, "weight"), Part::Aligner, a.n_embed / 2, dim);
        vector(&mut out, n.aligner_in(high, "bias"), vec![a.n_embed / 2]);
    }
    for (i, inp) in aligner_inputs(cfg).into_iter().enumerate() {
        matrix(&mut out, n.aligner(i, a.depth, "weight"), Part::Aligner, a.n_embed, inp);
        vector(&mut out, n.aligner(i, a.depth, "bias"), vec![a.n_embed]);
    }
    let (h, q, kv) = (l.hidden, l.heads * l.head_dim, l.kv_heads * l.head_dim);
    matrix(&mut out, n.llm("embed_tokens.weight"), Part::Embed, l.vocab, h);
    for i in 0..l.layers {
        let ly = |s: &str| n.llm(&format!("layers.{i}.{s}.weight"));
        vector(&mut out, ly("input_layernorm"), vec![h]);
        matrix(&mut out, ly("self_attn.q_proj"), Part::Llm, q, h);
        matrix(&mut out, ly("self_attn.k_proj"), Part::Llm, kv, h);
        matrix(&mut out, ly("self_attn.v_proj"), Part::Llm, kv, h);
        matrix(&mut out, ly("self_attn.o_proj"), Part::Llm, h, q);
        vector(&mut out, ly("post_attention_layernorm"), vec![h]);
        matrix(&mut out, ly("mlp.gate_proj"), Part::Llm, l.intermediate, h);
        matrix(&mut out, ly("mlp.up_proj"), Part::Llm, l.intermediate, h);
        matrix(&mut out, ly("mlp.down_proj"), Part::Llm, h, l.intermediate);
    }
    vector(&mut out, n.llm("norm.weight"), vec![h]);
    // A tied checkpoint may omit lm_head; the embedding table serves then.
    if !l.tie_embeddings || lm_head_present {
        matrix(&mut out, n.lm_head(), Part::LmHead, l.vocab, h);
    }
    out
}

/// (high-res?, input width) of the hybrid aligner's two input projections, high first.
fn hybrid_inputs(cfg: &ModelConfig) -> Vec<(bool, usize)> {
    match &cfg.sam {
        Some(s) if cfg.aligner.hybrid => vec![(true, s.out_dim()), (false, cfg.vision.width)],
        _ => Vec::new(),
    }
}

/// Input widths of the aligner's linears after any hybrid input projections.
fn aligner_inputs(cfg: &ModelConfig) -> Vec<usize> {
    let a = &cfg.aligner;
    if a.hybrid {
        vec![a.n_embed; a.depth - 1]
    } else {
        (0..a.depth).map(|i| if i == 0 { a.input_dim } else { a.n_embed }).collect()
    }
}

/// How a load runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where int8/int4 weights of a dense checkpoint are quantised.
    pub quantise_on: QuantOn,
}

impl Default for LoadOptions {
    /// The GPU, unless `DSVL_CPU_QUANT=1`.
    fn default() -> Self {
        LoadOptions { quantise_on: QuantOn::from_env() }
    }
}

/// Where a load stands, reported after each tensor (and each row chunk of a large one).
#[derive(Clone, Debug, PartialEq)]
pub enum LoadProgress {
    /// Checkpoint bytes of the tensors the model uses that are on the GPU (quantised ones included).
    Upload { done: u64, total: u64 },
    /// The matrices quantised at load: checkpoint bytes and tensors done of their totals, where
    /// the work runs, and why it left the GPU if it did. Reported at the start (nothing done)
    /// when the load quantises anything.
    Quantise { done: u64, total: u64, tensors: usize, tensors_total: usize, on: QuantOn, note: Option<String> },
}

/// Progress of the quantised matrices.
#[derive(Default)]
struct QuantCount {
    done: u64,
    total: u64,
    tensors: usize,
    tensors_total: usize,
}

pub(super) struct Loader<'a> {
    pub(super) gpu: &'a Gpu,
    src: &'a TensorSource,
    pub(super) recipe: &'a Recipe,
    pub(super) act: DType,
    done: u64,
    total: u64,
    quant: Quantiser,
    q: QuantCount,
    progress: &'a mut dyn FnMut(&LoadProgress),
}

pub(super) fn weight_err(file: &str, tensor: &str, message: impl Into<String>) -> Error {
    Error::Weight { file: file.to_string(), tensor: tensor.to_string(), message: message.into() }
}

/// GPU limit and memory errors name the tensor that hit them.
pub(super) fn named(e: Error, file: &str, tensor: &str) -> Error {
    let at = |what: String| format!("{what} of tensor `{tensor}` in {file}");
    match e {
        Error::BindingLimit { op, what, needed, limit } => Error::BindingLimit { op, what: at(what), needed, limit },
        Error::BufferLimit { what, needed, limit } => Error::BufferLimit { what: at(what), needed, limit },
        Error::OutOfMemory { context } => Error::OutOfMemory { context: at(context) },
        e => e,
    }
}

/// Host decode of a small tensor (norms, biases, positions) to f32.
pub(super) fn decode(t: &TensorInfo, bytes: &[u8], file: &str) -> Result<Vec<f32>> {
    let mut out = vec![0f32; t.numel()];
    file::decode_into(t.dtype, bytes, &mut out).map_err(|e| weight_err(file, &t.name, e.to_string()))?;
    Ok(out)
}

impl<'a> Loader<'a> {
    /// The tensor's entry, checked against the shape `plan` expects (already validated; re-checked cheaply).
    pub(super) fn info(&self, name: &str, shape: &[usize]) -> Result<(&'a TensorInfo, &'a str)> {
        let (t, file) = self.src.need_info(name)?;
        if t.shape != shape {
            return Err(weight_err(file, name, format!("shape {:?}, expected {shape:?}", t.shape)));
        }
        Ok((t, file))
    }

    /// The tensor and its bytes (borrowed from memory or fetched).
    pub(super) async fn get(&self, name: &str, shape: &[usize]) -> Result<(&'a TensorInfo, Cow<'a, [u8]>, &'a str)> {
        let (t, file) = self.info(name, shape)?;
        let bytes = self.src.read(name, 0..t.range.len()).await?;
        Ok((t, bytes, file))
    }

    pub(super) fn tick(&mut self, bytes: usize) {
        self.done += bytes as u64;
        (self.progress)(&LoadProgress::Upload { done: self.done, total: self.total });
    }

    /// Checkpoint matrices `pieces` ([rows_i, cols] each) stacked row-wise and quantised into
    /// `fmt` (on the GPU unless the options or a failed probe say otherwise).
    async fn quantised(&mut self, pieces: &[(&str, usize)], cols: usize, fmt: QFormat) -> Result<QMatrix> {
        self.quant.prepare(self.gpu, self.src, pieces, fmt).await?;
        let (on, note) = (self.quant.on(), self.quant.note().map(str::to_string));
        let Loader { gpu, src, quant, q, done, total, progress, .. } = self;
        let mut tick = |bytes: usize, tensors: usize| {
            *done += bytes as u64;
            q.done += bytes as u64;
            q.tensors += tensors;
            progress(&LoadProgress::Quantise { done: q.done, total: q.total, tensors: q.tensors, tensors_total: q.tensors_total, on, note: note.clone() });
            progress(&LoadProgress::Upload { done: *done, total: *total });
        };
        let first = pieces.first().map_or("", |p| p.0);
        let file = src.need_info(first).map_or(src.origin(), |(_, f)| f);
        quant.quantise(gpu, src, pieces, cols, fmt, &mut tick).await.map_err(|e| named(e, file, first))
    }

    /// A 1-D tensor (norm weight, bias) as f32.
    pub(super) async fn vector(&mut self, name: &str, n: usize) -> Result<Tensor> {
        let (t, bytes, file) = self.get(name, &[n]).await?;
        let data = decode(t, &bytes, file)?;
        let len = bytes.len();
        let out = Tensor::from_f32(self.gpu, &[n], DType::F32, &data).map_err(|e| named(e, file, name))?;
        self.tick(len);
        Ok(out)
    }

    /// A weight stored with `shape` (whose product is rows*cols) as [rows, cols] in `part`'s
    /// format: converted on the GPU when dense (fetched in row chunks where the source is
    /// remote), quantised (`quant::load`) when not. A weight the checkpoint holds quantised is
    /// uploaded as it is, whatever the recipe says.
    pub(super) async fn matrix(&mut self, name: &str, shape: &[usize], rows: usize, cols: usize, part: Part) -> Result<Weight> {
        if file::is_quantised(self.src, name) {
            let p = file::read_quantised(self.src, name, rows, cols).await?;
            let w = QMatrix::upload(self.gpu, &p)?;
            self.tick(p.bytes());
            return Ok(Weight::Quant(w));
        }
        let to = match self.recipe.get(part) {
            Format::Q(fmt) => {
                self.info(name, shape)?;
                return Ok(Weight::Quant(self.quantised(&[(name, rows)], cols, fmt).await?));
            }
            f => f.dense().unwrap_or(DType::F32),
        };
        let (t, file) = self.info(name, shape)?;
        if rows == 0 {
            return Ok(Weight::Dense(upload_matrix(self.gpu, rows, cols, t.dtype, &[], to, usize::MAX).await?));
        }
        let row_bytes = cols * t.dtype.size();
        // In memory (a mapped file): one upload. Fetched: row chunks, each uploaded before the next is read.
        let per = self.src.max_read(name).map_or(rows, |m| (m / row_bytes.max(1)).max(1));
        let mut out = RowSplit { rows, cols, dtype: to, parts: Vec::new() };
        let mut r0 = 0;
        while r0 < rows {
            let n = per.min(rows - r0);
            let bytes = self.src.read(name, r0 * row_bytes..(r0 + n) * row_bytes).await?;
            let m = upload_matrix(self.gpu, n, cols, t.dtype, &bytes, to, usize::MAX).await.map_err(|e| named(e, file, name))?;
            out.parts.extend(m.parts.into_iter().map(|(r, p)| (r0 + r, p)));
            self.tick(bytes.len());
            r0 += n;
        }
        Ok(Weight::Dense(out))
    }

    pub(super) async fn linear(&mut self, w: &str, b: Option<&str>, out: usize, inp: usize, part: Part) -> Result<Linear> {
        let w = self.matrix(w, &[out, inp], out, inp, part).await?;
        let b = match b {
            Some(b) => Some(self.vector(b, out).await?),
            None => None,
        };
        Ok(Linear { w, b })
    }

    /// Bias-free weights [rows_i, cols] of one part stacked row-wise into one matrix (one
    /// matmul instead of several). Dense: each uploaded as any matrix (streamed in row chunks
    /// where fetched), then copied together on the GPU. Quantised: rows are independent, so
    /// the codes and scales are concatenated.
    async fn stacked(&mut self, parts: &[(&str, usize)], cols: usize, part: Part) -> Result<Linear> {
        let origin = self.src.origin();
        let quantised = parts.iter().any(|(n, _)| file::is_quantised(self.src, n)) || matches!(self.recipe.get(part), Format::Q(_));
        if !quantised {
            let mut mats = Vec::with_capacity(parts.len());
            for &(name, rows) in parts {
                match self.matrix(name, &[rows, cols], rows, cols, part).await? {
                    Weight::Dense(m) => mats.push(m),
                    Weight::Quant(_) => return Err(weight_err(origin, name, "quantised while the matrices stacked with it are dense")),
                }
            }
            let w = stack_rows(self.gpu, mats).await.map_err(|e| named(e, origin, parts[0].0))?;
            return Ok(Linear { w: Weight::Dense(w), b: None });
        }
        if let (false, Format::Q(fmt)) = (parts.iter().any(|(n, _)| file::is_quantised(self.src, n)), self.recipe.get(part)) {
            for &(name, rows) in parts {
                self.info(name, &[rows, cols])?;
            }
            return Ok(Linear { w: Weight::Quant(self.quantised(parts, cols, fmt).await?), b: None });
        }
        // Some already quantised in the file: those as they are, the rest on the CPU.
        let mut packed = Vec::with_capacity(parts.len());
        for &(name, rows) in parts {
            // Progress counts the bytes read: packed ones, or the checkpoint's.
            let (p, read) = if file::is_quantised(self.src, name) {
                let p = file::read_quantised(self.src, name, rows, cols).await?;
                let n = p.bytes();
                (p, n)
            } else if let Format::Q(fmt) = self.recipe.get(part) {
                let (t, b, file) = self.get(name, &[rows, cols]).await?;
                (file::quantize_bytes(fmt, t.dtype, &b, rows, cols).map_err(|e| weight_err(file, name, e.to_string()))?, b.len())
            } else {
                return Err(weight_err(origin, name, "dense while the matrices stacked with it are quantised"));
            };
            packed.push(p);
            self.tick(read);
        }
        let p = Packed::concat(&packed).map_err(|e| weight_err(origin, parts[0].0, e.to_string()))?;
        Ok(Linear { w: Weight::Quant(QMatrix::upload(self.gpu, &p).map_err(|e| named(e, origin, parts[0].0))?), b: None })
    }

    /// q, k, v weights [w, w] each stacked into one [3w, w] matrix (HF layout), biases likewise.
    /// Quantised rows are independent, so quantised projections stack as codes and scales.
    async fn qkv_concat(&mut self, names: [(String, String); 3], w: usize) -> Result<Linear> {
        let mut bias = Vec::with_capacity(3 * w);
        for (_, bn) in &names {
            let (tb, bb, file) = self.get(bn, &[w]).await?;
            bias.extend(decode(tb, &bb, file)?);
            self.tick(bb.len());
        }
        let b = Some(Tensor::from_f32(self.gpu, &[3 * w], DType::F32, &bias)?);
        let quantised = names.iter().any(|(wn, _)| file::is_quantised(self.src, wn));
        if let (false, Format::Q(fmt)) = (quantised, self.recipe.vision) {
            for (wn, _) in &names {
                self.info(wn, &[w, w])?;
            }
            let pieces = names.each_ref().map(|(wn, _)| (wn.as_str(), w));
            return Ok(Linear { w: Weight::Quant(self.quantised(&pieces, w, fmt).await?), b });
        }
        if quantised || matches!(self.recipe.vision, Format::Q(_)) {
            let mut parts = Vec::with_capacity(3);
            for (wn, _) in &names {
                // Progress counts the bytes read: packed ones, or the checkpoint's.
                let (p, read) = match (file::is_quantised(self.src, wn), self.recipe.vision) {
                    (true, _) => {
                        let p = file::read_quantised(self.src, wn, w, w).await?;
                        let n = p.bytes();
                        (p, n)
                    }
                    (false, Format::Q(fmt)) => {
                        let (t, b, file) = self.get(wn, &[w, w]).await?;
                        (file::quantize_bytes(fmt, t.dtype, &b, w, w).map_err(|e| weight_err(file, wn, e.to_string()))?, b.len())
                    }
                    (false, _) => return Err(weight_err(self.src.origin(), wn, "dense while the other projections are quantised")),
                };
                parts.push(p);
                self.tick(read);
            }
            let p = Packed::concat(&parts).map_err(|e| weight_err(self.src.origin(), &names[0].0, e.to_string()))?;
            return Ok(Linear { w: Weight::Quant(QMatrix::upload(self.gpu, &p)?), b });
        }
        let mut dtype = None;
        let mut bytes = Vec::new();
        for (wn, _) in &names {
            let (t, b, file) = self.get(wn, &[w, w]).await?;
            if dtype.is_some_and(|d| d != t.dtype) {
                return Err(weight_err(file, wn, format!("dtype {:?} differs from the other projections' {:?}", t.dtype, dtype)));
            }
            dtype = Some(t.dtype);
            bytes.extend_from_slice(&b);
        }
        let Some(dtype) = dtype else { return Err(Error::Invalid("qkv: no projections".into())) };
        let to = self.recipe.vision.dense().unwrap_or(DType::F32);
        let m = upload_matrix(self.gpu, 3 * w, w, dtype, &bytes, to, usize::MAX).await.map_err(|e| named(e, self.src.origin(), &names[0].0))?;
        self.tick(bytes.len());
        Ok(Linear { w: Weight::Dense(m), b })
    }
}

/// Uploads every tensor the graph uses with f32 or f16 (`wdtype`) matrices: `load_weights_with`
/// for a uniform dense recipe.
pub async fn load_weights(gpu: &Gpu, cfg: &ModelConfig, files: &TensorSource, wdtype: DType, act: DType, progress: &mut dyn FnMut(u64, u64)) -> Result<Weights> {
    let f = match wdtype {
        DType::F32 => Format::F32,
        DType::F16 => Format::F16,
        DType::U32 => return Err(Error::DType { op: "load", dtype: wdtype.to_string(), detail: "the weight dtype is f32 or f16".into() }),
    };
    load_weights_with(gpu, cfg, files, &Recipe::uniform(f), act, progress).await
}

/// Uploads every tensor the graph uses, each matrix in the format `recipe` gives its part.
/// `act` (F32 or F16) is the activation dtype (the position table is stored in it). `progress`
/// receives (bytes done, bytes total) after each tensor: `load_weights_opts` with the default
/// options and the upload stage only.
pub async fn load_weights_with(gpu: &Gpu, cfg: &ModelConfig, files: &TensorSource, recipe: &Recipe, act: DType, progress: &mut dyn FnMut(u64, u64)) -> Result<Weights> {
    load_weights_opts(gpu, cfg, files, recipe, act, &LoadOptions::default(), &mut |p| {
        if let LoadProgress::Upload { done, total } = *p {
            progress(done, total);
        }
    })
    .await
}

/// As `load_weights_with`; matrices in quantised formats from a dense checkpoint are quantised
/// where `opts` says, and `progress` sees both stages.
pub async fn load_weights_opts(gpu: &Gpu, cfg: &ModelConfig, files: &TensorSource, recipe: &Recipe, act: DType, opts: &LoadOptions, progress: &mut dyn FnMut(&LoadProgress)) -> Result<Weights> {
    if act == DType::U32 {
        return Err(Error::DType { op: "load", dtype: act.to_string(), detail: "the activation dtype is f32 or f16".into() });
    }
    // Pass 1: every tensor present with its expected shape, before anything is uploaded.
    let mut total = 0u64;
    let mut q = QuantCount::default();
    let n = Names::of(cfg);
    let embed_name = n.llm("embed_tokens.weight");
    for item in plan(cfg, files) {
        if let (Some((_, rows, cols)), true) = (item.matrix, file::is_quantised(files, &item.name)) {
            total += file::check_quantised(files, &item.name, rows, cols)?.1;
            continue;
        }
        let (t, file) = files.need_info(&item.name)?;
        if t.shape != item.shape {
            return Err(weight_err(file, &item.name, format!("shape {:?}, expected {:?}", t.shape, item.shape)));
        }
        if t.dtype == Source::U32 {
            return Err(weight_err(file, &item.name, "U32 data where weights are expected"));
        }
        let mut bytes = t.range.len() as u64;
        // A tied table in another format than the head's is read twice (see lm_head below).
        if item.name == embed_name && cfg.llm.tie_embeddings && !file::has(files, &n.lm_head()) && recipe.embed != recipe.lm_head {
            bytes *= 2;
            q.tensors_total += usize::from(matches!(recipe.lm_head, Format::Q(_)));
            q.total += t.range.len() as u64 * u64::from(matches!(recipe.lm_head, Format::Q(_)));
        }
        if let (Some((part, _, _)), false) = (item.matrix, file::is_quantised(files, &item.name))
            && matches!(recipe.get(part), Format::Q(_))
        {
            q.total += t.range.len() as u64;
            q.tensors_total += 1;
        }
        total += bytes;
    }
    let quant = Quantiser::new(opts.quantise_on);
    if q.tensors_total > 0 {
        progress(&LoadProgress::Quantise { done: 0, total: q.total, tensors: 0, tensors_total: q.tensors_total, on: quant.on(), note: None });
    }
    let mut ld = Loader { gpu, src: files, recipe, act, done: 0, total, quant, q, progress };
    let n = Names::of(cfg);
    let (vc, ac, lc) = (&cfg.vision, &cfg.aligner, &cfg.llm);
    let sam = match &cfg.sam {
        Some(s) => Some(super::sam_weights::load(&mut ld, cfg.layout, s).await?),
        None => None,
    };
    let (w, p, t) = (vc.width, vc.patch_size, cfg.num_image_tokens);

    // Vision tower. The conv weight [w, 3, p, p] is already [w, 3*p*p] in (c, ky, kx) order.
    let patch = Linear { w: ld.matrix(&n.patch("weight"), &[w, 3, p, p], w, 3 * p * p, Part::Vision).await?, b: Some(ld.vector(&n.patch("bias"), w).await?) };
    let pos_shape = if cfg.layout == Layout::Original { vec![1, t, w] } else { vec![t, w] };
    let (pi, pb, pf) = ld.get(&n.pos(), &pos_shape).await?;
    let pos_embed = Tensor::from_f32(gpu, &[t, w], ld.act, &decode(pi, &pb, pf)?).map_err(|e| named(e, pf, &n.pos()))?; // [num_tokens, width]
    ld.tick(pb.len());
    let mut blocks = Vec::with_capacity(vc.layers);
    for i in 0..vc.layers {
        let b = |part: &str, wb: &str| n.block(i, part, wb);
        let norm1_w = ld.vector(&b("norm1", "weight"), w).await?;
        let norm1_b = ld.vector(&b("norm1", "bias"), w).await?;
        let qkv = match cfg.layout {
            Layout::Original => ld.linear(&b("attn.qkv", "weight"), Some(&b("attn.qkv", "bias")), 3 * w, w, Part::Vision).await?,
            Layout::Hf => ld.qkv_concat(["attn.q", "attn.k", "attn.v"].map(|p| (b(p, "weight"), b(p, "bias"))), w).await?,
        };
        let proj = ld.linear(&b("attn.proj", "weight"), Some(&b("attn.proj", "bias")), w, w, Part::Vision).await?;
        let norm2_w = ld.vector(&b("norm2", "weight"), w).await?;
        let norm2_b = ld.vector(&b("norm2", "bias"), w).await?;
        let fc1 = ld.linear(&b("mlp.fc1", "weight"), Some(&b("mlp.fc1", "bias")), vc.mlp_dim, w, Part::Vision).await?;
        let fc2 = ld.linear(&b("mlp.fc2", "weight"), Some(&b("mlp.fc2", "bias")), w, vc.mlp_dim, Part::Vision).await?;
        blocks.push(VisionBlock { norm1_w, norm1_b, qkv, proj, norm2_w, norm2_b, fc1, fc2 });
    }
    let norm_w = ld.vector(&n.vis_norm("weight"), w).await?;
    let norm_b = ld.vector(&n.vis_norm("bias"), w).await?;
    let vision = VisionWeights { patch, pos_embed, blocks, norm_w, norm_b };

    let mut inputs = Vec::new();
    for (high, dim) in hybrid_inputs(cfg) {
        inputs.push(ld.linear(&n.aligner_in(high, "weight"), Some(&n.aligner_in(high, "bias")), ac.n_embed / 2, dim, Part::Aligner).await?);
    }
    let hybrid = match <[Linear; 2]>::try_from(inputs) {
        Ok([high, low]) => Some((high, low)),
        Err(_) => None,
    };
    let mut layers = Vec::with_capacity(ac.depth);
    for (i, inp) in aligner_inputs(cfg).into_iter().enumerate() {
        layers.push(ld.linear(&n.aligner(i, ac.depth, "weight"), Some(&n.aligner(i, ac.depth, "bias")), ac.n_embed, inp, Part::Aligner).await?);
    }
    let aligner = AlignerWeights { hybrid, layers };

    let (h, q, kv) = (lc.hidden, lc.heads * lc.head_dim, lc.kv_heads * lc.head_dim);
    let embed = ld.matrix(&embed_name, &[lc.vocab, h], lc.vocab, h, Part::Embed).await?;
    let mut layers = Vec::with_capacity(lc.layers);
    for i in 0..lc.layers {
        let ly = |s: &str| n.llm(&format!("layers.{i}.{s}.weight"));
        layers.push(LlmLayer {
            input_norm: ld.vector(&ly("input_layernorm"), h).await?,
            qkv: ld.stacked(&[(&ly("self_attn.q_proj"), q), (&ly("self_attn.k_proj"), kv), (&ly("self_attn.v_proj"), kv)], h, Part::Llm).await?,
            o: ld.linear(&ly("self_attn.o_proj"), None, h, q, Part::Llm).await?,
            post_norm: ld.vector(&ly("post_attention_layernorm"), h).await?,
            gate_up: ld.stacked(&[(&ly("mlp.gate_proj"), lc.intermediate), (&ly("mlp.up_proj"), lc.intermediate)], h, Part::Llm).await?,
            down: ld.linear(&ly("mlp.down_proj"), None, h, lc.intermediate, Part::Llm).await?,
        });
    }
    let norm = ld.vector(&n.llm("norm.weight"), h).await?;
    let lm_head = if file::has(files, &n.lm_head()) || !lc.tie_embeddings {
        ld.matrix(&n.lm_head(), &[lc.vocab, h], lc.vocab, h, Part::LmHead).await?
    } else if embed.format() == recipe.lm_head || file::is_quantised(files, &embed_name) {
        embed.clone()
    } else {
        // Tied, in another format than the table: the table's tensor once more.
        ld.matrix(&embed_name, &[lc.vocab, h], lc.vocab, h, Part::LmHead).await?
    };
    let llm = LlmWeights { embed, layers, norm, lm_head };
    Ok(Weights { vision, sam, aligner, llm })
}
