//! `dsvl-gpu selftest`: every kernel check, then a small DeepSeek-VL model built into the binary
//! (tests/fixtures/dsvl/selftest, random weights) run on this GPU and compared with the logits
//! HF transformers computed for it. Tells a user whether their GPU and driver compute correctly.

use anyhow::{anyhow, bail, Context, Result};
use dsvl_gpu::gpu::DType;
use dsvl_gpu::model::llama::LogitRows;
use dsvl_gpu::model::{load_weights, ModelConfig, TensorSource};
use dsvl_gpu::model::vlm::Model;
use dsvl_gpu::{Gpu, Tensor};

macro_rules! fixture {
    ($f:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dsvl/selftest/", $f)) as &[u8]
    };
}

const CONFIG: &[u8] = fixture!("config.json");
const PREPROCESSOR: &[u8] = fixture!("preprocessor_config.json");
const PROCESSOR: &[u8] = fixture!("processor_config.json");
const WEIGHTS: &[u8] = fixture!("model.safetensors");
const CASES: &[u8] = fixture!("cases.json");
/// A case: its name, pixel values if it has images, reference next-token logits.
type CaseArrays = (&'static str, Option<&'static [u8]>, &'static [u8]);
const ARRAYS: &[CaseArrays] = &[
    ("one_image", Some(fixture!("one_image.pixel_values.npy")), fixture!("one_image.logits_last.npy")),
    ("two_images", Some(fixture!("two_images.pixel_values.npy")), fixture!("two_images.logits_last.npy")),
    ("text_only", None, fixture!("text_only.logits_last.npy")),
    ("multi_turn", Some(fixture!("multi_turn.pixel_values.npy")), fixture!("multi_turn.logits_last.npy")),
];

/// A little-endian f32, C-order .npy: (shape, values).
pub fn npy_f32(bytes: &[u8]) -> Result<(Vec<usize>, Vec<f32>)> {
    let bad = || anyhow!("built-in reference array is malformed");
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad());
    }
    let (hlen, start) = if bytes[6] == 1 { (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10) } else { (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12) };
    let header = std::str::from_utf8(bytes.get(start..start + hlen).ok_or_else(bad)?)?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad());
    }
    let dims = header.split("'shape': (").nth(1).and_then(|r| r.split(')').next()).ok_or_else(bad)?;
    let shape: Vec<usize> = dims.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse().map_err(|_| bad())).collect::<Result<_>>()?;
    let data = &bytes[start + hlen..];
    if data.len() != shape.iter().product::<usize>() * 4 {
        return Err(bad());
    }
    Ok((shape, data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Runs the built-in model with `wdtype` weights and `act` activations; returns failures.
fn model_check(gpu: &Gpu, wdtype: DType, act: DType, tol: f64) -> Result<usize> {
    let cfg = ModelConfig::from_dir_files(CONFIG, Some(PREPROCESSOR), Some(PROCESSOR))?;
    let src = TensorSource::from_bytes(vec![("model.safetensors".into(), WEIGHTS.to_vec())])?;
    let weights = pollster::block_on(load_weights(gpu, &cfg, &src, wdtype, act, &mut |_, _| {}))?;
    let s = cfg.image_size();
    let model = Model::new(gpu, cfg, weights, act)?;
    let meta: serde_json::Value = serde_json::from_slice(CASES)?;
    let image_token = meta["image_token_id"].as_u64().context("cases.json: image_token_id")? as u32;
    let mut failed = 0;
    for (name, pixels, logits) in ARRAYS {
        let case = meta["cases"].as_array().and_then(|c| c.iter().find(|c| c["name"] == *name)).with_context(|| format!("case {name}"))?;
        let ids: Vec<u32> = case["input_ids"].as_array().context("input_ids")?.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect();
        let mut images = Vec::new();
        if let Some(px) = pixels {
            let (shape, data) = npy_f32(px)?;
            let per = 3 * s * s;
            for i in 0..shape[0] {
                images.push(Tensor::from_f32(gpu, &[3, s, s], DType::F32, &data[i * per..(i + 1) * per])?);
            }
        }
        let got = pollster::block_on(model.prefill_logits(gpu, &ids, image_token, &images, LogitRows::Last))?;
        let (_, want) = npy_f32(logits)?;
        let err = rel_l2(&got, &want);
        let ok = err <= tol && got.iter().all(|v| v.is_finite());
        failed += !ok as usize;
        println!("{} model {name} (weights {wdtype}, activations {act}): logits rel L2 {err:.2e} (limit {tol:.0e})", if ok { "ok  " } else { "FAIL" });
    }
    Ok(failed)
}

pub fn selftest(gpu: &Gpu) -> Result<()> {
    println!("adapter: {}", gpu.adapter);
    let (mut ran, mut failed) = (0, 0);
    for (name, f) in dsvl_gpu::check::all() {
        ran += 1;
        match pollster::block_on(f(gpu)) {
            Ok(_) => println!("ok   kernel {name}"),
            Err(e) => {
                failed += 1;
                println!("FAIL kernel {name}: {e}");
            }
        }
    }
    let f16_act = if gpu.caps.f16 { DType::F16 } else { DType::F32 };
    for (w, a, tol) in [(DType::F32, DType::F32, 1e-3), (DType::F16, f16_act, 2e-2)] {
        ran += ARRAYS.len();
        failed += model_check(gpu, w, a, tol)?;
    }
    if failed > 0 {
        bail!("{failed} of {ran} checks failed on {}: this GPU or driver computes something wrong", gpu.adapter.name);
    }
    println!("all {ran} checks passed on {}", gpu.adapter.name);
    Ok(())
}
