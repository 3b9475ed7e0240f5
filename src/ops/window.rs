//! SAM's window partition and unpartition of token rows: the windowed attention blocks of the
//! SAM-B image encoder run on rows grouped window by window (see `attention::attention_rel_pos`).

use super::{act_flags, same_dtype, shape_err, u32_of, Rows, WG};
use crate::check::{self, compare, poisoned, CheckResult, Rng, Tol};
use crate::error::Result;
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(WindowParams("WindowParams") { h: u32, w: u32, win: u32, nw: u32, c: u32, x_off: u32, x_stride: u32, n: u32 });

const BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::ReadWrite];
const PARTITION: Kernel = Kernel { shader: "window", entry: "window_partition", binds: BINDS };
const UNPARTITION: Kernel = Kernel { shader: "window", entry: "window_unpartition", binds: BINDS };

pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for f16 in [false, true] {
        let base: Vec<&str> = if f16 { vec!["F16"] } else { vec![] };
        v.push(PipelineKey::new(PARTITION, &base, &[]));
        let mut un = base.clone();
        un.push("UNPART");
        v.push(PipelineKey::new(UNPARTITION, &un, &[]));
    }
    v
}

/// Checks the shared contract of both directions; returns the parameters (with `n` unset) and
/// the windowed row count.
fn plan(op: &'static str, x: &Rows, (h, w): (usize, usize), win: usize, y: &Tensor) -> Result<(WindowParams, usize)> {
    x.check(op)?;
    if h == 0 || w == 0 || win == 0 || x.rows != h * w {
        return Err(shape_err(op, format!("{} token rows for a {h}x{w} grid in {win}x{win} windows", x.rows)));
    }
    let (nh, nw) = (h.div_ceil(win), w.div_ceil(win));
    let rows = nh * nw * win * win;
    if y.len() != rows * x.cols {
        return Err(shape_err(op, format!("windowed tensor {:?}, expected {rows} rows of {}", y.shape(), x.cols)));
    }
    same_dtype(op, x.t.dtype(), &[y])?;
    if x.t.same_buffer(y) {
        return Err(shape_err(op, "input and output share a buffer".into()));
    }
    u32_of(op, y.len())?;
    let params = WindowParams {
        h: h as u32,
        w: w as u32,
        win: win as u32,
        nw: nw as u32,
        c: x.cols as u32,
        x_off: x.off as u32,
        x_stride: x.stride as u32,
        n: 0,
    };
    Ok((params, rows))
}

/// SAM's window_partition: x [H*W, C] (row-major grid) → y [nh*nw*win*win, C] where the grid is zero-padded to
/// multiples of win (nh = ceil(H/win), nw = ceil(W/win)); windows in row-major window order, rows inside a window row-major.
pub fn window_partition(rec: &mut Recorder, x: &Rows, hw: (usize, usize), win: usize, y: &Tensor) -> Result<()> {
    let op = "window_partition";
    let (mut params, _) = plan(op, x, hw, win, y)?;
    params.n = y.len() as u32;
    let key = PipelineKey::new(PARTITION, act_flags(op, y.dtype())?, &[]);
    rec.dispatch(&key, &params, &[x.t, y], grid(params.n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// The inverse, dropping the padding: y [nh*nw*win*win, C] → x [H*W, C].
pub fn window_unpartition(rec: &mut Recorder, y: &Tensor, hw: (usize, usize), win: usize, x: &Rows) -> Result<()> {
    let op = "window_unpartition";
    let (mut params, _) = plan(op, x, hw, win, y)?;
    params.n = u32_of(op, x.rows * x.cols)?;
    let mut flags = act_flags(op, y.dtype())?.to_vec();
    flags.push("UNPART");
    rec.dispatch(&PipelineKey::new(UNPARTITION, &flags, &[]), &params, &[y, x.t], grid(params.n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// CPU twin of `window_partition` on a contiguous [h*w, c]: pads, then lists the windows.
fn partition_ref(x: &[f32], (h, w): (usize, usize), win: usize, c: usize) -> Vec<f64> {
    let (nh, nw) = (h.div_ceil(win), w.div_ceil(win));
    let mut y = Vec::with_capacity(nh * nw * win * win * c);
    for wy in 0..nh {
        for wx in 0..nw {
            for iy in 0..win {
                for ix in 0..win {
                    let (gy, gx) = (wy * win + iy, wx * win + ix);
                    for ch in 0..c {
                        y.push(if gy < h && gx < w { x[(gy * w + gx) * c + ch] as f64 } else { 0.0 });
                    }
                }
            }
        }
    }
    y
}

/// Partition from a column slice, then unpartition into a column slice of another tensor whose
/// other columns must stay as they were: both directions are plain copies, so exact.
async fn check_window(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(43);
    // (H, W, win, C): padded both ways, exact, non-square, a window larger than the grid.
    let cases = [(8, 8, 3, 5), (6, 6, 3, 4), (5, 7, 3, 4), (7, 5, 4, 3), (2, 3, 4, 6), (14, 14, 14, 2)];
    for dt in check::act_dtypes(gpu) {
        for &(h, w, win, c) in &cases {
            let n = h * w;
            let wide = c + 3;
            let src = check::round_to(dt, &rng.normals(n * wide, 1.0));
            let xt = Tensor::from_f32(gpu, &[n, wide], dt, &src)?;
            let x = Rows::cols(&xt, 2, c);
            let rows = h.div_ceil(win) * w.div_ceil(win) * win * win;
            let y = poisoned(gpu, &[rows, c], dt)?;
            let back = Tensor::from_f32(gpu, &[n, wide], dt, &vec![7.0; n * wide])?;
            let mut rec = Recorder::new(gpu);
            window_partition(&mut rec, &x, (h, w), win, &y)?;
            window_unpartition(&mut rec, &y, (h, w), win, &Rows::cols(&back, 1, c))?;
            rec.finish()?.run(gpu).await?;
            let xs: Vec<f32> = (0..n * c).map(|i| src[(i / c) * wide + 2 + i % c]).collect();
            let what = format!("window {dt} {h}x{w} in {win}x{win}, C={c}");
            compare(&format!("{what} partition"), &gpu.read_f32(&y).await?, &partition_ref(&xs, (h, w), win, c), Tol { abs: 0.0, rel: 0.0 })?;
            let want: Vec<f64> = (0..n * wide).map(|i| if (1..=c).contains(&(i % wide)) { xs[(i / wide) * c + i % wide - 1] as f64 } else { 7.0 }).collect();
            compare(&format!("{what} unpartition"), &gpu.read_f32(&back).await?, &want, Tol { abs: 0.0, rel: 0.0 })?;
        }
    }
    // Rows that are not the grid, or a windowed tensor of the wrong size, are errors.
    let x = Tensor::empty(gpu, &[20, 4], DType::F32)?;
    let y = Tensor::empty(gpu, &[36, 4], DType::F32)?;
    let mut rec = Recorder::new(gpu);
    if window_partition(&mut rec, &Rows::all(&x), (4, 4), 3, &y).is_ok() || window_unpartition(&mut rec, &y, (4, 5), 4, &Rows::all(&x)).is_ok() || !rec.is_empty() {
        return Err("window ops accepted mismatched shapes".to_string().into());
    }
    Ok("exact".into())
}

crate::checks!(check_window);
