//! Quantised matrices on the GPU, and `Weight`: what a linear layer (or the embedding table)
//! holds, dense or quantised. Kernels dispatch on it (`ops::matmul::linear`).

use half::f16;

use super::{Format, Packed, QFormat, QLayout};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, RowSplit, Tensor};

/// A block of rows: codes U32 [rows, row_words] and scales U32 [rows * row_scales / 2, rounded up]
/// (f16 values, two per word), each in a buffer of its own within the binding limit.
#[derive(Clone, Debug)]
pub struct QPart {
    pub row0: usize,
    pub rows: usize,
    pub codes: Tensor,
    pub scales: Tensor,
}

/// A quantised [rows, cols] matrix in row blocks (as `RowSplit` for dense ones).
#[derive(Clone, Debug)]
pub struct QMatrix {
    pub fmt: QFormat,
    pub rows: usize,
    pub cols: usize,
    pub layout: QLayout,
    pub parts: Vec<QPart>,
}

impl QMatrix {
    /// Rows per part under the adapter's binding limit (a multiple of 64 when possible).
    pub fn rows_per_part(gpu: &Gpu, l: &QLayout) -> Result<usize> {
        let row_bytes = (l.row_words * 4).max(l.row_scales * 2) as u64;
        let fit = (gpu.caps.max_binding / row_bytes) as usize;
        if fit == 0 {
            return Err(Error::BindingLimit { op: "quant", what: format!("one row of {} words", l.row_words), needed: row_bytes, limit: gpu.caps.max_binding });
        }
        Ok(if fit >= 64 { fit / 64 * 64 } else { fit })
    }

    pub fn upload(gpu: &Gpu, p: &Packed) -> Result<QMatrix> {
        QMatrix::upload_parts(gpu, p, usize::MAX)
    }

    /// As `upload` with at most `rows_per_part` rows per part (tests force several parts).
    pub fn upload_parts(gpu: &Gpu, p: &Packed, rows_per_part: usize) -> Result<QMatrix> {
        p.check()?;
        let l = p.layout();
        if p.rows == 0 || rows_per_part == 0 {
            return Err(Error::Shape { op: "quant", detail: format!("[{}, {}] with {rows_per_part} rows per part", p.rows, p.cols) });
        }
        let per = rows_per_part.min(QMatrix::rows_per_part(gpu, &l)?);
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < p.rows {
            let n = per.min(p.rows - r0);
            let codes = Tensor::from_u32(gpu, &[n, l.row_words], &p.codes[r0 * l.row_words..(r0 + n) * l.row_words])?;
            let mut halves: Vec<f16> = p.scales[r0 * l.row_scales..(r0 + n) * l.row_scales].to_vec();
            halves.resize(halves.len().div_ceil(2) * 2, f16::ZERO);
            let scales = Tensor::from_bytes(gpu, &[halves.len() / 2], DType::U32, bytemuck::cast_slice(&halves))?;
            parts.push(QPart { row0: r0, rows: n, codes, scales });
            r0 += n;
        }
        Ok(QMatrix { fmt: p.fmt, rows: p.rows, cols: p.cols, layout: l, parts })
    }

    /// GPU bytes of codes and scales.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.codes.byte_len() + p.scales.byte_len()).sum()
    }
}

/// A weight matrix [out, in]: dense (f32 or f16) or quantised.
#[derive(Clone, Debug)]
pub enum Weight {
    Dense(RowSplit),
    Quant(QMatrix),
}

impl Weight {
    pub fn rows(&self) -> usize {
        match self {
            Weight::Dense(d) => d.rows,
            Weight::Quant(q) => q.rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Weight::Dense(d) => d.cols,
            Weight::Quant(q) => q.cols,
        }
    }

    pub fn format(&self) -> Format {
        match self {
            Weight::Dense(d) if d.dtype == DType::F16 => Format::F16,
            Weight::Dense(_) => Format::F32,
            Weight::Quant(q) => Format::Q(q.fmt),
        }
    }

    pub fn as_dense(&self) -> Option<&RowSplit> {
        match self {
            Weight::Dense(d) => Some(d),
            Weight::Quant(_) => None,
        }
    }

    /// GPU bytes held (parts rounded to whole words, as allocated).
    pub fn bytes(&self) -> u64 {
        match self {
            Weight::Dense(d) => d.parts.iter().map(|(_, t)| t.byte_len()).sum(),
            Weight::Quant(q) => q.bytes(),
        }
    }

    /// Whether both share their first buffer (a tied lm_head is the embedding table).
    pub fn shares_storage(&self, other: &Weight) -> bool {
        let first = |w: &Weight| match w {
            Weight::Dense(d) => d.parts.first().map(|(_, t)| t.clone()),
            Weight::Quant(q) => q.parts.first().map(|p| p.codes.clone()),
        };
        matches!((first(self), first(other)), (Some(a), Some(b)) if a.same_buffer(&b))
    }
}

/// A borrowed weight: what `ops::matmul::linear` takes, so dense `RowSplit`s, quantised matrices
/// and `Weight`s all pass as they are.
#[derive(Clone, Copy, Debug)]
pub enum WeightRef<'a> {
    Dense(&'a RowSplit),
    Quant(&'a QMatrix),
}

impl<'a> From<&'a RowSplit> for WeightRef<'a> {
    fn from(w: &'a RowSplit) -> Self {
        WeightRef::Dense(w)
    }
}

impl<'a> From<&'a QMatrix> for WeightRef<'a> {
    fn from(w: &'a QMatrix) -> Self {
        WeightRef::Quant(w)
    }
}

impl<'a> From<&'a Weight> for WeightRef<'a> {
    fn from(w: &'a Weight) -> Self {
        match w {
            Weight::Dense(d) => WeightRef::Dense(d),
            Weight::Quant(q) => WeightRef::Quant(q),
        }
    }
}
