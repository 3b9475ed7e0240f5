//! Image preprocessing exactly as the original DeepSeek-VL `VLMImageProcessor`
//! (`deepseek_vl/models/image_processing_vlm.py`), which works on PIL images:
//!
//! 1. decode (PNG, JPEG, WebP, GIF's first frame, BMP) and `convert('RGB')`: alpha dropped, not
//!    composited; grey replicated; palettes expanded; CMYK JPEGs converted as Pillow does;
//!    animated GIF/WebP give their first frame; 16-bit samples as Pillow opens them
//!    (RGB, RGBA, grey+alpha: the high byte; grey, which Pillow opens as `I;16`: clipped at 255).
//!    EXIF orientation is ignored on purpose: the original calls `Image.open(..).convert('RGB')`
//!    and never `ImageOps.exif_transpose`, so the model saw stored pixels (tests/preprocess.rs);
//! 2. `m = max(w, h)`, size `(max(int(h / m * S), 14), max(int(w / m * S), 14))` (height, width);
//! 3. `Image.resize(..., BICUBIC)` (antialiased) on the GPU, bit for bit with Pillow
//!    (`ops::interp::resize_bicubic`, `ResizeMode::Pil8`), written straight into the padded
//!    canvas;
//! 4. `expand2square`: the image centred (offset `(side - short) // 2`) on a background of
//!    `int(mean * 255)` per channel;
//! 5. `x / 255`, then `(x - mean) / std`, planar [3, S, S] f32 (`ops::normalise`).
//!
//! Decoding works on byte slices so the browser can use it too. `decode_rgb` checks the
//! dimensions against `DecodeLimits` before decoding anything (decompression bombs).

use std::io::Cursor;

use crate::error::{Error, Result};
use crate::gpu::{DType, Gpu, Recorder, Tensor};
use crate::ops::normalise::{channel_affine, from_mean_std};
use crate::ops::interp::{resize_bicubic, Bicubic, ResizeMode, ResizeOrder, RgbImage};

/// `min_size` of the original processor: neither side of the resized image is smaller.
pub const MIN_SIZE: usize = 14;

/// What the processor does; `ImageConfig::deepseek_vl(384)` is the 1.3B model's.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageConfig {
    /// Side of the square output (`image_size`).
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Padding colour; `background_of(mean)` as the original.
    pub background: [u8; 3],
    /// Pass order of the bicubic resize: `ResizeOrder::Pillow13` reproduces Pillow >= 13 (which
    /// the committed reference was made with), `HorizontalFirst` older Pillow (what DeepSeek-VL
    /// was trained with); they differ by a level here and there.
    pub order: ResizeOrder,
}

impl ImageConfig {
    /// mean = std = 0.5 (the SigLIP processors of DeepSeek-VL 1.3B), background (127, 127, 127).
    pub fn deepseek_vl(size: usize) -> ImageConfig {
        let mean = [0.5; 3];
        ImageConfig { size, mean, std: [0.5; 3], background: background_of(mean), order: ResizeOrder::Pillow13 }
    }

    /// The processor of `cfg`'s checkpoint. Without `do_normalize` (the hybrid towers normalise
    /// their own inputs) the values are x / 255, on the background of the configured mean.
    pub fn for_model(cfg: &crate::model::config::ModelConfig) -> ImageConfig {
        let v = &cfg.vision;
        let (mean, std) = if cfg.do_normalize { (v.image_mean, v.image_std) } else { ([0.0; 3], [1.0; 3]) };
        ImageConfig { size: cfg.image_size(), mean, std, background: background_of(v.image_mean), order: ResizeOrder::Pillow13 }
    }

    fn validate(&self) -> Result<()> {
        if self.size < MIN_SIZE || self.size > 8192 {
            return Err(Error::Invalid(format!("image size {} is outside {MIN_SIZE}..=8192", self.size)));
        }
        if self.std.iter().any(|&s| !s.is_finite() || s == 0.0) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::Invalid(format!("image mean {:?} / std {:?} must be finite, std non-zero", self.mean, self.std)));
        }
        Ok(())
    }
}

/// `tuple(int(x * 255) for x in image_mean)`, as Python computes it (in f64, truncated).
pub fn background_of(mean: [f32; 3]) -> [u8; 3] {
    mean.map(|m| (m as f64 * 255.0).clamp(0.0, 255.0) as u8)
}

/// The resized (height, width) of a `width` x `height` image for output side `size`:
/// `max(int(h / m * size), 14)` with `m = max(w, h)`, in f64 as Python does it.
pub fn resized_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let m = width.max(height).max(1) as f64;
    let f = |v: usize| (((v as f64 / m) * size as f64) as usize).max(MIN_SIZE);
    (f(height), f(width))
}

/// Where the resized image lands in the square canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Resized width and height.
    pub width: usize,
    pub height: usize,
    /// Top-left corner in the canvas.
    pub x: usize,
    pub y: usize,
    /// Side of the canvas (`max(width, height)`, which is the configured size).
    pub side: usize,
}

/// Resize and padding geometry of `expand2square(resize(img))` for a `width` x `height` image.
pub fn placement(width: usize, height: usize, size: usize) -> Result<Placement> {
    if width == 0 || height == 0 {
        return Err(Error::Image { what: "empty", detail: format!("{width}x{height} image") });
    }
    let (h, w) = resized_size(width, height, size);
    let side = w.max(h);
    Ok(Placement { width: w, height: h, x: (side - w) / 2, y: (side - h) / 2, side })
}

/// An 8-bit RGB image on the CPU: `width * height * 3` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Bounds checked before an image is decoded.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest `width * height` accepted.
    pub max_pixels: u64,
    /// Largest single allocation the decoder may make, in bytes.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// Pillow's `MAX_IMAGE_PIXELS` (89,478,485; Pillow warns there and refuses twice that) and 1 GiB.
    fn default() -> Self {
        DecodeLimits { max_pixels: 89_478_485, max_alloc: 1 << 30 }
    }
}

fn image_err(e: ::image::ImageError) -> Error {
    use ::image::ImageError as E;
    let what = match &e {
        E::Limits(_) => "over the decoding limits",
        E::Unsupported(_) => "unsupported",
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => "truncated",
        E::IoError(_) | E::Decoding(_) => "truncated or corrupt",
        E::Parameter(_) | E::Encoding(_) => "invalid",
    };
    Error::Image { what, detail: crate::error::one_line(&e.to_string()) }
}

/// Decodes a PNG, JPEG, WebP, GIF (first frame) or BMP file and converts it to 8-bit RGB as
/// Pillow's `Image.open(f).convert('RGB')` does. Fails with `Error::ImageTooLarge` before
/// decoding when the header declares more than `limits.max_pixels`.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage8> {
    use ::image::{ImageFormat, ImageReader};
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>> {
        let r = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::Image { what: "unreadable", detail: e.to_string() })?;
        match r.format() {
            Some(ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP | ImageFormat::Gif | ImageFormat::Bmp) => Ok(r),
            Some(f) => Err(Error::Image { what: "unsupported", detail: format!("format {f:?} (PNG, JPEG, WebP, GIF and BMP are)") }),
            None => Err(Error::Image {
                what: "unrecognised format",
                detail: format!("{} bytes starting {:02x?}", bytes.len(), &bytes[..bytes.len().min(8)]),
            }),
        }
    };
    let (w, h) = reader()?.into_dimensions().map_err(image_err)?;
    if w == 0 || h == 0 {
        return Err(Error::Image { what: "empty", detail: format!("{w}x{h} image") });
    }
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(Error::ImageTooLarge { width: w as u64, height: h as u64, limit: limits.max_pixels });
    }
    let mut r = reader()?;
    let mut l = ::image::Limits::default();
    l.max_image_width = Some(w);
    l.max_image_height = Some(h);
    l.max_alloc = Some(limits.max_alloc);
    r.limits(l);
    let img = r.decode().map_err(image_err)?;
    to_rgb8_like_pil(img)
}

/// Reads an image file for [`decode_rgb`]: only a regular file of at most `limits.max_alloc`
/// bytes, so a FIFO, `/dev/zero` or a runaway file cannot exhaust memory before decoding.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_image_file(path: &std::path::Path, limits: &DecodeLimits) -> Result<Vec<u8>> {
    use std::io::Read;
    let io = |message: String| Error::Io { path: path.display().to_string(), message };
    // Checked before opening too: opening a FIFO blocks until someone writes to it.
    let regular = |m: std::io::Result<std::fs::Metadata>| m.map(|m| m.is_file()).map_err(|e| io(e.to_string()));
    if !regular(std::fs::metadata(path))? {
        return Err(io("not a regular file".into()));
    }
    let f = std::fs::File::open(path).map_err(|e| io(e.to_string()))?;
    let meta = f.metadata().map_err(|e| io(e.to_string()))?;
    if !meta.is_file() {
        return Err(io("not a regular file".into()));
    }
    if meta.len() > limits.max_alloc {
        return Err(io(format!("{} bytes exceeds the {}-byte limit for an image file", meta.len(), limits.max_alloc)));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The length is re-bounded while reading, in case the file grows meanwhile.
    f.take(limits.max_alloc + 1).read_to_end(&mut bytes).map_err(|e| io(e.to_string()))?;
    if bytes.len() as u64 > limits.max_alloc {
        return Err(io(format!("grew past the {}-byte limit while being read", limits.max_alloc)));
    }
    Ok(bytes)
}

/// `convert('RGB')` of what Pillow would have opened.
fn to_rgb8_like_pil(img: ::image::DynamicImage) -> Result<RgbImage8> {
    use ::image::DynamicImage as D;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(Error::Image { what: "empty", detail: format!("{width}x{height} image") });
    }
    let data = match img {
        // Alpha dropped, grey replicated: the `image` crate's conversion does exactly that.
        D::ImageLuma8(_) | D::ImageLumaA8(_) | D::ImageRgb8(_) | D::ImageRgba8(_) => img.to_rgb8().into_raw(),
        // Pillow opens 16-bit grey as I;16; I;16 -> RGB clips at 255 (no scaling).
        D::ImageLuma16(b) => b.into_raw().iter().flat_map(|&v| [v.min(255) as u8; 3]).collect(),
        // 16-bit grey+alpha/RGB/RGBA: Pillow keeps the high byte of each sample (";16B" raw modes).
        D::ImageLumaA16(b) => b.into_raw().chunks_exact(2).flat_map(|p| [(p[0] >> 8) as u8; 3]).collect(),
        D::ImageRgb16(b) => b.into_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        D::ImageRgba16(b) => b.into_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8)).collect(),
        other => return Err(Error::Image { what: "unsupported", detail: format!("pixel type {:?}", other.color()) }),
    };
    Ok(RgbImage8 { width, height, data })
}

/// Records the resize and padding: returns the [3, S, S] f32 canvas holding values 0..255 as
/// Pillow's padded 8-bit RGB image (the background is written at once, the resize is recorded).
pub fn record_canvas(rec: &mut Recorder, cfg: &ImageConfig, img: &RgbImage8) -> Result<Tensor> {
    cfg.validate()?;
    let p = placement(img.width, img.height, cfg.size)?;
    let s = p.side;
    let gpu = rec.gpu;
    let src = RgbImage::upload(gpu, &img.data, img.width, img.height)?;
    let mut bg = Vec::with_capacity(3 * s * s);
    for c in 0..3 {
        bg.extend(std::iter::repeat_n(cfg.background[c] as f32, s * s));
    }
    let canvas = Tensor::from_f32(gpu, &[3, s, s], DType::F32, &bg)?;
    resize_bicubic(rec, &src, (p.width, p.height), Bicubic { mode: ResizeMode::Pil8, order: cfg.order }, &canvas, (p.x, p.y))?;
    Ok(canvas)
}

/// Records `(x / 255 - mean) / std` of a [3, S, S] canvas into a new [3, S, S] f32 tensor
/// (`ops::normalise::channel_affine`: one multiply-add per value).
pub fn record_normalise(rec: &mut Recorder, cfg: &ImageConfig, canvas: &Tensor) -> Result<Tensor> {
    cfg.validate()?;
    let (scale, shift) = from_mean_std(&cfg.mean, &cfg.std);
    let out = Tensor::empty(rec.gpu, canvas.shape(), DType::F32)?;
    channel_affine(rec, canvas, &scale, &shift, &out)?;
    Ok(out)
}

/// The whole processor on the GPU: the model's pixel values, [3, S, S] f32.
pub async fn preprocess(gpu: &Gpu, cfg: &ImageConfig, img: &RgbImage8) -> Result<Tensor> {
    let mut rec = Recorder::new(gpu);
    let canvas = record_canvas(&mut rec, cfg, img)?;
    let out = record_normalise(&mut rec, cfg, &canvas)?;
    rec.finish()?.run(gpu).await?;
    Ok(out)
}

/// `(x / 255 - mean) / std` of one 8-bit value, as the original computes it in f32 (numpy).
pub fn normalise_ref(x: u8, mean: f32, std: f32) -> f32 {
    (x as f32 / 255.0 - mean) / std
}
