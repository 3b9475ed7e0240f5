//! Quantising at load (`--quant q8 | q4 | mixed` on a dense checkpoint): from the checkpoint's
//! bytes to a `QMatrix`.
//!
//! On the GPU (the default): row chunks within the binding limit are uploaded as they are and
//! `ops::quantise` writes the codes and scales in place, part by part, so no matrix is whole on
//! the host (in the browser, one fetched chunk at a time is in wasm memory; natively the chunks
//! are slices of the memory-mapped file). The result is bit-identical to the CPU twin's.
//! On the CPU (`DSVL_CPU_QUANT=1`, or when the GPU's first quantisation of a format and dtype in
//! a load does not reproduce the CPU twin on a probe matrix): `Packed::quantize_rows` over the
//! CPU's threads, then one upload.

use super::{file, Packed, QFormat, QLayout, QMatrix, QPart};
use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::model::safetensors::TensorSource;
use crate::ops::convert::Source;
use crate::ops::quantise::{quantise, RawRows};

/// Where load-time quantisation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantOn {
    Gpu,
    Cpu,
}

impl QuantOn {
    /// The GPU, unless the environment sets `DSVL_CPU_QUANT=1` (natively; the browser has no
    /// environment, so it always starts on the GPU).
    pub fn from_env() -> QuantOn {
        match std::env::var("DSVL_CPU_QUANT") {
            Ok(v) if v == "1" => QuantOn::Cpu,
            _ => QuantOn::Gpu,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantOn::Gpu => "gpu",
            QuantOn::Cpu => "cpu",
        }
    }
}

/// Checkpoint bytes uploaded at once: bounds the host's staging memory, and the next chunk is
/// read while the GPU quantises this one.
const CHUNK_BYTES: usize = 64 << 20;

/// A quantised matrix filled on the GPU from chunks of checkpoint rows: its parts are split as
/// `QMatrix::upload` splits them, so both paths give the same matrix.
pub struct GpuQuantiser<'g> {
    gpu: &'g Gpu,
    fmt: QFormat,
    rows: usize,
    cols: usize,
    layout: QLayout,
    parts: Vec<QPart>,
    /// The lowest row holding a non-finite value (u32::MAX: none).
    bad: Tensor,
}

impl<'g> GpuQuantiser<'g> {
    pub fn new(gpu: &'g Gpu, fmt: QFormat, rows: usize, cols: usize) -> Result<GpuQuantiser<'g>> {
        GpuQuantiser::with_rows_per_part(gpu, fmt, rows, cols, usize::MAX)
    }

    /// As `new` with at most `rows_per_part` rows per part (tests force several parts).
    pub fn with_rows_per_part(gpu: &'g Gpu, fmt: QFormat, rows: usize, cols: usize, rows_per_part: usize) -> Result<GpuQuantiser<'g>> {
        let fmt = fmt.validate()?;
        if rows == 0 || cols == 0 || rows_per_part == 0 {
            return Err(Error::Shape { op: "quantise", detail: format!("[{rows}, {cols}] with {rows_per_part} rows per part") });
        }
        let layout = fmt.layout(cols);
        let per = rows_per_part.min(QMatrix::rows_per_part(gpu, &layout)?);
        let mut parts = Vec::new();
        let mut r0 = 0;
        while r0 < rows {
            let n = per.min(rows - r0);
            // Fresh buffers: zero-filled, as the kernel's OR-ed scales need.
            let codes = Tensor::empty_exact(gpu, &[n, layout.row_words], DType::U32)?;
            let scales = Tensor::empty_exact(gpu, &[(n * layout.row_scales).div_ceil(2)], DType::U32)?;
            parts.push(QPart { row0: r0, rows: n, codes, scales });
            r0 += n;
        }
        let bad = Tensor::from_u32(gpu, &[1], &[u32::MAX])?;
        Ok(GpuQuantiser { gpu, fmt, rows, cols, layout, parts, bad })
    }

    fn part_of(&self, r0: usize) -> Result<&QPart> {
        self.parts.iter().find(|p| p.row0 <= r0 && r0 < p.row0 + p.rows).ok_or_else(|| Error::Shape { op: "quantise", detail: format!("row {r0} of a [{}, {}] matrix", self.rows, self.cols) })
    }

    /// Rows a chunk of `from` values starting at row `r0` may hold: it ends with the part that
    /// holds `r0`, and its bytes fit one binding and `cap` (at least one row).
    pub fn chunk_rows(&self, r0: usize, from: Source, cap: usize) -> Result<usize> {
        let part = self.part_of(r0)?;
        let row_bytes = self.cols * from.size();
        // Bindings are whole words: leave room for the padding of an odd count of halves.
        let limit = usize::try_from(self.gpu.caps.max_binding).unwrap_or(usize::MAX).saturating_sub(3);
        if row_bytes > limit {
            return Err(Error::BindingLimit { op: "quantise", what: format!("one row of {} {from:?} values", self.cols), needed: row_bytes as u64, limit: self.gpu.caps.max_binding });
        }
        Ok((limit / row_bytes).min((cap / row_bytes).max(1)).min(part.row0 + part.rows - r0))
    }

    /// Uploads the checkpoint bytes of rows `r0..` (whole rows, no more than `chunk_rows`
    /// allows) and submits their quantisation.
    pub async fn push(&self, r0: usize, from: Source, bytes: &[u8]) -> Result<()> {
        let row_bytes = self.cols * from.size();
        let n = bytes.len() / row_bytes.max(1);
        if n == 0 || bytes.len() != n * row_bytes || n > self.chunk_rows(r0, from, usize::MAX)? {
            return Err(Error::Shape { op: "quantise", detail: format!("{} bytes of {from:?} at row {r0} of a [{}, {}] matrix", bytes.len(), self.rows, self.cols) });
        }
        let part = self.part_of(r0)?;
        let raw = Tensor::empty(self.gpu, &[bytes.len().div_ceil(4)], DType::U32)?;
        raw.write_bytes(self.gpu, bytes);
        let mut rec = Recorder::new(self.gpu);
        quantise(&mut rec, &RawRows { t: &raw, from, rows: n, cols: self.cols }, self.fmt, part, r0 - part.row0, r0, &self.bad)?;
        rec.finish()?.run(self.gpu).await
    }

    /// The first row holding a non-finite value, once the GPU is done with what was pushed.
    pub async fn first_bad_row(&self) -> Result<Option<usize>> {
        let r = self.gpu.read_u32(&self.bad).await?[0];
        Ok((r != u32::MAX).then_some(r as usize))
    }

    pub fn finish(self) -> QMatrix {
        QMatrix { fmt: self.fmt, rows: self.rows, cols: self.cols, layout: self.layout, parts: self.parts }
    }
}

fn werr(file: &str, tensor: &str, message: impl Into<String>) -> Error {
    Error::Weight { file: file.to_string(), tensor: tensor.to_string(), message: message.into() }
}

/// The first non-finite value of checkpoint rows `cols` wide: (row, column, value).
fn first_non_finite(from: Source, bytes: &[u8], cols: usize) -> Option<(usize, usize, f32)> {
    let mut row = vec![0f32; cols];
    for (r, b) in bytes.chunks_exact(cols * from.size()).enumerate() {
        file::decode_into(from, b, &mut row).ok()?;
        if let Some(c) = row.iter().position(|v| !v.is_finite()) {
            return Some((r, c, row[c]));
        }
    }
    None
}

/// The CPU twin's message for a non-finite weight at `row` of `name`.
async fn non_finite(src: &TensorSource, name: &str, row: usize, cols: usize) -> Result<Error> {
    let (t, file) = src.need_info(name)?;
    let row_bytes = cols * t.dtype.size();
    let bytes = src.read(name, row * row_bytes..(row + 1) * row_bytes).await?;
    let what = match first_non_finite(t.dtype, &bytes, cols) {
        Some((_, c, v)) => format!("quantize: row {row}, column {c} holds {v}"),
        None => format!("quantize: row {row} holds a non-finite value"),
    };
    Ok(werr(file, name, what))
}

/// Quantises a small matrix of awkward rows from `from` on the GPU and on the CPU: whether
/// this adapter reproduces the CPU twin (compiles, runs, every code and scale equal).
pub async fn probe(gpu: &Gpu, fmt: QFormat, from: Source) -> Result<bool> {
    let (rows, cols) = (16, 96);
    let w = crate::ops::quantise::awkward_rows(&mut crate::check::Rng::new(71), rows, cols);
    let (bytes, vals) = crate::ops::quantise::encode(from, &w);
    let want = Packed::quantize(fmt, rows, cols, &vals)?;
    let q = GpuQuantiser::new(gpu, fmt, rows, cols)?;
    q.push(0, from, &bytes).await?;
    if q.first_bad_row().await?.is_some() {
        return Ok(false);
    }
    let got = crate::ops::quantise::read_back(gpu, &q.finish()).await?;
    Ok(crate::ops::quantise::differences(&got, &want) == (0, 0))
}

/// Load-time quantisation for one load: where it runs, and the GPU's probes so far.
pub struct Quantiser {
    on: QuantOn,
    probed: Vec<(QFormat, Source)>,
    note: Option<String>,
}

impl Quantiser {
    pub fn new(on: QuantOn) -> Quantiser {
        Quantiser { on, probed: Vec::new(), note: None }
    }

    pub fn on(&self) -> QuantOn {
        self.on
    }

    /// Why quantisation left the GPU, when it did.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Before the GPU first quantises `fmt` from `from`: a probe against the CPU twin. A failure
    /// or a difference moves this load's quantisation to the CPU.
    async fn check(&mut self, gpu: &Gpu, fmt: QFormat, from: Source) {
        if self.on == QuantOn::Cpu || self.probed.contains(&(fmt, from)) {
            return;
        }
        match probe(gpu, fmt, from).await {
            Ok(true) => self.probed.push((fmt, from)),
            Ok(false) => self.fall_back(format!("the GPU's {fmt} from {from:?} differs from the CPU twin")),
            Err(e) => self.fall_back(format!("the GPU cannot quantise {fmt} from {from:?}: {e}")),
        }
    }

    fn fall_back(&mut self, why: String) {
        self.on = QuantOn::Cpu;
        self.note = Some(format!("{why}; quantising on the CPU"));
    }

    /// Checks `pieces` (tensor names, each [rows_i, cols]) can be quantised and, on the GPU,
    /// probes each of their dtypes with `fmt` once per load: afterwards `on` and `note` say
    /// where `quantise` will run.
    pub async fn prepare(&mut self, gpu: &Gpu, src: &TensorSource, pieces: &[(&str, usize)], fmt: QFormat) -> Result<()> {
        for &(name, _) in pieces {
            let (t, _) = src.need_info(name)?;
            self.check(gpu, fmt, t.dtype).await;
        }
        Ok(())
    }

    /// The checkpoint matrices `pieces` (tensor names, each [rows_i, cols]) stacked row-wise and
    /// quantised into one matrix in `fmt`. `tick(bytes, tensors)` follows the checkpoint bytes
    /// read and the tensors finished.
    pub async fn quantise(&mut self, gpu: &Gpu, src: &TensorSource, pieces: &[(&str, usize)], cols: usize, fmt: QFormat, tick: &mut dyn FnMut(usize, usize)) -> Result<QMatrix> {
        let mut infos = Vec::with_capacity(pieces.len());
        for &(name, rows) in pieces {
            let (t, file) = src.need_info(name)?;
            if t.dtype == Source::U32 || t.numel() != rows * cols || cols == 0 {
                return Err(werr(file, name, format!("{:?} {:?} cannot be quantised as [{rows}, {cols}]", t.dtype, t.shape)));
            }
            infos.push((name, rows, t.dtype, file));
        }
        self.prepare(gpu, src, pieces, fmt).await?;
        match self.on {
            QuantOn::Gpu => on_gpu(gpu, src, &infos, cols, fmt, tick).await,
            QuantOn::Cpu => on_cpu(gpu, src, &infos, cols, fmt, tick).await,
        }
    }
}

type Piece<'a> = (&'a str, usize, Source, &'a str);

async fn on_gpu(gpu: &Gpu, src: &TensorSource, pieces: &[Piece<'_>], cols: usize, fmt: QFormat, tick: &mut dyn FnMut(usize, usize)) -> Result<QMatrix> {
    let total = pieces.iter().map(|p| p.1).sum();
    let q = GpuQuantiser::new(gpu, fmt, total, cols)?;
    let mut base = 0;
    for &(name, rows, from, _) in pieces {
        let row_bytes = cols * from.size();
        let cap = src.max_read(name).unwrap_or(CHUNK_BYTES).min(CHUNK_BYTES);
        let mut r = 0;
        while r < rows {
            let n = q.chunk_rows(base + r, from, cap)?.min(rows - r);
            let bytes = src.read(name, r * row_bytes..(r + n) * row_bytes).await?;
            q.push(base + r, from, &bytes).await?;
            r += n;
            tick(bytes.len(), usize::from(r == rows));
        }
        base += rows;
    }
    if let Some(bad) = q.first_bad_row().await? {
        let mut base = 0;
        for &(name, rows, _, _) in pieces {
            if bad < base + rows {
                return Err(non_finite(src, name, bad - base, cols).await?);
            }
            base += rows;
        }
        return Err(Error::Internal { context: "quantise".into(), message: format!("non-finite row {bad} of {base}") });
    }
    Ok(q.finish())
}

async fn on_cpu(gpu: &Gpu, src: &TensorSource, pieces: &[Piece<'_>], cols: usize, fmt: QFormat, tick: &mut dyn FnMut(usize, usize)) -> Result<QMatrix> {
    let mut packed = Vec::new();
    for &(name, rows, from, file) in pieces {
        let row_bytes = cols * from.size();
        // In memory: every row at once (spread over threads). Fetched: chunks of at most
        // `max_read` bytes, so the checkpoint's bytes are never whole in memory (the packed
        // result is).
        let per = src.max_read(name).map_or(rows, |m| (m / row_bytes).max(1));
        let mut r = 0;
        while r < rows {
            let n = per.min(rows - r);
            let bytes = src.read(name, r * row_bytes..(r + n) * row_bytes).await?;
            let p = file::quantize_bytes(fmt, from, &bytes, n, cols).map_err(|e| match first_non_finite(from, &bytes, cols) {
                Some((row, c, v)) => werr(file, name, format!("quantize: row {}, column {c} holds {v}", r + row)),
                None => werr(file, name, e.to_string()),
            })?;
            packed.push(p);
            r += n;
            tick(bytes.len(), usize::from(r == rows));
        }
    }
    let p = Packed::concat(&packed)?;
    QMatrix::upload(gpu, &p)
}
