//! Images from JS: encoded files (decoded here exactly as the CLI does, for parity with Pillow)
//! or raw RGBA pixels (from an `ImageBitmap`), each with a content hash so a chat keeps the
//! preprocessed pixels of images it has already seen.

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Tensor};
use crate::image::{decode_rgb, preprocess, DecodeLimits, ImageConfig, RgbImage8};

/// One image as JS sent it.
pub enum RawImage {
    /// A PNG, JPEG, WebP, GIF or BMP file.
    Encoded(Vec<u8>),
    /// Straight (not premultiplied) RGBA, row-major.
    Rgba { width: usize, height: usize, data: Vec<u8> },
}

/// FNV-1a over the bytes (and dimensions): cheap, and collisions only cost a wrong cache hit
/// between two images of one conversation, which 64 bits make negligible.
fn hash(bytes: &[u8], salt: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ salt;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl RawImage {
    pub fn hash(&self) -> u64 {
        match self {
            RawImage::Encoded(b) => hash(b, 0),
            RawImage::Rgba { width, height, data } => hash(data, ((*width as u64) << 32) ^ *height as u64 ^ 1),
        }
    }

    fn rgb(&self) -> Result<RgbImage8> {
        match self {
            RawImage::Encoded(b) => decode_rgb(b, &DecodeLimits::default()),
            RawImage::Rgba { width, height, data } => {
                let (w, h) = (*width, *height);
                let limits = DecodeLimits::default();
                if w == 0 || h == 0 {
                    return Err(Error::Image { what: "empty", detail: format!("{w}x{h} image") });
                }
                if w as u64 * h as u64 > limits.max_pixels {
                    return Err(Error::ImageTooLarge { width: w as u64, height: h as u64, limit: limits.max_pixels });
                }
                if data.len() != w * h * 4 {
                    return Err(Error::Image { what: "invalid", detail: format!("{} RGBA bytes for {w}x{h}", data.len()) });
                }
                // Alpha dropped, not composited: as Pillow's convert('RGB').
                let rgb = data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
                Ok(RgbImage8 { width: w, height: h, data: rgb })
            }
        }
    }

    /// The model's pixel values, [3, S, S] f32.
    pub async fn pixels(&self, gpu: &Gpu, cfg: &ImageConfig) -> Result<Tensor> {
        preprocess(gpu, cfg, &self.rgb()?).await
    }
}

fn field(v: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(v, &JsValue::from_str(key)).ok().filter(|x| !x.is_undefined() && !x.is_null())
}

/// Reads `[Uint8Array | {width, height, rgba: Uint8Array}]`.
pub fn read_images(arr: &Array) -> Result<Vec<RawImage>> {
    let mut out = Vec::with_capacity(arr.length() as usize);
    for (i, v) in arr.iter().enumerate() {
        if let Some(a) = v.dyn_ref::<Uint8Array>() {
            out.push(RawImage::Encoded(a.to_vec()));
            continue;
        }
        let bad = || Error::Invalid(format!("image {i}: expected file bytes (Uint8Array) or {{width, height, rgba}}"));
        let dim = |k: &str| field(&v, k).and_then(|x| x.as_f64()).filter(|d| d.fract() == 0.0 && *d >= 0.0 && *d < 1e9).map(|d| d as usize);
        let (Some(width), Some(height)) = (dim("width"), dim("height")) else { return Err(bad()) };
        let data = field(&v, "rgba").and_then(|x| x.dyn_into::<Uint8Array>().ok()).ok_or_else(bad)?;
        out.push(RawImage::Rgba { width, height, data: data.to_vec() });
    }
    Ok(out)
}
