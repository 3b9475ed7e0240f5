//! Kernels, one file per family: the op's shape contract, kernel choice, dispatch maths and
//! its checks against a CPU f64 reference (see `crate::check`).

pub mod attention;
pub mod attention_coop;
pub mod bandwidth;
pub mod convert;
pub mod elementwise;
pub mod embedding;
pub mod im2col;
pub mod interp;
pub mod kv;
pub mod matmul;
pub mod norm;
pub mod patchify;
pub mod normalise;
pub mod qmatmul;
pub mod quantise;
pub mod rope;
pub mod sample;
pub mod window;

use crate::error::{Error, Result};
use crate::gpu::{DType, Tensor};

/// The checks of every op family, run by `tests/kernels.rs`, `dsvl-gpu selftest-kernels` and the browser.
pub const CHECK_SETS: &[&[(&str, crate::check::CheckFn)]] = &[
    elementwise::CHECKS,
    matmul::CHECKS,
    norm::CHECKS,
    rope::CHECKS,
    attention::CHECKS,
    attention_coop::CHECKS,
    interp::CHECKS,
    embedding::CHECKS,
    sample::CHECKS,
    bandwidth::CHECKS,
    convert::CHECKS,
    patchify::CHECKS,
    kv::CHECKS,
    normalise::CHECKS,
    qmatmul::CHECKS,
    window::CHECKS,
    im2col::CHECKS,
    quantise::CHECKS,
];

/// Workgroup size of the simple element-wise kernels (the WebGPU default maximum).
pub(crate) const WG: u32 = 256;

/// Preprocessor flags for an activation dtype.
pub(crate) fn act_flags(op: &'static str, dtype: DType) -> Result<&'static [&'static str]> {
    match dtype {
        DType::F32 => Ok(&[]),
        DType::F16 => Ok(&["F16"]),
        DType::U32 => Err(Error::DType { op, dtype: dtype.name().into(), detail: "activations are f32 or f16".into() }),
    }
}

/// Fails unless every tensor has `dtype`.
pub(crate) fn same_dtype(op: &'static str, dtype: DType, ts: &[&Tensor]) -> Result<()> {
    for t in ts {
        if t.dtype() != dtype {
            return Err(Error::DType { op, dtype: t.dtype().name().into(), detail: format!("expected {dtype} like the other operands") });
        }
    }
    Ok(())
}

pub(crate) fn shape_err(op: &'static str, detail: String) -> Error {
    Error::Shape { op, detail }
}

/// Element count as u32 (shaders index with u32), failing beyond that.
pub(crate) fn u32_of(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| shape_err(op, format!("{n} elements exceed u32 indexing")))
}

/// A matrix of `rows` x `cols` inside a tensor, starting at element `off`, rows `stride`
/// elements apart. Lets kernels read column slices (q, k, v inside a fused qkv output) and
/// write into bigger buffers without copies.
#[derive(Clone, Debug)]
pub struct Rows<'a> {
    pub t: &'a Tensor,
    pub off: usize,
    pub stride: usize,
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Rows<'a> {
    /// The whole tensor as [prod(leading dims), last dim].
    pub fn all(t: &'a Tensor) -> Rows<'a> {
        let cols = t.shape().last().copied().unwrap_or(1);
        let rows = t.len().checked_div(cols).unwrap_or(0);
        Rows { t, off: 0, stride: cols, rows, cols }
    }

    /// Columns `c0 .. c0 + n` of the whole tensor.
    pub fn cols(t: &'a Tensor, c0: usize, n: usize) -> Rows<'a> {
        let all = Rows::all(t);
        Rows { off: c0, cols: n, ..all }
    }

    /// Rows `r0 .. r0 + n` of this view.
    pub fn rows(&self, r0: usize, n: usize) -> Rows<'a> {
        Rows { off: self.off + r0 * self.stride, rows: n, ..self.clone() }
    }

    pub(crate) fn check(&self, op: &'static str) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Err(shape_err(op, "empty view".into()));
        }
        let end = self.off + (self.rows - 1) * self.stride + self.cols;
        if self.cols > self.stride || end > self.t.len() {
            return Err(shape_err(
                op,
                format!("view {}x{} at {} stride {} outside {:?}", self.rows, self.cols, self.off, self.stride, self.t.shape()),
            ));
        }
        u32_of(op, end)?;
        Ok(())
    }
}

/// Every pipeline variant the ops can ask for: validated by naga in `tests/shaders.rs`.
pub fn all_variants() -> Vec<crate::gpu::PipelineKey> {
    let mut v = Vec::new();
    v.extend(elementwise::variants());
    v.extend(matmul::variants());
    v.extend(norm::variants());
    v.extend(rope::variants());
    v.extend(attention::variants());
    v.extend(attention_coop::variants());
    v.extend(interp::variants());
    v.extend(embedding::variants());
    v.extend(sample::variants());
    v.extend(bandwidth::variants());
    v.extend(convert::variants());
    v.extend(patchify::variants());
    v.extend(kv::variants());
    v.extend(normalise::variants());
    v.extend(qmatmul::variants());
    v.extend(window::variants());
    v.extend(im2col::variants());
    v.extend(quantise::variants());
    v
}

/// Layout of a parameter struct as Rust sees it: (shader file, WGSL struct name, size, fields).
pub type ParamLayout = (&'static str, &'static str, usize, &'static [(&'static str, usize)]);

pub(crate) fn layout_of<P: crate::gpu::Params>(shader: &'static str) -> ParamLayout {
    (shader, P::WGSL_NAME, std::mem::size_of::<P>(), P::FIELDS)
}

/// Every parameter struct, checked against naga's WGSL layout in `tests/shaders.rs`.
pub fn param_layouts() -> Vec<ParamLayout> {
    vec![
        layout_of::<elementwise::EltParams>("elementwise"),
        layout_of::<matmul::MatmulParams>("matmul"),
        layout_of::<norm::NormParams>("norm"),
        layout_of::<norm::SoftmaxParams>("softmax"),
        layout_of::<rope::RopeParams>("rope"),
        layout_of::<attention::AttnParams>("attention"),
        layout_of::<attention::RelAttnParams>("attention"),
        layout_of::<attention_coop::AttnCoopParams>("attention_coop"),
        layout_of::<interp::ResizeParams>("interp"),
        layout_of::<embedding::EmbedParams>("embedding"),
        layout_of::<sample::SampleParams>("sample"),
        layout_of::<bandwidth::BwParams>("bandwidth"),
        layout_of::<convert::ConvertParams>("convert"),
        layout_of::<patchify::PatchParams>("patchify"),
        layout_of::<kv::KvParams>("kv"),
        layout_of::<normalise::NormaliseParams>("normalise"),
        layout_of::<qmatmul::QMatmulParams>("qmatmul"),
        layout_of::<qmatmul::QEmbedParams>("qembed"),
        layout_of::<window::WindowParams>("window"),
        layout_of::<im2col::Im2colParams>("im2col"),
        layout_of::<attention::AttnParams>("attention_decode"),
        layout_of::<quantise::QuantParams>("quantise"),
    ]
}
