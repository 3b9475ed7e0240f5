//! Rotary position embedding (rotate-half convention, as HF Llama), in place on a row view of
//! `heads` heads. The base position comes from a U32 storage tensor `seq` ([pos of row 0, ..]),
//! so a recorded decode step can be replayed at the next position without re-recording.

use super::{act_flags, shape_err, u32_of, Rows, WG};
use crate::check::{self, compare, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(RopeParams("RopeParams") { rows: u32, heads: u32, dim: u32, off: u32, stride: u32, _pad2: u32, _pad0: u32, _pad1: u32 });

const ROPE: Kernel = Kernel { shader: "rope", entry: "rope", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite] };

pub fn variants() -> Vec<PipelineKey> {
    vec![PipelineKey::new(ROPE, &[], &[]), PipelineKey::new(ROPE, &["F16"], &[])]
}

/// HF's inverse frequencies, in f32 as HF computes them: 1 / theta^(2i/dim) for i < dim/2.
pub fn inv_freq(dim: usize, theta: f32) -> Vec<f32> {
    (0..dim / 2).map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32)).collect()
}

/// Rotates `x` ([rows, heads*dim] view) in place; row r is at position `seq[0] + r`.
/// `inv_freq`: f32 [dim/2] from [`inv_freq`], uploaded once per model.
pub fn rope(rec: &mut Recorder, x: &Rows, heads: usize, dim: usize, inv_freq: &Tensor, seq: &Tensor) -> Result<()> {
    let op = "rope";
    x.check(op)?;
    if dim == 0 || !dim.is_multiple_of(2) || heads * dim != x.cols {
        return Err(shape_err(op, format!("{heads} heads of {dim} (even) must fill {} columns", x.cols)));
    }
    if seq.dtype() != DType::U32 || seq.is_empty() {
        return Err(shape_err(op, format!("seq must be a u32 tensor, got {:?} {}", seq.shape(), seq.dtype())));
    }
    if inv_freq.dtype() != DType::F32 || inv_freq.len() != dim / 2 {
        return Err(shape_err(op, format!("inv_freq {:?} {} for head dim {dim}", inv_freq.shape(), inv_freq.dtype())));
    }
    let pairs = u32_of(op, x.rows * heads * dim / 2)?;
    let params = RopeParams {
        rows: x.rows as u32,
        heads: heads as u32,
        dim: dim as u32,
        off: x.off as u32,
        stride: x.stride as u32,
        _pad2: 0,
        _pad0: 0,
        _pad1: 0,
    };
    let key = PipelineKey::new(ROPE, act_flags(op, x.t.dtype())?, &[]);
    rec.dispatch(&key, &params, &[seq, inv_freq, x.t], grid(pairs.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// f64 reference on a [rows, heads*dim] row-major block; the angle is formed in f32 as HF
/// does (f32 inv_freq times f32 position), everything after in f64.
pub fn reference(x: &[f32], rows: usize, heads: usize, dim: usize, theta: f32, pos0: usize) -> Vec<f64> {
    let inv = inv_freq(dim, theta);
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let half = dim / 2;
    for r in 0..rows {
        for h in 0..heads {
            for i in 0..half {
                let ang = ((pos0 + r) as f32 * inv[i]) as f64;
                let b = r * heads * dim + h * dim;
                let (x1, x2) = (x[b + i] as f64, x[b + i + half] as f64);
                y[b + i] = x1 * ang.cos() - x2 * ang.sin();
                y[b + i + half] = x2 * ang.cos() + x1 * ang.sin();
            }
        }
    }
    y
}

async fn check_rope(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(30);
    let mut worst = 0.0f64;
    for dt in check::act_dtypes(gpu) {
        // (rows, heads, dim, pos0): decode-like single rows at far positions, prefill blocks.
        for (rows, heads, dim, pos0) in [(1, 1, 2, 0), (7, 3, 64, 5), (33, 2, 128, 0), (1, 16, 128, 619), (3, 4, 128, 4000)] {
            let cols = heads * dim;
            let x = check::round_to(dt, &rng.normals(rows * cols, 1.0));
            let xt = Tensor::from_f32(gpu, &[rows, cols], dt, &x)?;
            let seq = Tensor::from_u32(gpu, &[2], &[pos0 as u32, 0])?;
            let inv = Tensor::from_f32(gpu, &[dim / 2], DType::F32, &inv_freq(dim, 10000.0))?;
            let mut rec = Recorder::new(gpu);
            rope(&mut rec, &Rows::all(&xt), heads, dim, &inv, &seq)?;
            rec.finish()?.run(gpu).await?;
            let got = gpu.read_f32(&xt).await?;
            let want = reference(&x, rows, heads, dim, 10000.0, pos0);
            let tol = if dt == DType::F16 { Tol { abs: 3e-3, rel: 2e-3 } } else { Tol { abs: 2e-6, rel: 1e-6 } };
            worst = worst.max(compare(&format!("rope {dt} {rows}x{heads}x{dim}@{pos0}"), &got, &want, tol)?);
        }
    }
    Ok(format!("max abs err {worst:.2e}"))
}

/// A recorded step replayed at new positions by rewriting only the `seq` tensor.
async fn check_rope_replay(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(31);
    let (heads, dim) = (2, 64);
    let x = rng.normals(heads * dim, 1.0);
    let src = Tensor::from_f32(gpu, &[1, heads * dim], DType::F32, &x)?;
    let work = Tensor::empty(gpu, &[1, heads * dim], DType::F32)?;
    let seq = Tensor::from_u32(gpu, &[2], &[0, 0])?;
    let inv = Tensor::from_f32(gpu, &[dim / 2], DType::F32, &inv_freq(dim, 10000.0))?;
    let mut rec = Recorder::new(gpu);
    // Copy (via add of a zero row view) then rotate, as one list.
    let zero = Tensor::from_f32(gpu, &[1, heads * dim], DType::F32, &vec![0.0; heads * dim])?;
    super::elementwise::binary(&mut rec, super::elementwise::Binary::Add, &Rows::all(&src), &Rows::all(&zero), &Rows::all(&work))?;
    rope(&mut rec, &Rows::all(&work), heads, dim, &inv, &seq)?;
    let list = rec.finish()?;
    let mut worst = 0.0f64;
    for pos in [3u32, 17, 250, 1000] {
        seq.write_u32(gpu, &[pos, 0])?;
        list.run(gpu).await?;
        let got = gpu.read_f32(&work).await?;
        let want = reference(&x, 1, heads, dim, 10000.0, pos as usize);
        worst = worst.max(compare(&format!("rope replay @{pos}"), &got, &want, Tol { abs: 2e-6, rel: 1e-6 })?);
    }
    Ok(format!("4 replays, max abs err {worst:.2e}"))
}

crate::checks!(check_rope, check_rope_replay);
