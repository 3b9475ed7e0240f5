//! `bench-ops`: throughput of the kernels at DeepSeek-VL-1.3B shapes (and SAM-B's attention, for
//! the 7B's high-resolution tower). A benchmark, not a test: it prints numbers and asserts
//! nothing. Native only (it times with the host clock around whole submissions of many
//! repetitions, after a warm-up).

use std::time::Instant;

use crate::check::Rng;
use crate::error::Result;
use crate::gpu::{DType, Gpu, Recorder, RowSplit, StepList, Tensor};
use crate::ops::attention::{attention, attention_rel_pos, attention_tiled, AttnShape, RelPos};
use crate::ops::matmul::{linear, Epilogue};
use crate::ops::Rows;

/// One measured row.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub name: String,
    pub ms: f64,
    pub gflops: f64,
    pub gbs: f64,
    /// (max - min) / median over the timed trials.
    pub spread: f64,
}

/// Median ms per run of `list` over `trials` timed submissions (and the relative spread
/// (max - min) / median). Outside quick mode (`reps` > 1) each submission repeats the list
/// enough times to last ~100 ms, so clock ramp-up and submission overhead wash out.
async fn time_list(gpu: &Gpu, list: &StepList, reps: usize, trials: usize) -> Result<(f64, f64)> {
    list.run_repeated(gpu, 2).await?; // warm-up: pipelines, caches, clocks
    gpu.wait_idle()?;
    let mut reps = reps;
    if reps > 1 {
        let t = Instant::now();
        list.run_repeated(gpu, reps).await?;
        gpu.wait_idle()?;
        let per = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        reps = ((100.0 / per.max(1e-3)).ceil() as usize).clamp(reps, 5000);
    }
    let mut times = Vec::with_capacity(trials);
    for _ in 0..trials {
        let t = Instant::now();
        list.run_repeated(gpu, reps).await?;
        gpu.wait_idle()?;
        times.push(t.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    Ok((med, (times[times.len() - 1] - times[0]) / med))
}

#[allow(clippy::too_many_arguments)]
async fn bench_linear(gpu: &Gpu, m: usize, k: usize, n: usize, act: DType, w: DType, reps: usize, trials: usize) -> Result<BenchRow> {
    let mut rng = Rng::new(7);
    let x = Tensor::from_f32(gpu, &[m, k], act, &rng.normals(m * k, 1.0))?;
    let wt = RowSplit::from_f32(gpu, n, k, w, &rng.normals(n * k, 0.02))?;
    let y = Tensor::empty(gpu, &[m, n], act)?;
    let mut rec = Recorder::new(gpu);
    linear(&mut rec, &Rows::all(&x), &wt, Epilogue::default(), &Rows::all(&y))?;
    let (ms, spread) = time_list(gpu, &rec.finish()?, reps, trials).await?;
    let flops = 2.0 * (m * k * n) as f64;
    let bytes = (n * k * w.size() + m * k * act.size() + m * n * act.size()) as f64;
    let kind = if m <= crate::ops::matmul::GEMV_MAX_ROWS { "GEMV" } else { "GEMM" };
    Ok(BenchRow { name: format!("{kind} {m}x{k}->{n} x:{act} w:{w}"), ms, gflops: flops / ms / 1e6, gbs: bytes / ms / 1e6, spread })
}

/// `linear` with a quantised weight: GB/s counts the packed bytes read.
#[allow(clippy::too_many_arguments)]
async fn bench_qlinear(gpu: &Gpu, m: usize, k: usize, n: usize, act: DType, fmt: crate::quant::QFormat, reps: usize, trials: usize) -> Result<BenchRow> {
    let mut rng = Rng::new(9);
    let x = Tensor::from_f32(gpu, &[m, k], act, &rng.normals(m * k, 1.0))?;
    let packed = crate::quant::Packed::quantize(fmt, n, k, &rng.vec(n * k, -0.05, 0.05))?;
    let wt = crate::quant::QMatrix::upload(gpu, &packed)?;
    let y = Tensor::empty(gpu, &[m, n], act)?;
    let mut rec = Recorder::new(gpu);
    linear(&mut rec, &Rows::all(&x), &wt, Epilogue::default(), &Rows::all(&y))?;
    let (ms, spread) = time_list(gpu, &rec.finish()?, reps, trials).await?;
    let flops = 2.0 * (m * k * n) as f64;
    let bytes = (packed.bytes() + m * k * act.size() + m * n * act.size()) as f64;
    let kind = if m <= crate::ops::matmul::GEMV_MAX_ROWS { "QGEMV" } else { "QGEMM" };
    Ok(BenchRow { name: format!("{kind} {m}x{k}->{n} x:{act} w:{fmt}"), ms, gflops: flops / ms / 1e6, gbs: bytes / ms / 1e6, spread })
}

/// The decode step's products at the 1.3B's shapes, each as the model records it (norm and
/// SwiGLU fused, residual adds in the epilogue), with f16 or q4 (g32, offsets) weights: ms per
/// product over 50 recorded back to back (each waits for the last, as in the model), so each
/// includes the dependent-dispatch floor (`dispatch` row).
async fn bench_decode_gemvs(gpu: &Gpu, quant: bool, reps: usize, trials: usize) -> Result<Vec<BenchRow>> {
    use crate::ops::matmul::{rms_linear, rms_linear_glu};
    use crate::quant::{Packed, QFormat, QMatrix, WeightRef};
    let act = if gpu.caps.f16 { DType::F16 } else { DType::F32 };
    let (hid, inter, vocab) = (2048, 5632, 102400);
    let mut rng = Rng::new(5);
    let x = Tensor::from_f32(gpu, &[1, hid], act, &rng.normals(hid, 1.0))?;
    let g = Tensor::from_f32(gpu, &[hid], DType::F32, &rng.vec(hid, 0.5, 1.5))?;
    let h = Tensor::empty(gpu, &[1, hid], act)?;
    let s = Tensor::from_f32(gpu, &[1, inter], act, &rng.normals(inter, 1.0))?;
    let mut rows = Vec::new();
    // (name, weight rows, K, kind): 0 norm, 1 residual, 2 norm + SwiGLU.
    for (name, n, k, kind) in [("qkv", 3 * hid, hid, 0), ("o", hid, hid, 1), ("gate|up", 2 * inter, hid, 2), ("down", hid, inter, 1), ("lm_head", vocab, hid, 0)] {
        let vals = rng.vec(n * k, -0.05, 0.05);
        let (dense, q, fmt);
        let w: WeightRef = if quant {
            fmt = QFormat::q4(32, true);
            q = QMatrix::upload(gpu, &Packed::quantize(fmt, n, k, &vals)?)?;
            (&q).into()
        } else {
            dense = RowSplit::from_f32(gpu, n, k, DType::F16, &vals)?;
            (&dense).into()
        };
        let wname = if quant { "q4g32z" } else { "f16" };
        let out_cols = if kind == 2 { n / 2 } else { n };
        let y = Tensor::empty(gpu, &[1, out_cols], act)?;
        let t = Tensor::empty(gpu, &[1, n], act)?;
        let xin = if k == hid { &x } else { &s };
        const COPIES: usize = 50;
        let mut rec = Recorder::new(gpu);
        for _ in 0..COPIES {
            match kind {
                0 => rms_linear(&mut rec, &Rows::all(xin), &g, 1e-6, w, Epilogue::default(), &Rows::all(&y), &Rows::all(&h))?,
                1 => linear(&mut rec, &Rows::all(xin), w, Epilogue { residual: true, ..Default::default() }, &Rows::all(&y))?,
                _ => rms_linear_glu(&mut rec, &Rows::all(xin), &g, 1e-6, w, &Rows::all(&y), &Rows::all(&h), &Rows::all(&t))?,
            }
        }
        let dispatches = rec.len() / COPIES;
        let (list_ms, spread) = time_list(gpu, &rec.finish()?, reps, trials).await?;
        let ms = list_ms / COPIES as f64;
        let wbytes = if quant { n * k / 2 + n * (k / 32) * 4 } else { n * k * 2 };
        let flops = 2.0 * (n * k) as f64;
        rows.push(BenchRow { name: format!("decode {name} 1x{k}->{n} w:{wname} ({dispatches} dispatch)"), ms, gflops: flops / ms / 1e6, gbs: wbytes as f64 / ms / 1e6, spread });
    }
    Ok(rows)
}

/// Decode attention at the 1.3B's shape (16 heads of 128): one query row over `valid` keys of a
/// `cap`-row cache, with the splits and their combine, ms per step over 50 recorded back to back.
async fn bench_decode_attention(gpu: &Gpu, cap: usize, valid: usize, reps: usize, trials: usize) -> Result<BenchRow> {
    const COPIES: usize = 50;
    let act = if gpu.caps.f16 { DType::F16 } else { DType::F32 };
    let (heads, d) = (16, 128);
    let w = heads * d;
    let mut rng = Rng::new(6);
    let q = Tensor::from_f32(gpu, &[1, w], act, &rng.normals(w, 1.0))?;
    let kv = Tensor::from_f32(gpu, &[cap, 2 * w], act, &rng.normals(cap * 2 * w, 1.0))?;
    let o = Tensor::empty(gpu, &[1, w], act)?;
    let seq = Tensor::from_u32(gpu, &[2], &[valid as u32 - 1, valid as u32])?;
    let s = AttnShape { heads, kv_heads: heads, head_dim: d, scale: (d as f32).powf(-0.5), causal: true };
    let mut rec = Recorder::new(gpu);
    for _ in 0..COPIES {
        attention(&mut rec, &Rows::all(&q), &Rows::cols(&kv, 0, w), &Rows::cols(&kv, w, w), &Rows::all(&o), s, &seq)?;
    }
    let dispatches = rec.len() / COPIES;
    let (list_ms, spread) = time_list(gpu, &rec.finish()?, reps, trials).await?;
    let ms = list_ms / COPIES as f64;
    let bytes = (2 * valid * w * act.size()) as f64;
    Ok(BenchRow { name: format!("decode attention {valid} of {cap} keys {heads}x{d} {act} ({dispatches} dispatches)"), ms, gflops: 4.0 * (valid * w) as f64 / ms / 1e6, gbs: bytes / ms / 1e6, spread })
}

#[allow(clippy::too_many_arguments)]
async fn bench_attention(gpu: &Gpu, n: usize, heads: usize, d: usize, act: DType, causal: bool, reps: usize, trials: usize) -> Result<BenchRow> {
    let mut rng = Rng::new(8);
    let w = heads * d;
    let qkv = Tensor::from_f32(gpu, &[n, 3 * w], act, &rng.normals(n * 3 * w, 1.0))?;
    let o = Tensor::empty(gpu, &[n, w], act)?;
    let seq = Tensor::from_u32(gpu, &[2], &[0, n as u32])?;
    let s = AttnShape { heads, kv_heads: heads, head_dim: d, scale: (d as f32).powf(-0.5), causal };
    let mut rec = Recorder::new(gpu);
    let (q, k, v) = (Rows::cols(&qkv, 0, w), Rows::cols(&qkv, w, w), Rows::cols(&qkv, 2 * w, w));
    // As the model runs them: the vision tower's on the tiled kernels, the prefill's causal.
    if causal {
        attention(&mut rec, &q, &k, &v, &Rows::all(&o), s, &seq)?;
    } else {
        attention_tiled(&mut rec, &q, &k, &v, &Rows::all(&o), s)?;
    }
    let (ms, spread) = time_list(gpu, &rec.finish()?, reps, trials).await?;
    let pairs = if causal { (n * (n + 1) / 2) as f64 } else { (n * n) as f64 };
    let flops = 4.0 * pairs * (heads * d) as f64;
    let bytes = (4 * n * w * act.size()) as f64;
    let mode = if causal { "causal" } else { "full" };
    Ok(BenchRow { name: format!("attention {n}x{n} {heads}x{d} {mode} {act}"), ms, gflops: flops / ms / 1e6, gbs: bytes / ms / 1e6, spread })
}

/// SAM-B's attention with relative positions: `blocks` windows of a (g, g) grid (one block =
/// global attention), q, k, v as column slices of one fused qkv.
async fn bench_attention_rel(gpu: &Gpu, (g, blocks): (usize, usize), heads: usize, d: usize, act: DType, reps: usize, trials: usize) -> Result<BenchRow> {
    let mut rng = Rng::new(10);
    let (w, n) = (heads * d, g * g * blocks);
    let qkv = Tensor::from_f32(gpu, &[n, 3 * w], act, &rng.normals(n * 3 * w, 1.0))?;
    let rh = Tensor::from_f32(gpu, &[2 * g - 1, d], act, &rng.normals((2 * g - 1) * d, 0.2))?;
    let o = Tensor::empty(gpu, &[n, w], act)?;
    let s = AttnShape { heads, kv_heads: heads, head_dim: d, scale: (d as f32).powf(-0.5), causal: false };
    let mut rec = Recorder::new(gpu);
    let rel = RelPos { grid: (g, g), h: &rh, w: &rh };
    attention_rel_pos(&mut rec, &Rows::cols(&qkv, 0, w), &Rows::cols(&qkv, w, w), &Rows::cols(&qkv, 2 * w, w), &Rows::all(&o), s, &rel)?;
    let (ms, spread) = time_list(gpu, &rec.finish()?, reps, trials).await?;
    let flops = 4.0 * (blocks * g * g * g * g * heads * d) as f64;
    let bytes = (4 * n * w * act.size()) as f64;
    let what = if blocks == 1 { "global".to_string() } else { format!("{blocks} windows") };
    Ok(BenchRow { name: format!("attention rel-pos {g}x{g} grid, {what}, {heads}x{d} {act}"), ms, gflops: flops / ms / 1e6, gbs: bytes / ms / 1e6, spread })
}

/// Bandwidth ceilings through this stack: a WGSL streaming read, a WGSL copy and the copy
/// engine (`copy_buffer_to_buffer`), over `bytes` (bytes moved: read, or read + written).
async fn bench_memory(gpu: &Gpu, bytes: usize, reps: usize, trials: usize) -> Result<Vec<BenchRow>> {
    use crate::ops::bandwidth;
    let bytes = bytes.min((gpu.caps.max_binding / 16 * 16) as usize);
    let words = bytes / 4;
    let src = Tensor::empty(gpu, &[words], DType::U32)?;
    let dst = Tensor::empty(gpu, &[words], DType::U32)?;
    let groups = 8192;
    let out = Tensor::empty(gpu, &[bandwidth::read_threads(groups) * 4], DType::U32)?;
    // Fill with non-zero data (zeros can be faster than real data).
    let mut rec = Recorder::new(gpu);
    let seed: Vec<u32> = (0..words.min(1 << 20) as u32).map(|i| i.wrapping_mul(2654435761)).collect();
    for c in 0..words.div_ceil(seed.len()) {
        let n = seed.len().min(words - c * seed.len());
        gpu.queue.write_buffer(src.buffer(), (c * seed.len() * 4) as u64, bytemuck::cast_slice(&seed[..n]));
    }
    bandwidth::read_xor(&mut rec, &src, &out, groups)?;
    let read = rec.finish()?;
    let mut rec = Recorder::new(gpu);
    bandwidth::copy(&mut rec, &src, &dst, groups)?;
    let copy = rec.finish()?;
    let gb = bytes as f64 / 1e9;
    let mut rows = Vec::new();
    let (ms, spread) = time_list(gpu, &read, reps, trials).await?;
    rows.push(BenchRow { name: format!("memory: WGSL read {} MiB", bytes >> 20), ms, gflops: 0.0, gbs: gb / ms * 1e3, spread });
    let (ms, spread) = time_list(gpu, &copy, reps, trials).await?;
    rows.push(BenchRow { name: format!("memory: WGSL copy {} MiB (read+write)", bytes >> 20), ms, gflops: 0.0, gbs: 2.0 * gb / ms * 1e3, spread });
    for rpg in [1u32, 4] {
        // 4 KiB rows, as the f16 lm_head's 2048 columns.
        let mut rec = Recorder::new(gpu);
        let groups = bandwidth::read_rows(&mut rec, &src, &out_rows(gpu, bytes)?, 256, rpg)?;
        let (ms, spread) = time_list(gpu, &rec.finish()?, reps, trials).await?;
        rows.push(BenchRow { name: format!("memory: WGSL read as 4 KiB rows, {rpg} per warp ({groups} groups)"), ms, gflops: 0.0, gbs: gb / ms * 1e3, spread });
    }
    // ~100 ms per trial at the copy engine's 0.85 TB/s measured on the H200.
    let reps = if reps > 1 { 40 } else { 1 };
    let mut times = Vec::new();
    for t in 0..=trials {
        let start = Instant::now();
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for _ in 0..reps {
            enc.copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), 0, bytes as u64);
        }
        gpu.submit_checked("copy bench", enc.finish()).await?;
        gpu.wait_idle()?;
        if t > 0 {
            times.push(start.elapsed().as_secs_f64() * 1e3 / reps as f64);
        }
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    let spread = (times[times.len() - 1] - times[0]) / ms;
    rows.push(BenchRow { name: format!("memory: copy engine {} MiB (read+write)", bytes >> 20), ms, gflops: 0.0, gbs: 2.0 * gb / ms * 1e3, spread });
    Ok(rows)
}

fn out_rows(gpu: &Gpu, bytes: usize) -> Result<Tensor> {
    let rows = bytes / 4096;
    Tensor::empty(gpu, &[crate::ops::bandwidth::read_threads((rows as u32).div_ceil(8)) * 4], DType::U32)
}

/// Quantisation speed (what loading with int8/int4 recipes costs) on a 5632x2048 matrix, weights
/// per second in each row's name: the CPU twin over the CPU's threads from f32 (GB/s of f32 in
/// the GB/s column); the GPU kernel on bf16 rows already on the GPU (GB/s of bf16 read); and the
/// GPU path as loading runs it, bf16 rows from host memory uploaded in chunks and quantised,
/// until the GPU is done (GB/s of bf16 uploaded).
async fn bench_quantise(gpu: &Gpu, quick: bool, reps: usize, trials: usize) -> Result<Vec<BenchRow>> {
    use crate::ops::convert::Source;
    use crate::ops::quantise::{encode, quantise, RawRows};
    use crate::quant::{GpuQuantiser, Packed, QFormat};
    let (rows, cols) = if quick { (256, 2048) } else { (5632, 2048) };
    let w = Rng::new(5).normals(rows * cols, 0.02);
    let (bf16_bytes, _) = encode(Source::BF16, &w);
    let threads = crate::quant::cpu::threads_for(rows * cols);
    let n = (rows * cols) as f64;
    let spread = |t: &[f64]| (t[t.len() - 1] - t[0]) / t[t.len() / 2];
    let mut out = Vec::new();
    for fmt in [QFormat::q8(128), QFormat::q4(32, true), QFormat::q4(32, false)] {
        let mut times = Vec::new();
        for _ in 0..if quick { 1 } else { 3 } {
            let t = Instant::now();
            Packed::quantize(fmt, rows, cols, &w)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let name = format!("quantise (CPU, {threads} threads) {fmt} {rows}x{cols} from f32: {:.0} M weights/s", n / ms / 1e3);
        out.push(BenchRow { name, ms, gflops: 0.0, gbs: 4.0 * n / ms / 1e6, spread: spread(&times) });

        // The kernel alone: the rows already on the GPU, one dispatch replayed.
        let raw = Tensor::from_bytes(gpu, &[bf16_bytes.len() / 4], DType::U32, &bf16_bytes)?;
        let target = GpuQuantiser::new(gpu, fmt, rows, cols)?.finish();
        let bad = Tensor::from_u32(gpu, &[1], &[u32::MAX])?;
        let mut rec = Recorder::new(gpu);
        for part in &target.parts {
            let bytes = part.row0 * cols * 2;
            let chunk = raw.view(bytes / 4, &[part.rows * cols * 2 / 4])?;
            quantise(&mut rec, &RawRows { t: &chunk, from: Source::BF16, rows: part.rows, cols }, fmt, part, 0, part.row0, &bad)?;
        }
        let (ms, sp) = time_list(gpu, &rec.finish()?, reps, trials).await?;
        let name = format!("quantise (GPU kernel) {fmt} {rows}x{cols} from bf16 on the GPU: {:.0} M weights/s", n / ms / 1e3);
        out.push(BenchRow { name, ms, gflops: 0.0, gbs: 2.0 * n / ms / 1e6, spread: sp });

        // As loading runs it: host bytes in chunks, uploaded and quantised, then the GPU waited for.
        let mut times = Vec::new();
        for _ in 0..if quick { 1 } else { trials.max(3) } {
            let t = Instant::now();
            let q = GpuQuantiser::new(gpu, fmt, rows, cols)?;
            let mut r = 0;
            while r < rows {
                let k = q.chunk_rows(r, Source::BF16, 64 << 20)?;
                q.push(r, Source::BF16, &bf16_bytes[r * cols * 2..(r + k) * cols * 2]).await?;
                r += k;
            }
            q.first_bad_row().await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        let name = format!("quantise (GPU, upload + kernel) {fmt} {rows}x{cols} from bf16 in host memory: {:.0} M weights/s", n / ms / 1e3);
        out.push(BenchRow { name, ms, gflops: 0.0, gbs: 2.0 * n / ms / 1e6, spread: spread(&times) });
    }
    Ok(out)
}

/// Per-dispatch cost: `n` dependent adds of 2048 elements (each reads the previous one's output),
/// the floor a decode step of that many dispatches pays whatever its kernels do.
async fn bench_dispatch(gpu: &Gpu, n: usize, reps: usize, trials: usize) -> Result<BenchRow> {
    use crate::ops::elementwise::{binary, Binary};
    let a = Tensor::from_f32(gpu, &[2048], DType::F32, &vec![1.0; 2048])?;
    let b = Tensor::empty(gpu, &[2048], DType::F32)?;
    let mut rec = Recorder::new(gpu);
    for i in 0..n {
        let (x, y) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        binary(&mut rec, Binary::Add, &Rows::all(x), &Rows::all(x), &Rows::all(y))?;
    }
    let (ms, spread) = time_list(gpu, &rec.finish()?, reps, trials).await?;
    Ok(BenchRow { name: format!("dispatch: {n} dependent 2048-element adds, {:.2} us each", ms * 1e3 / n as f64), ms, gflops: 0.0, gbs: 0.0, spread })
}

/// Runs the standard set. `quick` shrinks repetitions (for slow software adapters).
pub async fn bench_ops(gpu: &Gpu, quick: bool, filter: Option<&str>) -> Result<Vec<BenchRow>> {
    let want = |name: &str| filter.is_none_or(|f| name.contains(f));
    let (reps, trials) = if quick { (1, 1) } else { (20, 5) };
    let mut acts = vec![DType::F32];
    if gpu.caps.f16 {
        acts.push(DType::F16);
    }
    let mut rows = Vec::new();
    if want("GEMM") {
        for &act in &acts {
            rows.push(bench_linear(gpu, 576, 1024, 4096, act, DType::F16, reps, trials).await?);
            rows.push(bench_linear(gpu, 620, 2048, 5632, act, DType::F16, reps, trials).await?);
        }
        rows.push(bench_linear(gpu, 576, 1024, 4096, DType::F32, DType::F32, reps, trials).await?);
        if !quick {
            rows.push(bench_linear(gpu, 4096, 4096, 4096, DType::F32, DType::F32, reps.min(10), trials).await?);
        }
        // Every product of the vision tower (576 rows) and the prefill (616 rows), f16.
        if !quick && gpu.caps.f16 {
            for (m, k, n) in [(576, 1024, 3072), (576, 1024, 1024), (576, 4096, 1024), (616, 2048, 6144), (616, 2048, 2048), (616, 2048, 11264), (616, 5632, 2048)] {
                rows.push(bench_linear(gpu, m, k, n, DType::F16, DType::F16, reps, trials).await?);
            }
        }
    }
    if want("GEMV") {
        for w in [DType::F16, DType::F32] {
            rows.push(bench_linear(gpu, 1, 2048, 5632, DType::F32, w, reps * 5, trials).await?);
            rows.push(bench_linear(gpu, 1, 2048, 102400, DType::F32, w, reps, trials).await?);
        }
    }
    if want("QGEMV") || want("QGEMM") {
        use crate::quant::QFormat;
        for fmt in [QFormat::q4(32, true), QFormat::q8(128)] {
            if want("QGEMV") {
                rows.push(bench_qlinear(gpu, 1, 2048, 5632, DType::F32, fmt, reps * 5, trials).await?);
                rows.push(bench_qlinear(gpu, 1, 5632, 2048, DType::F32, fmt, reps * 5, trials).await?);
            }
            if want("QGEMM") {
                rows.push(bench_qlinear(gpu, 620, 2048, 5632, *acts.last().unwrap_or(&DType::F32), fmt, reps, trials).await?);
            }
        }
        if want("QGEMV") {
            rows.push(bench_qlinear(gpu, 1, 2048, 102400, DType::F32, QFormat::q8(128), reps, trials).await?);
        }
    }
    if want("decode") && !quick {
        rows.extend(bench_decode_gemvs(gpu, false, reps, trials).await?);
        rows.extend(bench_decode_gemvs(gpu, true, reps, trials).await?);
        for (cap, valid) in [(882, 700), (4096, 700), (4096, 3000)] {
            rows.push(bench_decode_attention(gpu, cap, valid, reps, trials).await?);
        }
    }
    if want("dispatch") {
        rows.push(bench_dispatch(gpu, 200, reps, trials).await?);
    }
    if want("quantise") {
        rows.extend(bench_quantise(gpu, quick, reps, trials).await?);
    }
    if want("memory") {
        rows.extend(bench_memory(gpu, if quick { 64 << 20 } else { 1 << 30 }, reps, trials).await?);
    }
    if want("attention") {
        for &act in &acts {
            rows.push(bench_attention(gpu, 576, 16, 64, act, false, reps, trials).await?);
            rows.push(bench_attention(gpu, 616, 16, 128, act, true, reps, trials).await?);
        }
        // SAM-B at 1024x1024 (DeepSeek-VL-7B's high-resolution tower): too big for software adapters.
        if !quick {
            for &act in &acts {
                rows.push(bench_attention_rel(gpu, (14, 25), 12, 64, act, reps, trials).await?);
                rows.push(bench_attention_rel(gpu, (64, 1), 12, 64, act, reps, trials).await?);
            }
        }
    }
    Ok(rows)
}
