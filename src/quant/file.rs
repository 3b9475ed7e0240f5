//! Quantised checkpoints: a weight `NAME` quantised ahead of time is stored as `NAME.qcodes`
//! (U32 [rows, row_words]) and `NAME.qscales` (F16 [rows, row_scales]) in a safetensors file
//! whose `__metadata__` names its format under `dsvl_quant:NAME`. Everything else keeps the
//! checkpoint's own tensors and dtypes, so the folder loads like any checkpoint.

use std::borrow::Cow;

use half::{bf16, f16};

use super::load::Quantiser;
use super::{Format, Packed, QFormat, Recipe};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::config::ModelConfig;
use crate::model::safetensors::{serialize, TensorSource};
use crate::ops::convert::Source;

pub const CODES: &str = ".qcodes";
pub const SCALES: &str = ".qscales";
/// `__metadata__` key holding the recipe a file was written with.
pub const RECIPE_KEY: &str = "dsvl_quant_recipe";

/// The `__metadata__` key naming the format of quantised weight `name`.
pub fn format_key(name: &str) -> String {
    format!("dsvl_quant:{name}")
}

fn werr(file: &str, tensor: &str, message: impl Into<String>) -> Error {
    Error::Weight { file: file.to_string(), tensor: tensor.to_string(), message: message.into() }
}

/// Whether `src` holds weight `name` quantised.
pub fn is_quantised(src: &TensorSource, name: &str) -> bool {
    src.contains(&format!("{name}{CODES}"))
}

/// Whether `src` holds weight `name`, dense or quantised.
pub fn has(src: &TensorSource, name: &str) -> bool {
    src.contains(name) || is_quantised(src, name)
}

/// Validates a quantised [rows, cols] weight: its format from the metadata, both tensors'
/// dtypes and shapes. Returns the format and the bytes it occupies in the file.
pub fn check_quantised(src: &TensorSource, name: &str, rows: usize, cols: usize) -> Result<(QFormat, u64)> {
    let (cn, sn) = (format!("{name}{CODES}"), format!("{name}{SCALES}"));
    let (ci, file) = src.need_info(&cn)?;
    let (si, _) = src.need_info(&sn)?;
    let fmt_name = src.metadata_of(&cn).and_then(|m| m.get(&format_key(name))).ok_or_else(|| werr(file, &cn, format!("no `{}` in __metadata__ naming its format", format_key(name))))?;
    let fmt = QFormat::parse(fmt_name).map_err(|e| werr(file, &cn, e.to_string()))?;
    let l = fmt.layout(cols);
    if ci.dtype != Source::U32 || ci.shape != [rows, l.row_words] {
        return Err(werr(file, &cn, format!("{:?} {:?}, expected U32 [{rows}, {}] for {fmt} of [{rows}, {cols}]", ci.dtype, ci.shape, l.row_words)));
    }
    if si.dtype != Source::F16 || si.shape != [rows, l.row_scales] {
        return Err(werr(file, &sn, format!("{:?} {:?}, expected F16 [{rows}, {}] for {fmt} of [{rows}, {cols}]", si.dtype, si.shape, l.row_scales)));
    }
    Ok((fmt, (ci.range.len() + si.range.len()) as u64))
}

/// Reads a quantised [rows, cols] weight: from memory, or fetched (the browser's Range reads).
pub async fn read_quantised(src: &TensorSource, name: &str, rows: usize, cols: usize) -> Result<Packed> {
    let (fmt, _) = check_quantised(src, name, rows, cols)?;
    let (cn, sn) = (format!("{name}{CODES}"), format!("{name}{SCALES}"));
    let (ci, _) = src.need_info(&cn)?;
    let (si, file) = src.need_info(&sn)?;
    let cb = src.read(&cn, 0..ci.range.len()).await?;
    let sb = src.read(&sn, 0..si.range.len()).await?;
    let p = Packed { fmt, rows, cols, codes: bytemuck::pod_collect_to_vec(&cb), scales: bytemuck::pod_collect_to_vec(&sb) };
    p.check().map_err(|e| werr(file, name, e.to_string()))?;
    Ok(p)
}

/// Decodes checkpoint values (f32, f16 or bf16 bytes) into `out`.
pub fn decode_into(from: Source, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let n = out.len();
    if bytes.len() != n * from.size() {
        return Err(Error::Invalid(format!("{} bytes for {n} {from:?} values", bytes.len())));
    }
    match from {
        Source::F32 => out.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        Source::F16 => out.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(o, c)| *o = f16::from_le_bytes([c[0], c[1]]).to_f32()),
        Source::BF16 => out.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(o, c)| *o = bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        Source::U32 => return Err(Error::Invalid("packed codes are not weight values".into())),
    }
    Ok(())
}

/// Quantises a [rows, cols] matrix from a checkpoint's bytes, decoding one row at a time.
pub fn quantize_bytes(fmt: QFormat, from: Source, bytes: &[u8], rows: usize, cols: usize) -> Result<Packed> {
    let row_bytes = cols * from.size();
    if from == Source::U32 || bytes.len() != rows * row_bytes {
        return Err(Error::Invalid(format!("quantize: {} bytes of {from:?} for [{rows}, {cols}]", bytes.len())));
    }
    let fill = |r: usize, out: &mut [f32]| {
        // Lengths were checked above; a failure here cannot happen.
        let _ = decode_into(from, &bytes[r * row_bytes..(r + 1) * row_bytes], out);
    };
    Packed::quantize_rows(fmt, rows, cols, &fill)
}

/// A tensor to write: name, dtype, shape, bytes.
type Entry<'a> = (String, Source, Vec<usize>, Cow<'a, [u8]>);

/// A quantised checkpoint of every tensor the model uses: matrices in `recipe`'s quantised
/// formats become codes and scales; the rest (and matrices with a dense format) keep the
/// checkpoint's bytes. Weights already quantised are copied as they are. `progress` receives
/// (tensors done, tensors total). With `gpu`, matrices are quantised there (bit-identical to
/// the CPU twins; the `Quantiser` moves to the CPU if a probe says otherwise) and read back.
pub async fn quantize_checkpoint(
    cfg: &ModelConfig,
    src: &TensorSource,
    recipe: &Recipe,
    mut gpu: Option<(&Gpu, &mut Quantiser)>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<u8>> {
    let plan = crate::model::weights::plan(cfg, src);
    // Tensors kept as they are borrow the checkpoint's bytes; only codes and scales are new.
    let mut owned: Vec<Entry> = Vec::new();
    let mut meta = vec![(RECIPE_KEY.to_string(), recipe.name())];
    let copy = |name: &str, owned: &mut Vec<_>| -> Result<()> {
        let (t, b, _) = src.need(name)?;
        owned.push((name.to_string(), t.dtype, t.shape.clone(), Cow::Borrowed(b)));
        Ok(())
    };
    for (i, item) in plan.iter().enumerate() {
        let name = item.name.as_str();
        match item.matrix {
            Some((_, rows, cols)) if is_quantised(src, name) => {
                let (fmt, _) = check_quantised(src, name, rows, cols)?;
                copy(&format!("{name}{CODES}"), &mut owned)?;
                copy(&format!("{name}{SCALES}"), &mut owned)?;
                meta.push((format_key(name), fmt.name()));
            }
            Some((part, rows, cols)) => match recipe.get(part) {
                Format::Q(fmt) => {
                    let p = match gpu.as_mut() {
                        Some((g, q)) => {
                            let m = q.quantise(g, src, &[(name, rows)], cols, fmt, &mut |_, _| {}).await?;
                            crate::ops::quantise::read_back(g, &m).await?
                        }
                        None => {
                            let (t, b, file) = src.need(name)?;
                            quantize_bytes(fmt, t.dtype, b, rows, cols).map_err(|e| werr(file, name, e.to_string()))?
                        }
                    };
                    let l = p.layout();
                    owned.push((format!("{name}{CODES}"), Source::U32, vec![rows, l.row_words], Cow::Owned(bytemuck::cast_slice(&p.codes).to_vec())));
                    owned.push((format!("{name}{SCALES}"), Source::F16, vec![rows, l.row_scales], Cow::Owned(bytemuck::cast_slice(&p.scales).to_vec())));
                    meta.push((format_key(name), fmt.name()));
                }
                Format::F32 | Format::F16 => copy(name, &mut owned)?,
            },
            None => copy(name, &mut owned)?,
        }
        progress(i + 1, plan.len());
    }
    let tensors: Vec<(&str, Source, &[usize], &[u8])> = owned.iter().map(|(n, d, s, b)| (n.as_str(), *d, &s[..], &b[..])).collect();
    let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Ok(serialize(&tensors, &meta))
}
