//! Interpolation: PIL's antialiased bicubic resize of 8-bit RGB images (image preprocessing)
//! and torch's antialiased bilinear resize of float images (the 7B's low-res copy), through the
//! same separable passes. (SAM's 64 -> 96 bilinear resize is sampled inside `ops::im2col`.)
//!
//! `resize_bicubic`: `Image.resize((w, h), Image.BICUBIC)` on an RGB image. The input is the
//! image's bytes (row-major, 3 per pixel) packed little-endian into u32 words (`RgbImage`);
//! the output is f32 planar [3, H, W] values in 0..255, placed anywhere inside a larger
//! [3, H', W'] canvas (for the pad-to-square step). Separable like PIL: an axis whose size
//! changes gets one pass (horizontal first, or vertical first where Pillow 13 does that, see
//! `ResizeOrder`); the first pass of a horizontal-first resize only covers the source rows the
//! second reads. Filter windows and coefficients are computed on the CPU in f64 as PIL does.
//! `ResizeMode::Pil8` reproduces PIL's 8-bit arithmetic exactly (22-bit fixed-point
//! coefficients, each pass rounded and clamped to 0..255; `tests/pil_resize.rs` checks it
//! bit for bit against Pillow); `ResizeMode::Float` keeps f32 throughout.
//!
//! `resize_aa_bilinear`: `F.interpolate(x, size, mode='bilinear', antialias=True,
//! align_corners=False)` on an f32 [C, H, W]: the same passes and coefficient tables as
//! `resize_bicubic` (Float mode) with the triangle filter, whose windows and weights follow
//! the same rule as PIL's.

use super::{shape_err, u32_of, WG};
use crate::check::{compare, poisoned, CheckResult, Rng, Tol};
use crate::error::{Error, Result};
use crate::gpu::{grid, Bind, DType, Gpu, Kernel, PipelineKey, Recorder, Tensor};
use crate::params_struct;

params_struct!(ResizeParams("ResizeParams") {
    out_w: u32, out_h: u32, y0: u32, ksize: u32,
    bounds_off: u32, coef_off: u32, src_row: u32, src_plane: u32,
    dst_off: u32, dst_row: u32, dst_plane: u32, chans: u32,
});

const RESIZE_BINDS: &[Bind] = &[Bind::Uniform, Bind::Read, Bind::Read, Bind::ReadWrite];
const RESIZE: Kernel = Kernel { shader: "interp", entry: "resize_pass", binds: RESIZE_BINDS };

/// Every pipeline this file can ask for (validated by naga in the tests).
pub fn variants() -> Vec<PipelineKey> {
    let mut v = Vec::new();
    for mode in [ResizeMode::Pil8, ResizeMode::Float] {
        for src_u8 in [false, true] {
            for axis_v in [false, true] {
                v.push(PipelineKey::new(RESIZE, &pass_flags(mode, src_u8, axis_v), &[]));
            }
        }
    }
    v
}

/// (C, H, W) of a [C, H, W] or [1, C, H, W] tensor.
fn chw(op: &'static str, t: &Tensor) -> Result<(usize, usize, usize)> {
    match *t.shape() {
        [c, h, w] | [1, c, h, w] if c * h * w > 0 => Ok((c, h, w)),
        ref s => Err(shape_err(op, format!("{s:?} is not a non-empty [C, H, W]"))),
    }
}

/// An 8-bit RGB image on the GPU: `width * height * 3` bytes, row-major, packed little-endian
/// into u32 words (the last word zero-padded).
#[derive(Clone, Debug)]
pub struct RgbImage {
    pub t: Tensor,
    pub width: usize,
    pub height: usize,
}

impl RgbImage {
    /// Uploads `rgb` (`width * height * 3` bytes, as `image::RgbImage::as_raw` gives them).
    pub fn upload(gpu: &Gpu, rgb: &[u8], width: usize, height: usize) -> Result<RgbImage> {
        if width == 0 || height == 0 || rgb.len() != width * height * 3 {
            return Err(shape_err("upload image", format!("{} bytes for a {width}x{height} RGB image", rgb.len())));
        }
        let mut words = vec![0u32; rgb.len().div_ceil(4)];
        for (i, &b) in rgb.iter().enumerate() {
            words[i / 4] |= (b as u32) << (8 * (i % 4));
        }
        Ok(RgbImage { t: Tensor::from_u32(gpu, &[words.len()], &words)?, width, height })
    }
}

/// Arithmetic of `resize_bicubic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    /// PIL's 8-bit path, bit for bit: integer results 0..255 after each pass.
    Pil8,
    /// f32 coefficients and values, no rounding or clamping.
    Float,
}

impl ResizeMode {
    fn flags(self) -> &'static [&'static str] {
        match self {
            ResizeMode::Pil8 => &["PIL8"],
            ResizeMode::Float => &[],
        }
    }
}

/// The separable filter of a resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// PIL's bicubic (a = -0.5), support 2.
    Bicubic,
    /// The triangle (PIL's bilinear, torch's antialiased bilinear), support 1.
    Triangle,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Triangle => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Triangle => (1.0 - x).max(0.0),
        }
    }
}

/// Filter windows for one axis (PIL's `precompute_coeffs`): per output index the first source
/// index and the count, and `ksize` coefficients per output index (normalised to sum 1, zero
/// past the count).
#[derive(Clone, Debug)]
pub struct Coeffs {
    pub ksize: usize,
    pub bounds: Vec<(usize, usize)>,
    pub k: Vec<f64>,
}

/// Windows and coefficients of `filter` for resizing `in_size` samples to `out_size`, in f64 as
/// PIL computes them (when shrinking, the support widens by the shrink factor, which
/// antialiases; torch's antialiased modes use the same rule).
pub fn pil_coeffs(filter: Filter, in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut k = vec![0.0f64; out_size * ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) truncation; both ends are clamped to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let row = &mut k[xx * ksize..xx * ksize + n];
        let mut ww = 0.0;
        // PIL multiplies by the reciprocal (which can differ from dividing in the last bit).
        let ss = 1.0 / filterscale;
        for (x, c) in row.iter_mut().enumerate() {
            *c = filter.weight(((x + xmin) as f64 - center + 0.5) * ss);
            ww += *c;
        }
        if ww != 0.0 {
            row.iter_mut().for_each(|c| *c /= ww);
        }
        bounds.push((xmin, n));
    }
    Coeffs { ksize, bounds, k }
}

impl Coeffs {
    /// Appends bounds and coefficients to `plan` as the shader reads them; returns their offsets.
    fn encode(&self, mode: ResizeMode, plan: &mut Vec<u32>) -> (u32, u32) {
        let b = plan.len() as u32;
        for &(first, n) in &self.bounds {
            plan.push(first as u32);
            plan.push(n as u32);
        }
        let c = plan.len() as u32;
        plan.extend(self.k.iter().map(|&v| match mode {
            // PIL's normalize_coeffs_8bpc: round half away from zero to 22 fractional bits.
            ResizeMode::Pil8 => {
                let s = v * (1u32 << 22) as f64;
                (if v < 0.0 { s - 0.5 } else { s + 0.5 }) as i32 as u32
            }
            ResizeMode::Float => (v as f32).to_bits(),
        }));
        (b, c)
    }
}

/// Which pass runs first when both axes change (the order changes PIL's 8-bit results by a
/// level here and there, since each pass rounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeOrder {
    /// Pillow 13 and later (python-pillow/Pillow#9549): vertical first when the height loses
    /// more than twice as many pixels as the width, horizontal first otherwise.
    Pillow13,
    /// Older Pillow (the releases DeepSeek-VL was built with): always horizontal first.
    HorizontalFirst,
}

impl ResizeOrder {
    /// Whether the vertical pass runs first for this resize.
    pub fn vertical_first(self, (in_w, in_h): (usize, usize), (out_w, out_h): (usize, usize)) -> bool {
        match self {
            ResizeOrder::HorizontalFirst => false,
            ResizeOrder::Pillow13 => {
                let dh = in_h as i64 - out_h as i64;
                dh > 0 && dh > 2 * (in_w as i64 - out_w as i64)
            }
        }
    }
}

/// How `resize_bicubic` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bicubic {
    pub mode: ResizeMode,
    pub order: ResizeOrder,
}

impl Default for Bicubic {
    /// What `Image.resize(size, Image.BICUBIC)` gives with the current Pillow.
    fn default() -> Self {
        Bicubic { mode: ResizeMode::Pil8, order: ResizeOrder::Pillow13 }
    }
}

fn pass_flags(mode: ResizeMode, src_u8: bool, axis_v: bool) -> Vec<&'static str> {
    let mut f = mode.flags().to_vec();
    if src_u8 {
        f.push("SRC_U8");
    }
    if axis_v {
        f.push("AXIS_V");
    }
    f
}

/// A planar f32 image: element (c, y, x) at off + c * plane + y * row + x.
#[derive(Clone, Copy)]
struct Planar {
    off: usize,
    row: usize,
    plane: usize,
}

/// What a resize reads: an image's packed RGB bytes, or a planar f32 [chans, H, W] tensor.
#[derive(Clone, Copy)]
enum Source<'a> {
    Packed(&'a RgbImage),
    Planar { t: &'a Tensor, chans: usize },
}

/// One resize pass: `src` is the packed image (`src_planar` None) or a planar f32 image.
struct Pass<'a> {
    axis_v: bool,
    src: &'a Tensor,
    src_planar: Option<Planar>,
    chans: usize,
    /// (bounds offset, coefficient offset, ksize) in the plan.
    coeffs: (u32, u32, usize),
    out: (usize, usize),
    y0: usize,
    dst: &'a Tensor,
    dst_at: Planar,
}

fn dispatch_pass(rec: &mut Recorder, op: &'static str, mode: ResizeMode, plan: &Tensor, src_w: usize, ps: Pass) -> Result<()> {
    let (out_w, out_h) = ps.out;
    let (src_row, src_plane) = ps.src_planar.map_or((src_w, 0), |p| (p.row, p.plane));
    let params = ResizeParams {
        out_w: out_w as u32,
        out_h: out_h as u32,
        y0: ps.y0 as u32,
        ksize: ps.coeffs.2 as u32,
        bounds_off: ps.coeffs.0,
        coef_off: ps.coeffs.1,
        src_row: src_row as u32,
        src_plane: src_plane as u32,
        dst_off: ps.dst_at.off as u32,
        dst_row: ps.dst_at.row as u32,
        dst_plane: ps.dst_at.plane as u32,
        chans: ps.chans as u32,
    };
    let key = PipelineKey::new(RESIZE, &pass_flags(mode, ps.src_planar.is_none(), ps.axis_v), &[]);
    // One thread per output pixel and group of 3 channels.
    let n = u32_of(op, out_w * out_h * ps.chans.div_ceil(3))?;
    rec.dispatch(&key, &params, &[ps.src, plan, ps.dst], grid(n.div_ceil(WG), rec.gpu.caps.max_workgroups_per_dim))
}

/// A separable resize of `src` (in_w x in_h) to out_w x out_h, written at `dst_at` in `dst`.
struct Resize<'a> {
    op: &'static str,
    src: Source<'a>,
    input: (usize, usize),
    output: (usize, usize),
    filter: Filter,
    mode: ResizeMode,
    order: ResizeOrder,
    dst: &'a Tensor,
    dst_at: Planar,
}

/// Records the passes of `r`: like PIL, an axis whose size does not change is not filtered; an
/// intermediate image holds the first pass's result when both axes change.
fn record_resize(rec: &mut Recorder, r: Resize) -> Result<()> {
    let ((in_w, in_h), (out_w, out_h), mode) = (r.input, r.output, r.mode);
    let (img, src_planar, chans) = match r.src {
        Source::Packed(im) => (&im.t, None, 3),
        Source::Planar { t, chans } => (t, Some(Planar { off: 0, row: in_w, plane: in_w * in_h }), chans),
    };
    let need_v = in_h != out_h;
    // With neither axis changing, one identity x pass copies (its coefficients are exactly 1, 0).
    let need_h = in_w != out_w || !need_v;
    let hc = pil_coeffs(r.filter, in_w, out_w);
    let mut vc = pil_coeffs(r.filter, in_h, out_h);
    let v_first = need_h && need_v && r.order.vertical_first((in_w, in_h), (out_w, out_h));
    // Horizontal first: only the source rows the vertical pass reads get filtered, and the
    // vertical windows are shifted to start at the first of them.
    let (y0, rows) = if need_h && need_v && !v_first {
        let y0 = vc.bounds[0].0;
        let y1 = vc.bounds.iter().map(|&(f, n)| f + n).max().unwrap_or(y0);
        vc.bounds.iter_mut().for_each(|b| b.0 -= y0);
        (y0, y1 - y0)
    } else {
        (0, in_h)
    };
    let mut words = Vec::new();
    let (hb, hk) = hc.encode(mode, &mut words);
    let (vb, vk) = vc.encode(mode, &mut words);
    let plan = Tensor::from_u32(rec.gpu, &[words.len()], &words)?;
    let h_coeffs = (hb, hk, hc.ksize);
    let v_coeffs = (vb, vk, vc.ksize);
    let (dst, final_at, op) = (r.dst, r.dst_at, r.op);
    if !(need_h && need_v) {
        let (axis_v, coeffs) = if need_v { (true, v_coeffs) } else { (false, h_coeffs) };
        let pass = Pass { axis_v, src: img, src_planar, chans, coeffs, out: (out_w, out_h), y0: 0, dst, dst_at: final_at };
        return dispatch_pass(rec, op, mode, &plan, in_w, pass);
    }
    let (first_axis_v, mid_w, mid_h, first_coeffs, second_coeffs) =
        if v_first { (true, in_w, out_h, v_coeffs, h_coeffs) } else { (false, out_w, rows, h_coeffs, v_coeffs) };
    // [chans, mid_h, mid_w]
    let tmp = Tensor::empty(rec.gpu, &[chans, mid_h, mid_w], DType::F32)?;
    let mid = Planar { off: 0, row: mid_w, plane: mid_h * mid_w };
    let first = Pass { axis_v: first_axis_v, src: img, src_planar, chans, coeffs: first_coeffs, out: (mid_w, mid_h), y0, dst: &tmp, dst_at: mid };
    dispatch_pass(rec, op, mode, &plan, in_w, first)?;
    let second = Pass { axis_v: !first_axis_v, src: &tmp, src_planar: Some(mid), chans, coeffs: second_coeffs, out: (out_w, out_h), y0: 0, dst, dst_at: final_at };
    dispatch_pass(rec, op, mode, &plan, in_w, second)
}

/// Resizes `src` to `out_w` x `out_h` with PIL's bicubic filter and writes the f32 planar
/// result into `dst` ([3, H', W'] f32) with its top-left corner at `at` = (x, y). The rest of
/// `dst` is left as it was. Like PIL, an axis whose size does not change is not filtered.
pub fn resize_bicubic(rec: &mut Recorder, src: &RgbImage, (out_w, out_h): (usize, usize), how: Bicubic, dst: &Tensor, at: (usize, usize)) -> Result<()> {
    let op = "resize_bicubic";
    let (in_w, in_h) = (src.width, src.height);
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return Err(shape_err(op, format!("{in_w}x{in_h} -> {out_w}x{out_h}")));
    }
    if src.t.dtype() != DType::U32 || src.t.len() * 4 < in_w * in_h * 3 {
        return Err(shape_err(op, format!("image tensor {:?} {} too small for {in_w}x{in_h} RGB", src.t.shape(), src.t.dtype())));
    }
    if dst.dtype() != DType::F32 {
        return Err(Error::DType { op, dtype: dst.dtype().name().into(), detail: "output is f32".into() });
    }
    let (c, dh, dw) = chw(op, dst)?;
    if c != 3 || at.0 + out_w > dw || at.1 + out_h > dh {
        return Err(shape_err(op, format!("{out_w}x{out_h} RGB at {at:?} does not fit in {:?}", dst.shape())));
    }
    u32_of(op, in_w * in_h * 3)?;
    u32_of(op, dst.len())?;
    u32_of(op, in_w.max(out_w) * in_h.max(out_h) * 3)?;
    let dst_at = Planar { off: at.1 * dw + at.0, row: dw, plane: dh * dw };
    let r = Resize {
        op,
        src: Source::Packed(src),
        input: (in_w, in_h),
        output: (out_w, out_h),
        filter: Filter::Bicubic,
        mode: how.mode,
        order: how.order,
        dst,
        dst_at,
    };
    record_resize(rec, r)
}

/// torch.nn.functional.interpolate(x, size=(oh, ow), mode='bilinear', antialias=True, align_corners=False) on [C, H, W]
/// (= torchvision Resize(size, antialias=True) on a tensor): separable, triangle filter whose support scales with the
/// shrink factor, weights normalised per output pixel — the same window/weight rule as PIL's, computed on the CPU in f64
/// like `pil_coeffs`, in f32 arithmetic on the GPU. x and y f32.
///
/// x and y are [C, H, W] or [1, C, H, W] (the size comes from y). Horizontal pass first, as torch.
pub fn resize_aa_bilinear(rec: &mut Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    let op = "resize_aa_bilinear";
    let (c, ih, iw) = chw(op, x)?;
    let (yc, oh, ow) = chw(op, y)?;
    if yc != c {
        return Err(shape_err(op, format!("input {:?} and output {:?} differ in channels", x.shape(), y.shape())));
    }
    for t in [x, y] {
        if t.dtype() != DType::F32 {
            return Err(Error::DType { op, dtype: t.dtype().name().into(), detail: "input and output are f32".into() });
        }
    }
    if x.same_buffer(y) {
        return Err(shape_err(op, "input and output share a buffer".into()));
    }
    u32_of(op, c * iw.max(ow) * ih.max(oh))?;
    let r = Resize {
        op,
        src: Source::Planar { t: x, chans: c },
        input: (iw, ih),
        output: (ow, oh),
        filter: Filter::Triangle,
        mode: ResizeMode::Float,
        order: ResizeOrder::HorizontalFirst,
        dst: y,
        dst_at: Planar { off: 0, row: ow, plane: oh * ow },
    };
    record_resize(rec, r)
}

// ---- checks ----

/// f64 twin of PIL's bicubic resize, written from the algorithm's description (direct window
/// sums per output sample, no shared tables; both passes always run, an unchanged axis being an
/// identity). With `round`, each pass rounds half up and clamps to 0..255 as PIL's 8-bit path
/// does (PIL's fixed-point coefficients may differ by one level). Input HWC bytes; output
/// planar [3, out_h, out_w].
pub fn resize_bicubic_ref(rgb: &[u8], (w, h): (usize, usize), (out_w, out_h): (usize, usize), round: bool, v_first: bool) -> Vec<f64> {
    // Resamples `n_in` samples read through `get` to `n_out`.
    fn axis(n_in: usize, n_out: usize, get: &dyn Fn(usize) -> f64, round: bool) -> Vec<f64> {
        let scale = n_in as f64 / n_out as f64;
        let fs = if scale > 1.0 { scale } else { 1.0 };
        let support = 2.0 * fs;
        let cubic = |t: f64| {
            let t = t.abs();
            // a = -0.5
            if t < 1.0 {
                1.5 * t * t * t - 2.5 * t * t + 1.0
            } else if t < 2.0 {
                -0.5 * t * t * t + 2.5 * t * t - 4.0 * t + 2.0
            } else {
                0.0
            }
        };
        (0..n_out)
            .map(|i| {
                let center = (i as f64 + 0.5) * scale;
                let lo = (center - support + 0.5).floor().max(0.0) as usize;
                let hi = ((center + support + 0.5).floor() as usize).min(n_in);
                let ws: Vec<f64> = (lo..hi).map(|j| cubic((j as f64 - center + 0.5) / fs)).collect();
                let total: f64 = ws.iter().sum();
                let v: f64 = (lo..hi).zip(&ws).map(|(j, wj)| get(j) * wj).sum::<f64>() / total;
                if round { (v + 0.5).floor().clamp(0.0, 255.0) } else { v }
            })
            .collect()
    }
    // Planar [3, h, w] images as (data, w, h).
    let horizontal = |img: &[f64], iw: usize, ih: usize| -> Vec<f64> {
        let mut out = vec![0.0; 3 * ih * out_w];
        for r in 0..3 * ih {
            let row = axis(iw, out_w, &|x| img[r * iw + x], round);
            out[r * out_w..(r + 1) * out_w].copy_from_slice(&row);
        }
        out
    };
    let vertical = |img: &[f64], iw: usize, ih: usize| -> Vec<f64> {
        let mut out = vec![0.0; 3 * out_h * iw];
        for c in 0..3 {
            for x in 0..iw {
                let col = axis(ih, out_h, &|y| img[(c * ih + y) * iw + x], round);
                for (y, v) in col.into_iter().enumerate() {
                    out[(c * out_h + y) * iw + x] = v;
                }
            }
        }
        out
    };
    let planar: Vec<f64> = (0..3 * h * w).map(|i| rgb[(i % (h * w)) * 3 + i / (h * w)] as f64).collect();
    if v_first {
        horizontal(&vertical(&planar, w, h), w, out_h)
    } else {
        vertical(&horizontal(&planar, w, h), out_w, h)
    }
}

async fn check_resize_bicubic(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(22);
    let mut float_err = 0.0f64;
    let (mut n8, mut exact8, mut max8) = (0usize, 0usize, 0.0f64);
    // (in w, in h, out w, out h): shrink 3.7x, enlarge 2.3x, odd sizes, mixed directions, tall
    // (vertical pass first under Pillow 13's rule), unchanged axes and 1-pixel images.
    let cases = [
        (74, 37, 20, 10),
        (13, 10, 30, 23),
        (97, 61, 26, 17),
        (40, 30, 90, 12),
        (20, 90, 12, 25),
        (20, 30, 20, 11),
        (30, 8, 11, 8),
        (9, 7, 9, 7),
        (1, 1, 5, 3),
        (7, 1, 1, 1),
        (1, 9, 4, 2),
    ];
    for (i, &(w, h, ow, oh)) in cases.iter().enumerate() {
        // Noise (clamps often) or a smooth ramp with noise (typical image content).
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|j| if i % 2 == 0 { rng.below(256) as u8 } else { ((j / 3 % w) * 200 / w + rng.below(40) as usize) as u8 })
            .collect();
        let img = RgbImage::upload(gpu, &rgb, w, h)?;
        // The resized image sits inside a larger canvas at (2, 1); the border must stay untouched.
        let (cw, ch, at) = (ow + 3, oh + 2, (2usize, 1usize));
        let modes = [ResizeMode::Pil8, ResizeMode::Float];
        let orders = [ResizeOrder::Pillow13, ResizeOrder::HorizontalFirst];
        for (mode, order) in modes.into_iter().flat_map(|m| orders.map(|o| (m, o))) {
            let v_first = w != ow && h != oh && order.vertical_first((w, h), (ow, oh));
            let dst = Tensor::from_f32(gpu, &[3, ch, cw], DType::F32, &vec![-7.0; 3 * ch * cw])?;
            let mut rec = Recorder::new(gpu);
            resize_bicubic(&mut rec, &img, (ow, oh), Bicubic { mode, order }, &dst, at)?;
            rec.finish()?.run(gpu).await?;
            let canvas = gpu.read_f32(&dst).await?;
            let mut got = Vec::with_capacity(3 * oh * ow);
            for (j, &v) in canvas.iter().enumerate() {
                let (c, y, x) = (j / (ch * cw), j / cw % ch, j % cw);
                let inside = x >= at.0 && x < at.0 + ow && y >= at.1 && y < at.1 + oh;
                if inside {
                    got.push((c, y - at.1, x - at.0, v));
                } else if v != -7.0 {
                    return Err(format!("resize {w}x{h} -> {ow}x{oh} {mode:?}: canvas border element {j} overwritten with {v}").into());
                }
            }
            let got: Vec<f32> = got.into_iter().map(|(_, _, _, v)| v).collect();
            let what = format!("resize {w}x{h} -> {ow}x{oh} {mode:?} {order:?}");
            match mode {
                ResizeMode::Float => {
                    let want = resize_bicubic_ref(&rgb, (w, h), (ow, oh), false, v_first);
                    // Values up to ~300 in f32 with f32 coefficients.
                    float_err = float_err.max(compare(&what, &got, &want, Tol { abs: 2e-3, rel: 1e-5 })?);
                }
                ResizeMode::Pil8 => {
                    let want = resize_bicubic_ref(&rgb, (w, h), (ow, oh), true, v_first);
                    // Fixed point vs f64 rounding: ties may round differently in either pass;
                    // a one-level change after the first pass moves the second by ~1 level.
                    compare(&what, &got, &want, Tol { abs: 2.0, rel: 0.0 })?;
                    for (&g, &v) in got.iter().zip(&want) {
                        if g.fract() != 0.0 {
                            return Err(format!("{what}: non-integer value {g}").into());
                        }
                        let d = (g as f64 - v).abs();
                        n8 += 1;
                        exact8 += (d == 0.0) as usize;
                        max8 = max8.max(d);
                    }
                }
            }
        }
    }
    // A resized image that does not fit the canvas is an error.
    let img = RgbImage::upload(gpu, &[0u8; 12], 2, 2)?;
    let dst = Tensor::empty(gpu, &[3, 4, 4], DType::F32)?;
    let mut rec = Recorder::new(gpu);
    if resize_bicubic(&mut rec, &img, (3, 3), Bicubic::default(), &dst, (2, 0)).is_ok() || !rec.is_empty() {
        return Err("resize_bicubic wrote outside its canvas".to_string().into());
    }
    let exact = exact8 as f64 / n8 as f64;
    if exact < 0.999 {
        return Err(format!("resize Pil8: only {:.3}% of values equal the rounded f64 twin", 100.0 * exact).into());
    }
    Ok(format!("float max abs err {float_err:.2e}; Pil8 {:.3}% exact, max diff {max8}", 100.0 * exact))
}

/// f64 twin of torch's antialiased bilinear `interpolate` on [C, H, W], written from torch's
/// rule (no shared tables): along each axis, output i has center c = (i + 0.5) * s with
/// s = in / out, support r = max(s, 1), source window [trunc(c - r + 0.5) clamped at 0,
/// trunc(c + r + 0.5) clamped at in), weights max(0, 1 - |j - c + 0.5| / max(s, 1)) divided by
/// their sum. Rows first, then columns.
pub fn resize_aa_bilinear_ref(x: &[f32], c: usize, (ih, iw): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f64> {
    // Resamples a line of n_in samples read through `get` to n_out samples.
    fn line(n_in: usize, n_out: usize, get: &dyn Fn(usize) -> f64) -> Vec<f64> {
        let s = n_in as f64 / n_out as f64;
        let r = s.max(1.0);
        (0..n_out)
            .map(|i| {
                let center = (i as f64 + 0.5) * s;
                let lo = ((center - r + 0.5).trunc() as i64).max(0) as usize;
                let hi = ((center + r + 0.5).trunc() as usize).min(n_in);
                let ws: Vec<f64> = (lo..hi).map(|j| (1.0 - ((j as f64 - center + 0.5) / r).abs()).max(0.0)).collect();
                let total: f64 = ws.iter().sum();
                (lo..hi).zip(&ws).map(|(j, w)| get(j) * w).sum::<f64>() / total
            })
            .collect()
    }
    let mut rows = vec![0.0; c * ih * ow];
    for r in 0..c * ih {
        rows[r * ow..(r + 1) * ow].copy_from_slice(&line(iw, ow, &|j| x[r * iw + j] as f64));
    }
    let mut out = vec![0.0; c * oh * ow];
    for ch in 0..c {
        for xx in 0..ow {
            for (yy, v) in line(ih, oh, &|j| rows[(ch * ih + j) * ow + xx]).into_iter().enumerate() {
                out[(ch * oh + yy) * ow + xx] = v;
            }
        }
    }
    out
}

async fn check_resize_aa_bilinear(gpu: &Gpu) -> CheckResult {
    let mut rng = Rng::new(23);
    let mut worst = 0.0f64;
    // (C, in h, in w, out h, out w): shrink 2.67x, enlarge 2.4x, mixed directions, one axis
    // unchanged, an identity, 4 and 5 channels (a partial group of 3), a 1-pixel-high input.
    let cases = [(3, 40, 40, 15, 15), (3, 5, 5, 12, 12), (2, 9, 30, 13, 7), (1, 6, 10, 6, 4), (4, 7, 7, 7, 7), (5, 33, 17, 8, 17), (1, 1, 9, 4, 3)];
    for (c, ih, iw, oh, ow) in cases {
        let x = rng.vec(c * ih * iw, -1.0, 1.0);
        let xt = Tensor::from_f32(gpu, &[c, ih, iw], DType::F32, &x)?;
        let y = poisoned(gpu, &[c, oh, ow], DType::F32)?;
        let mut rec = Recorder::new(gpu);
        resize_aa_bilinear(&mut rec, &xt, &y)?;
        rec.finish()?.run(gpu).await?;
        let got = gpu.read_f32(&y).await?;
        let want = resize_aa_bilinear_ref(&x, c, (ih, iw), (oh, ow));
        // |values| <= 1: f32 coefficients and two passes of f32 sums.
        worst = worst.max(compare(&format!("resize_aa_bilinear {c}x{ih}x{iw} -> {oh}x{ow}"), &got, &want, Tol { abs: 2e-6, rel: 0.0 })?);
    }
    let (x, y) = (Tensor::empty(gpu, &[3, 4, 4], DType::F32)?, Tensor::empty(gpu, &[2, 4, 4], DType::F32)?);
    let mut rec = Recorder::new(gpu);
    if resize_aa_bilinear(&mut rec, &x, &y).is_ok() || !rec.is_empty() {
        return Err("resize_aa_bilinear accepted a change of channel count".to_string().into());
    }
    Ok(format!("max abs err {worst:.2e} (f32 only)"))
}

crate::checks!(check_resize_bicubic, check_resize_aa_bilinear);
