//! Memory-bandwidth probes (a streaming read and a copy) for `bench-ops`: they measure what a
//! WGSL kernel can move on the adapter, the practical roofline for the memory-bound kernels.

use super::shape_err;
use crate::check::{CheckResult, Rng};
use crate::error::Result;
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(BwParams("BwParams") { n4: u32, row4: u32, _pad1: u32, _pad2: u32 });

const BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::ReadWrite];
const READ: Kernel = Kernel { shader: "bandwidth", entry: "read_xor", binds: BINDS };
const COPY: Kernel = Kernel { shader: "bandwidth", entry: "copy", binds: BINDS };
const ROWS: Kernel = Kernel { shader: "bandwidth", entry: "read_rows", binds: BINDS };

pub fn variants() -> Vec<PipelineKey> {
    vec![PipelineKey::new(READ, &[], &[]), PipelineKey::new(COPY, &[], &[]), PipelineKey::new(ROWS, &[], &[("RPG", 4)])]
}

/// Invocations of the read probe: each writes one 16-byte XOR to `out`, which must hold
/// `read_threads(groups)` u32x4 (`groups` workgroups of 256).
pub fn read_threads(groups: u32) -> usize {
    groups as usize * 256
}

/// XOR-reads all of `src` (u32, length a multiple of 4) with `groups` workgroups.
pub fn read_xor(rec: &mut Recorder, src: &Tensor, out: &Tensor, groups: u32) -> Result<()> {
    if !src.len().is_multiple_of(4) || out.len() < read_threads(groups) * 4 || src.dtype() != DType::U32 || out.dtype() != DType::U32 {
        return Err(shape_err("read_xor", format!("src {:?} out {:?} for {groups} groups", src.shape(), out.shape())));
    }
    let p = BwParams { n4: (src.len() / 4) as u32, ..Default::default() };
    rec.dispatch(&PipelineKey::new(READ, &[], &[]), &p, &[src, out], grid(groups, rec.gpu.caps.max_workgroups_per_dim))
}

/// Reads `src` as rows of `row4` 16-byte elements, GEMV-style (`rpg` rows per 32-lane group);
/// `out` needs 4 u32 per invocation: `read_threads(rows_groups(..))` u32x4.
pub fn read_rows(rec: &mut Recorder, src: &Tensor, out: &Tensor, row4: usize, rpg: u32) -> Result<u32> {
    let n4 = src.len() / 4;
    if !src.len().is_multiple_of(4) || row4 == 0 || !n4.is_multiple_of(row4) || !(1..=4).contains(&rpg) {
        return Err(shape_err("read_rows", format!("src {:?} rows of {row4} x16 bytes, {rpg} per group", src.shape())));
    }
    let groups = ((n4 / row4) as u32).div_ceil(8 * rpg);
    if out.len() < read_threads(groups) * 4 {
        return Err(shape_err("read_rows", format!("out {:?} for {groups} groups", out.shape())));
    }
    let p = BwParams { n4: n4 as u32, row4: row4 as u32, ..Default::default() };
    rec.dispatch(&PipelineKey::new(ROWS, &[], &[("RPG", rpg)]), &p, &[src, out], grid(groups, rec.gpu.caps.max_workgroups_per_dim))?;
    Ok(groups)
}

/// Copies `src` to `dst` (u32, same length, a multiple of 4).
pub fn copy(rec: &mut Recorder, src: &Tensor, dst: &Tensor, groups: u32) -> Result<()> {
    if !src.len().is_multiple_of(4) || dst.len() != src.len() || src.dtype() != DType::U32 || dst.dtype() != DType::U32 {
        return Err(shape_err("copy", format!("src {:?} dst {:?}", src.shape(), dst.shape())));
    }
    let p = BwParams { n4: (src.len() / 4) as u32, ..Default::default() };
    rec.dispatch(&PipelineKey::new(COPY, &[], &[]), &p, &[src, dst], grid(groups, rec.gpu.caps.max_workgroups_per_dim))
}

async fn check_bandwidth_probes(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(50);
    let n = 4 * 10_007; // not a multiple of the grid: the stride loop must cover the tail
    let data: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
    let src = Tensor::from_u32(gpu, &[n], &data)?;
    let groups = 3;
    let out = crate::check::poisoned(gpu, &[read_threads(groups) * 4], DType::U32)?;
    let dst = crate::check::poisoned(gpu, &[n], DType::U32)?;
    let mut rec = Recorder::new(gpu);
    read_xor(&mut rec, &src, &out, groups)?;
    copy(&mut rec, &src, &dst, groups)?;
    rec.finish()?.run(gpu).await?;
    let got = gpu.read_u32(&out).await?;
    let threads = read_threads(groups);
    let mut want = vec![0u32; threads * 4];
    for i in 0..n / 4 {
        for c in 0..4 {
            want[(i % threads) * 4 + c] ^= data[i * 4 + c];
        }
    }
    if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
        return Err(format!("read_xor: element {i} = {:#x}, expected {:#x}", got[i], want[i]).into());
    }
    // Rows probe: 10007 elements = 1 row of 10007 (a single row, read by every group).
    let rows_out = crate::check::poisoned(gpu, &[read_threads(1) * 4], DType::U32)?;
    let mut rec = Recorder::new(gpu);
    read_rows(&mut rec, &src, &rows_out, n / 4, 1)?;
    rec.finish()?.run(gpu).await?;
    let got_rows = gpu.read_u32(&rows_out).await?;
    for lid in 0..256 {
        let lane = lid % 32;
        let mut acc = [0u32; 4];
        for c in (lane..n / 4).step_by(32) {
            for (j, a) in acc.iter_mut().enumerate() {
                *a ^= data[c * 4 + j];
            }
        }
        if got_rows[lid * 4..lid * 4 + 4] != acc {
            return Err(format!("read_rows: invocation {lid} = {:?}, expected {acc:?}", &got_rows[lid * 4..lid * 4 + 4]).into());
        }
    }
    let copied = gpu.read_u32(&dst).await?;
    if let Some(i) = (0..n).find(|&i| copied[i] != data[i]) {
        return Err(format!("copy: element {i} = {:#x}, expected {:#x}", copied[i], data[i]).into());
    }
    Ok(format!("{n} words read and copied exactly"))
}

crate::checks!(check_bandwidth_probes);
