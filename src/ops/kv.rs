//! KV-cache append at a position read from `seq` on the GPU, so one recorded decode step can be
//! replayed at every position.

use super::{act_flags, same_dtype, shape_err, u32_of, Rows, WG};
use crate::check::{self, CheckResult, Rng};
use crate::error::Result;
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(KvParams("KvParams") { rows: u32, cols: u32, capacity: u32, src_off: u32, src_stride: u32, _pad0: u32, _pad1: u32, _pad2: u32 });

const KV_WRITE: Kernel = Kernel { shader: "kv", entry: "kv_write", binds: &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite] };

pub fn variants() -> Vec<PipelineKey> {
    vec![PipelineKey::new(KV_WRITE, &[], &[]), PipelineKey::new(KV_WRITE, &["F16"], &[])]
}

/// cache[seq[0] + r] = src[r] for every row of `src` ([m, cols], any row view); cache is
/// [capacity, cols].
pub fn kv_write(rec: &mut Recorder, src: &Rows, seq: &Tensor, cache: &Tensor) -> Result<()> {
    let op = "kv_write";
    src.check(op)?;
    let &[cap, ccols] = cache.shape() else {
        return Err(shape_err(op, format!("cache {:?} must be a matrix", cache.shape())));
    };
    let (m, cols) = (src.rows, src.cols);
    if cols != ccols || m > cap || seq.dtype() != DType::U32 || seq.is_empty() {
        return Err(shape_err(op, format!("src {m}x{cols} into cache {:?} with seq {:?} {}", cache.shape(), seq.shape(), seq.dtype())));
    }
    same_dtype(op, src.t.dtype(), &[cache])?;
    let params = KvParams { rows: m as u32, cols: cols as u32, capacity: u32_of(op, cap)?, src_off: u32_of(op, src.off)?, src_stride: u32_of(op, src.stride)?, _pad0: 0, _pad1: 0, _pad2: 0 };
    let key = PipelineKey::new(KV_WRITE, act_flags(op, src.t.dtype())?, &[]);
    rec.dispatch(&key, &params, &[seq, src.t, cache], grid(u32_of(op, m * cols)?.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

async fn check_kv_write(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(80);
    for dt in check::act_dtypes(gpu) {
        let (cap, cols) = (9, 33);
        let init = check::round_to(dt, &rng.vec(cap * cols, -1.0, 1.0));
        let cache = Tensor::from_f32(gpu, &[cap, cols], dt, &init)?;
        let src_rows = check::round_to(dt, &rng.vec(2 * cols, -1.0, 1.0));
        let src = Tensor::from_f32(gpu, &[2, cols], dt, &src_rows)?;
        let seq = Tensor::from_u32(gpu, &[2], &[0, 0])?;
        let mut rec = Recorder::new(gpu);
        kv_write(&mut rec, &Rows::all(&src), &seq, &cache)?;
        let list = rec.finish()?;
        let mut want = init.clone();
        // Replays at positions 0, 4 and 8 (the last one's second row falls off the cache).
        for pos in [0usize, 4, 8] {
            seq.write_u32(gpu, &[pos as u32, 0])?;
            list.run(gpu).await?;
            for r in 0..2 {
                if pos + r < cap {
                    want[(pos + r) * cols..(pos + r + 1) * cols].copy_from_slice(&src_rows[r * cols..(r + 1) * cols]);
                }
            }
        }
        let got = gpu.read_f32(&cache).await?;
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            return Err(format!("kv_write {dt}: element {i} = {}, expected {}", got[i], want[i]).into());
        }
    }
    Ok("3 replays at moving positions, exact".into())
}

crate::checks!(check_kv_write);
