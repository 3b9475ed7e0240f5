//! Checkpoint dtypes (f32, f16, bf16) converted to the runtime's f32 or f16 on the GPU while
//! loading: the file's bytes are uploaded as they are and a kernel writes the target tensor,
//! part by part within the binding limit, so the host never builds a converted copy.

use half::{bf16, f16};

use super::{shape_err, u32_of, WG};
use crate::check::{CheckResult, Rng};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, RowSplit, Tensor};
use crate::params_struct;

params_struct!(ConvertParams("ConvertParams") { n: u32, _pad0: u32, _pad1: u32, _pad2: u32 });

const BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::ReadWrite];
const ENTRIES: [&str; 4] = ["bf16_to_f32", "f16_to_f32", "bf16_to_f16", "f32_to_f16"];

/// Element types found in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    F32,
    F16,
    BF16,
    /// Packed quantised codes (`quant`): never converted, uploaded as they are.
    U32,
}

impl Source {
    pub fn size(self) -> usize {
        match self {
            Source::F32 | Source::U32 => 4,
            Source::F16 | Source::BF16 => 2,
        }
    }
}

fn kernel(from: Source, to: DType) -> Result<Option<Kernel>> {
    let entry = match (from, to) {
        (Source::F32, DType::F32) | (Source::F16, DType::F16) => return Ok(None),
        (Source::BF16, DType::F32) => ENTRIES[0],
        (Source::F16, DType::F32) => ENTRIES[1],
        (Source::BF16, DType::F16) => ENTRIES[2],
        (Source::F32, DType::F16) => ENTRIES[3],
        (Source::U32, _) => return Err(Error::DType { op: "convert", dtype: "u32".into(), detail: "packed codes are not floating-point weights".into() }),
        (_, DType::U32) => return Err(Error::DType { op: "convert", dtype: "u32".into(), detail: "weights convert to f32 or f16".into() }),
    };
    Ok(Some(Kernel { shader: "convert", entry, binds: BINDS }))
}

pub fn variants() -> Vec<PipelineKey> {
    ENTRIES.iter().map(|&entry| PipelineKey::new(Kernel { shader: "convert", entry, binds: BINDS }, &[], &[])).collect()
}

/// Converts the `n` elements of `from` held in `raw` (the file's bytes as a U32 tensor) into `dst`.
pub fn convert(rec: &mut Recorder, raw: &Tensor, n: usize, from: Source, dst: &Tensor) -> Result<()> {
    let op = "convert";
    if raw.dtype() != DType::U32 || raw.len() * 4 < n * from.size() || dst.len() != n {
        return Err(shape_err(op, format!("{n} {from:?} elements from {:?} into {:?} {}", raw.shape(), dst.shape(), dst.dtype())));
    }
    let Some(k) = kernel(from, dst.dtype())? else {
        return Err(shape_err(op, format!("{from:?} to {} needs no conversion", dst.dtype())));
    };
    let threads = if dst.dtype() == DType::F16 { n.div_ceil(2) } else { n };
    let params = ConvertParams { n: u32_of(op, n)?, ..Default::default() };
    rec.dispatch(&PipelineKey::new(k, &[], &[]), &params, &[raw, dst], grid(u32_of(op, threads)?.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// Uploads a [rows, cols] matrix stored as `from` in `bytes` as a `RowSplit` of `to`, converting
/// on the GPU, in parts of at most `rows_per_part` rows (and within the binding limit).
pub async fn upload_matrix(gpu: &Gpu, rows: usize, cols: usize, from: Source, bytes: &[u8], to: DType, rows_per_part: usize) -> Result<RowSplit> {
    if bytes.len() != rows * cols * from.size() {
        return Err(shape_err("upload", format!("[{rows}, {cols}] {from:?} needs {} bytes, got {}", rows * cols * from.size(), bytes.len())));
    }
    if kernel(from, to)?.is_none() {
        return RowSplit::from_bytes_parts(gpu, rows, cols, to, bytes, rows_per_part);
    }
    // Both the raw part and the converted part must fit one binding.
    let widest = from.size().max(to.size());
    let per = rows_per_part.min(RowSplit::rows_per_part(gpu, cols, if widest == 4 { DType::F32 } else { DType::F16 })?).max(1);
    let row_bytes = cols * from.size();
    let mut parts = Vec::new();
    let mut r0 = 0;
    while r0 < rows {
        let n = per.min(rows - r0);
        let chunk = &bytes[r0 * row_bytes..(r0 + n) * row_bytes];
        let raw = Tensor::empty(gpu, &[chunk.len().div_ceil(4)], DType::U32)?;
        raw.write_bytes(gpu, chunk);
        let part = Tensor::empty_exact(gpu, &[n, cols], to)?;
        let mut rec = Recorder::new(gpu);
        convert(&mut rec, &raw, n * cols, from, &part)?;
        rec.finish()?.run(gpu).await?;
        parts.push((r0, part));
        r0 += n;
    }
    Ok(RowSplit { rows, cols, dtype: to, parts })
}

/// Stacks matrices row-wise into one (parts under the binding limit), by buffer copies on the
/// GPU: e.g. q|k|v projections fused into one matmul. The sources are dropped afterwards.
pub async fn stack_rows(gpu: &Gpu, mats: Vec<RowSplit>) -> Result<RowSplit> {
    let op = "stack";
    let Some(first) = mats.first() else { return Err(shape_err(op, "no matrices".into())) };
    let (cols, dtype) = (first.cols, first.dtype);
    if mats.iter().any(|m| m.cols != cols || m.dtype != dtype) {
        return Err(shape_err(op, "matrices of different widths or dtypes".into()));
    }
    if mats.len() == 1 {
        return Ok(mats.into_iter().next().expect("one matrix"));
    }
    let row_bytes = (cols * dtype.size()) as u64;
    if !row_bytes.is_multiple_of(4) {
        return Err(shape_err(op, format!("rows of {row_bytes} bytes cannot be copied on the GPU (4-byte multiples)")));
    }
    // Every source part as (first row in the stack, tensor, rows).
    let mut src = Vec::new();
    let mut base = 0;
    for m in &mats {
        for (r0, t) in &m.parts {
            src.push((base + r0, t.clone(), t.shape()[0]));
        }
        base += m.rows;
    }
    let rows = base;
    let per = RowSplit::rows_per_part(gpu, cols, dtype)?;
    let mut parts = Vec::new();
    let mut enc = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("stack") });
    let mut r0 = 0;
    while r0 < rows {
        let n = per.min(rows - r0);
        let part = Tensor::empty_exact(gpu, &[n, cols], dtype)?;
        for (s0, t, sn) in &src {
            let (lo, hi) = (r0.max(*s0), (r0 + n).min(s0 + sn));
            if lo < hi {
                let from = t.offset() + (lo - s0) as u64 * row_bytes;
                let to = part.offset() + (lo - r0) as u64 * row_bytes;
                enc.copy_buffer_to_buffer(t.buffer(), from, part.buffer(), to, (hi - lo) as u64 * row_bytes);
            }
        }
        parts.push((r0, part));
        r0 += n;
    }
    gpu.submit_checked("stacking weight matrices", enc.finish()).await?;
    Ok(RowSplit { rows, cols, dtype, parts })
}

async fn check_convert(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(60);
    let mut report = Vec::new();
    for (rows, cols, part) in [(1, 1, 1), (1, 7, 1), (3, 33, 2), (9, 1025, 4)] {
        let n = rows * cols;
        let mut vals: Vec<f32> = (0..n).map(|_| rng.normal() * 10f32.powi(rng.below(9) as i32 - 4)).collect();
        // Edge values: beyond f16's range, f16 subnormals, signed zero.
        for (i, v) in [1e6f32, -7e4, 3e-6, -0.0, 65504.0].into_iter().enumerate().take(n) {
            vals[i] = v;
        }
        for from in [Source::BF16, Source::F16, Source::F32] {
            let (bytes, exact): (Vec<u8>, Vec<f32>) = match from {
                Source::BF16 => {
                    let h: Vec<bf16> = vals.iter().map(|&v| bf16::from_f32(v)).collect();
                    (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|v| v.to_f32()).collect())
                }
                Source::F16 => {
                    let h: Vec<f16> = vals.iter().map(|&v| f16::from_f32(v.clamp(-65504.0, 65504.0))).collect();
                    (bytemuck::cast_slice(&h).to_vec(), h.iter().map(|v| v.to_f32()).collect())
                }
                Source::F32 | Source::U32 => (bytemuck::cast_slice(&vals).to_vec(), vals.clone()),
            };
            for to in [DType::F32, DType::F16] {
                let split = upload_matrix(gpu, rows, cols, from, &bytes, to, part).await?;
                let mut got = Vec::with_capacity(n);
                for (_, t) in &split.parts {
                    got.extend(gpu.read_f32(t).await?);
                }
                for i in 0..n {
                    let want = if to == DType::F16 { f16::from_f32(exact[i].clamp(-65504.0, 65504.0)).to_f32() } else { exact[i] };
                    // Exact to f32; to f16 within one f16 step (WGSL leaves the rounding mode open).
                    let ulp = if to == DType::F16 { (f16::from_f32(want).to_f32() - f16::from_bits(f16::from_f32(want).to_bits().wrapping_sub(1)).to_f32()).abs().max(6e-8) } else { 0.0 };
                    let ok = got[i] == want || (got[i] - want).abs() <= ulp || (got[i] == 0.0 && want == 0.0);
                    if !ok || got[i].is_nan() {
                        return Err(format!("convert {from:?}->{to} [{rows}x{cols}] element {i}: {} from {}, expected {want}", got[i], vals[i]).into());
                    }
                }
            }
        }
        report.push(format!("{rows}x{cols}/{} parts", rows.div_ceil(part)));
    }
    Ok(format!("bf16/f16/f32 -> f32/f16 exact or within 1 f16 step: {}", report.join(", ")))
}

crate::checks!(check_convert);
