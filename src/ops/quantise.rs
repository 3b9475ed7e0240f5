//! Quantising weight rows on the GPU (load-time int8/int4, `quant::load`): a chunk of
//! checkpoint rows, uploaded as the file's bytes, into the codes and f16 scales of a `QPart`,
//! the layout the qmatmul kernels read.
//!
//! Contract:
//! - `raw`: the chunk's bf16, f16 or f32 values as U32 words, row-major [rows, cols], row 0 at
//!   word 0 (odd 16-bit counts padded). Read as they are: no convert step first, so the kernel
//!   sees exactly the values the CPU twin decodes and no f32 copy of the chunk exists.
//! - Writes rows `out_row0 .. out_row0 + rows` of the part: every code word of those rows
//!   (padding included) and their scales. Symmetric formats OR their scales in (an odd number
//!   of scales per row puts two rows in one word), so the part's scales start zeroed: parts
//!   are fresh buffers (`Tensor::empty_exact`), which WebGPU zero-fills.
//! - A row holding a non-finite value leaves its codes unspecified and lowers `bad[0]` (atomic
//!   min) to `row_base` + its row in the chunk; the caller reads `bad` once per matrix.
//! - Result: bit-identical to `Packed::quantize` of the same values (shaders/quantise.wgsl says
//!   how), except that an implementation may flush subnormal f32 values (below 1.2e-38) to zero.
//!
//! One invocation per (row, group); the CPU twin's sequential sums stay sequential, so the
//! summation order, and with it every rounding, is the CPU's.

use half::{bf16, f16};

use super::convert::Source;
use super::{shape_err, u32_of};
use crate::check::{CheckResult, Rng};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;
use crate::quant::cpu::{fit_numerators, FIT_STEPS, TINY};
use crate::quant::{unpack_codes, GpuQuantiser, Packed, QFormat, QPart};

params_struct!(QuantParams("QuantParams") {
    rows: u32, cols: u32, out_row0: u32, row_base: u32, group: u32, row_words: u32, row_groups: u32, zero: u32,
    tiny: f32, fit_steps: u32, _pad0: u32, _pad1: u32, steps: [f32; 12],
});

const BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::ReadWrite, Bind::ReadWrite, Bind::ReadWrite];
/// Invocations per workgroup (one (row, group) each).
const WG: u32 = 64;

fn kernel(fmt: QFormat) -> Kernel {
    let entry = match (fmt.bits, fmt.zero) {
        (4, true) => "quant_q4z",
        (4, false) => "quant_q4",
        _ => "quant_q8",
    };
    Kernel { shader: "quantise", entry, binds: BINDS }
}

fn src_flags(from: Source) -> Result<&'static [&'static str]> {
    match from {
        Source::BF16 => Ok(&["SRC_BF16"]),
        Source::F16 => Ok(&["SRC_F16"]),
        Source::F32 => Ok(&[]),
        Source::U32 => Err(Error::DType { op: "quantise", dtype: "u32".into(), detail: "packed codes are not weight values".into() }),
    }
}

/// The pipeline quantising `from` rows into `fmt`.
pub fn key(fmt: QFormat, from: Source) -> Result<PipelineKey> {
    Ok(PipelineKey::new(kernel(fmt.validate()?), src_flags(from)?, &[]))
}

pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for fmt in [QFormat::q8(0), QFormat::q4(32, false), QFormat::q4(32, true)] {
        for from in [Source::BF16, Source::F16, Source::F32] {
            v.extend(key(fmt, from));
        }
    }
    v
}

/// A chunk of checkpoint rows on the GPU.
#[derive(Clone, Copy, Debug)]
pub struct RawRows<'a> {
    /// The file's bytes as U32 words.
    pub t: &'a Tensor,
    pub from: Source,
    pub rows: usize,
    pub cols: usize,
}

/// Records the quantisation of `raw` into rows `out_row0..` of `part` (format `fmt`, whose
/// layout the part has); `row_base` is the row of the whole matrix `raw` starts at (for `bad`).
pub fn quantise(rec: &mut Recorder, raw: &RawRows, fmt: QFormat, part: &QPart, out_row0: usize, row_base: usize, bad: &Tensor) -> Result<()> {
    let op = "quantise";
    let l = fmt.validate()?.layout(raw.cols);
    let (rows, cols) = (raw.rows, raw.cols);
    let words_in = (rows * cols * raw.from.size()).div_ceil(4);
    let scale_words = (part.rows * l.row_scales).div_ceil(2);
    if rows == 0 || cols == 0 || raw.t.dtype() != DType::U32 || raw.t.len() < words_in {
        return Err(shape_err(op, format!("[{rows}, {cols}] {:?} from {:?} {}", raw.from, raw.t.shape(), raw.t.dtype())));
    }
    if out_row0 + rows > part.rows || part.codes.len() != part.rows * l.row_words || part.scales.len() != scale_words {
        return Err(shape_err(op, format!("rows {out_row0}..{} of a {fmt} part of {} rows ({:?} codes, {:?} scales) for {cols} columns", out_row0 + rows, part.rows, part.codes.shape(), part.scales.shape())));
    }
    if bad.dtype() != DType::U32 || bad.is_empty() {
        return Err(shape_err(op, format!("bad-row flag {:?} {}", bad.shape(), bad.dtype())));
    }
    let jobs = u32_of(op, rows * l.row_groups)?;
    u32_of(op, part.rows * l.row_words)?;
    let mut steps = [0f32; 12];
    steps[..FIT_STEPS].copy_from_slice(&fit_numerators(fmt.zero));
    let params = QuantParams {
        rows: rows as u32,
        cols: u32_of(op, cols)?,
        out_row0: out_row0 as u32,
        row_base: u32_of(op, row_base)?,
        group: l.group as u32,
        row_words: l.row_words as u32,
        row_groups: l.row_groups as u32,
        zero: 0,
        tiny: TINY,
        fit_steps: FIT_STEPS as u32,
        steps,
        ..Default::default()
    };
    rec.dispatch(&key(fmt, raw.from)?, &params, &[raw.t, &part.codes, &part.scales, bad], grid(jobs.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

// ---- checks: bit for bit against the CPU twin ----

/// The values as the checkpoint stores them in `from`, and what they decode to.
pub fn encode(from: Source, vals: &[f32]) -> (Vec<u8>, Vec<f32>) {
    match from {
        Source::BF16 => {
            let h: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
            (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|v| v.to_f32()).collect())
        }
        Source::F16 => {
            let h: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v)).collect();
            (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|v| v.to_f32()).collect())
        }
        Source::F32 | Source::U32 => (bytemuck::cast_slice(vals).to_vec(), vals.to_vec()),
    }
}

/// Rows that stress the fits: gaussian, heavy-tailed with an outlier, all zero, constant,
/// non-negative with signed zeros, huge, tiny (still normal after the fits' squares) and
/// two-valued, cycled over `rows`.
pub(crate) fn awkward_rows(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
    let mut w = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let row: Vec<f32> = match r % 8 {
            0 => rng.normals(cols, 0.02),
            1 => {
                let mut v: Vec<f32> = (0..cols).map(|_| rng.normal() / (rng.unit() as f32 + 0.05)).collect();
                v[cols / 2] = 50.0;
                v
            }
            2 => vec![0.0; cols],
            3 => vec![-0.375; cols],
            4 => (0..cols).map(|i| if i % 3 == 0 { if i % 2 == 0 { 0.0 } else { -0.0 } } else { rng.unit() as f32 }).collect(),
            5 => rng.normals(cols, 300.0),
            6 => rng.normals(cols, 1e-9),
            _ => (0..cols).map(|i| if i % 5 == 0 { 0.25 } else { -0.125 }).collect(),
        };
        w.extend(row);
    }
    w
}

/// The codes and scales of a GPU-quantised matrix, read back into the CPU twin's layout.
pub(crate) async fn read_back(gpu: &Gpu, m: &crate::quant::QMatrix) -> Result<Packed> {
    let (mut codes, mut scales) = (Vec::new(), Vec::new());
    for p in &m.parts {
        codes.extend(gpu.read_u32(&p.codes).await?);
        let words = gpu.read_u32(&p.scales).await?;
        let halves: &[f16] = bytemuck::cast_slice(&words);
        scales.extend_from_slice(&halves[..p.rows * m.layout.row_scales]);
    }
    Ok(Packed { fmt: m.fmt, rows: m.rows, cols: m.cols, codes, scales })
}

/// Codes and scales that differ between two quantisations of one matrix (0 and 0: identical).
pub(crate) fn differences(got: &Packed, want: &Packed) -> (usize, usize) {
    let a = unpack_codes(got.fmt.bits, &got.codes);
    let b = unpack_codes(want.fmt.bits, &want.codes);
    let codes = a.iter().zip(&b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len());
    let scales = got.scales.iter().zip(&want.scales).filter(|(x, y)| x.to_bits() != y.to_bits()).count() + got.scales.len().abs_diff(want.scales.len());
    (codes, scales)
}

/// Every format the recipes use (and the per-row / wide-group / short-row variants), from
/// each checkpoint dtype, in parts of a few rows filled by chunks that straddle nothing: the
/// codes and scales equal the CPU twin's bit for bit.
async fn check_quantise(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(70);
    let formats = [QFormat::q8(0), QFormat::q8(32), QFormat::q8(128), QFormat::q4(32, false), QFormat::q4(64, false), QFormat::q4(32, true), QFormat::q4(128, true)];
    // (rows, cols, rows per part, rows per chunk): one row; padding; odd scale counts shared
    // across chunk and part boundaries; a row shorter than a group.
    let shapes = [(1, 32, 64, 64), (9, 100, 4, 3), (17, 200, 8, 5), (6, 33, 64, 2)];
    let mut report = Vec::new();
    for (rows, cols, per_part, per_chunk) in shapes {
        let w = awkward_rows(&mut rng, rows, cols);
        for from in [Source::BF16, Source::F16, Source::F32] {
            let (bytes, vals) = encode(from, &w);
            for fmt in formats {
                let want = Packed::quantize(fmt, rows, cols, &vals)?;
                let q = GpuQuantiser::with_rows_per_part(gpu, fmt, rows, cols, per_part)?;
                let row_bytes = cols * from.size();
                let mut r0 = 0;
                while r0 < rows {
                    let n = per_chunk.min(q.chunk_rows(r0, from, usize::MAX)?);
                    q.push(r0, from, &bytes[r0 * row_bytes..(r0 + n) * row_bytes]).await?;
                    r0 += n;
                }
                if let Some(r) = q.first_bad_row().await? {
                    return Err(format!("quantise {fmt} from {from:?} [{rows}, {cols}]: row {r} reported non-finite").into());
                }
                let got = read_back(gpu, &q.finish()).await?;
                let (dc, ds) = differences(&got, &want);
                if dc + ds > 0 {
                    let first = got.scales.iter().zip(&want.scales).position(|(a, b)| a.to_bits() != b.to_bits());
                    return Err(format!("quantise {fmt} from {from:?} [{rows}, {cols}] in parts of {per_part}: {dc} codes and {ds} scales differ from the CPU twin's (first scale at {first:?})").into());
                }
            }
        }
        report.push(format!("{rows}x{cols}"));
    }
    // A non-finite value is reported with the lowest row holding one.
    let (rows, cols) = (6, 64);
    let mut w = rng.normals(rows * cols, 1.0);
    w[4 * cols + 7] = f32::INFINITY;
    w[5 * cols] = f32::NAN;
    let (bytes, _) = encode(Source::BF16, &w);
    let q = GpuQuantiser::with_rows_per_part(gpu, QFormat::q4(32, true), rows, cols, 4)?;
    for (r0, r1) in [(0, 3), (3, 4), (4, 6)] {
        q.push(r0, Source::BF16, &bytes[r0 * cols * 2..r1 * cols * 2]).await?;
    }
    match q.first_bad_row().await? {
        Some(4) => {}
        other => return Err(format!("non-finite rows 4 and 5: reported {other:?}").into()),
    }
    Ok(format!("codes and scales bit-identical to the CPU twin: 7 formats x bf16/f16/f32 x {}; non-finite row reported", report.join(", ")))
}

crate::checks!(check_quantise);
