//! `dsvl-gpu bench`: load time, vision, prefill, time to first token, decode tokens/s and GPU
//! memory of a model folder (see `dsvl_gpu::bench_model` for the prompt and the method).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use dsvl_gpu::bench_model::{bench_model, profile_model, BenchOptions};
use dsvl_gpu::gpu::Gpu;
use dsvl_gpu::image::{decode_rgb, preprocess, DecodeLimits, ImageConfig, RgbImage8};

use crate::run::load_model;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A model folder or hub id (as `run`).
    #[arg(long, default_value = dsvl_gpu::hub::DEFAULT_MODEL)]
    pub model: String,
    /// Weights and activations (as `run`).
    #[arg(long, default_value = "f16")]
    pub quant: String,
    /// An image to use; default: a synthetic gradient at the model's image size.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Timed runs after one warm-up (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Text tokens in the prompt (BOS included), after the image's tokens.
    #[arg(long, default_value_t = 40)]
    pub text_tokens: usize,
    /// Tokens generated per run, with sampling on.
    #[arg(long, default_value_t = 256)]
    pub decode_tokens: usize,
    /// GPU time of every kernel of the vision, prefill and decode lists (timestamp queries).
    #[arg(long)]
    pub profile: bool,
    /// One JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A smooth colour gradient with some texture: deterministic and free of any file.
fn synthetic_image(size: usize) -> RgbImage8 {
    let mut data = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        for x in 0..size {
            data.push((x * 255 / size.max(1)) as u8);
            data.push((y * 255 / size.max(1)) as u8);
            data.push(((x * 7 + y * 13) % 256) as u8);
        }
    }
    RgbImage8 { width: size, height: size, data }
}

pub fn bench(gpu: &Gpu, a: BenchArgs) -> Result<()> {
    let t0 = Instant::now();
    let loaded = load_model(gpu, &a.model, &a.quant, a.json)?;
    let load_s = t0.elapsed().as_secs_f64();
    let model = &loaded.model;
    let icfg = ImageConfig::for_model(&model.cfg);
    let img = match &a.image {
        Some(p) => decode_rgb(&std::fs::read(p)?, &DecodeLimits::default())?,
        None => synthetic_image(model.cfg.image_size()),
    };
    let t1 = Instant::now();
    let pixels = pollster::block_on(preprocess(gpu, &icfg, &img))?;
    gpu.wait_idle()?;
    let preprocess_ms = t1.elapsed().as_secs_f64() * 1e3;
    let o = BenchOptions { runs: a.runs, text_tokens: a.text_tokens, decode_tokens: a.decode_tokens };
    let r = pollster::block_on(bench_model(gpu, model, loaded.tok.bos_id(), loaded.tok.image_id(), &pixels, &o))?;
    let profile = if a.profile {
        Some(pollster::block_on(profile_model(gpu, model, loaded.tok.bos_id(), loaded.tok.image_id(), &pixels, &o))?)
    } else {
        None
    };
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(p) = &profile {
            v["profile"] = serde_json::to_value(p)?;
        }
        v["load_s"] = load_s.into();
        v["quantised_on"] = loaded.quantised_on.into();
        v["preprocess_ms"] = preprocess_ms.into();
        v["quant"] = a.quant.clone().into();
        v["adapter"] = gpu.adapter.to_string().into();
        println!("{v}");
    } else {
        println!("adapter: {}  quant: {}", gpu.adapter, a.quant);
        let on = loaded.quantised_on.map(|q| format!(" (quantised on the {})", q.to_uppercase())).unwrap_or_default();
        println!("load                     {load_s:>9.2} s{on}");
        println!("preprocess (first)       {preprocess_ms:>9.2} ms");
        println!("vision + aligner         {:>9.2} ms", r.vision_ms);
        println!("prefill ({} tokens)     {:>9.2} ms  ({:.0} tok/s)", r.prompt_tokens, r.prefill_ms, r.prefill_tok_s);
        println!("time to first token      {:>9.2} ms", r.first_token_ms);
        println!("decode ({} tokens)       {:>9.1} tok/s  (spread {:.0}%)", r.decode_tokens, r.decode_tok_s, 100.0 * r.decode_spread);
        println!("GPU memory peak          {:>9.1} MiB", r.gpu_peak_bytes as f64 / (1 << 20) as f64);
        println!("medians of {} runs after a warm-up", r.runs);
        for st in profile.iter().flatten() {
            println!("\nGPU time, {}: {:.3} ms in {} dispatches", st.stage, st.total_ms, st.dispatches);
            println!("  without timestamps: {:.3} ms per run queued back to back; host encode {:.3} ms", st.replay.gpu_ms, st.replay.encode_ms);
            for (k, n, ms) in st.kernels.iter().take(12) {
                println!("  {ms:>8.3} ms {n:>5}x  {k}");
            }
        }
    }
    Ok(())
}
