//! `dsvl-gpu run`: load a model folder, ask about images, stream the answer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dsvl_gpu::generate::{GenerateOptions, Session};
use dsvl_gpu::gpu::Gpu;
use dsvl_gpu::image::{decode_rgb, preprocess, read_image_file, DecodeLimits, ImageConfig};
use dsvl_gpu::model::config::ModelConfig;
use dsvl_gpu::model::llama::LogitRows;
use dsvl_gpu::model::safetensors::TensorSource;
use dsvl_gpu::model::vlm::Model;
use dsvl_gpu::model::weights::{load_weights_opts, LoadOptions, LoadProgress};
use dsvl_gpu::ops::sample::Sampling;
use dsvl_gpu::prompt::{encode, Conversation, PromptTokenizer, DEFAULT_SYSTEM_PROMPT, STOP_STRING};
use dsvl_gpu::quant::Recipe;
use dsvl_gpu::text::TextStream;

#[derive(clap::Args)]
pub struct RunArgs {
    /// A model folder (config.json, model.safetensors or an index + shards, tokenizer.json, ...) or a hub id
    /// `org/name[@revision]`, downloaded once into the HF cache (HF_ENDPOINT, HF_HUB_CACHE/HF_HOME, HF_TOKEN, HF_HUB_OFFLINE).
    #[arg(long, default_value = dsvl_gpu::hub::DEFAULT_MODEL)]
    pub model: String,
    /// An image to ask about (repeat for several; PNG, JPEG, WebP, GIF, BMP).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// The question (required by `run`; `chat` reads its messages from stdin).
    #[arg(long)]
    pub prompt: Option<String>,
    /// System prompt (default: DeepSeek-VL's).
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// `chat`: tokens of context the KV cache holds (capped by the model's maximum).
    #[arg(long, default_value_t = 4096)]
    pub context: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u32,
    /// Weight formats: f32 (the parity path, f32 activations), f16, q8 (int8: the default, the one
    /// quantised recipe within its accuracy bound at the 1.3B shapes; docs/QUANT.md), q4 (int4) or
    /// mixed (int4 decoder layers, int8 elsewhere), with optional per-part overrides
    /// `q4,lm_head=q8,embed=f16` (vision, aligner, llm, embed, lm_head). Activations are f16 where the
    /// adapter has SHADER_F16, except for f32. A `dsvl-gpu quantize` folder loads as it was written.
    #[arg(long, default_value = "q8")]
    pub quant: String,
    /// Print one JSON object at the end (text, ids, prompt tokens, timings, adapter, weight formats and bytes).
    #[arg(long)]
    pub json: bool,
    /// Write the next-token logits after the prompt as a little-endian f32 .npy of shape [vocab].
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
}

fn read_opt(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let p = dir.join(name);
    if p.exists() { Ok(Some(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?)) } else { Ok(None) }
}

/// A little-endian f32 .npy of shape [n].
fn write_npy(path: &Path, v: &[f32]) -> Result<()> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}", v.len());
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + v.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// `--model`: a folder as is, else a hub id downloaded into the HF cache with a progress line on stderr.
pub fn resolve_model(model: &str, quiet: bool) -> Result<PathBuf> {
    let mut last = (String::new(), 0u64);
    let dir = dsvl_gpu::hub::resolve_model(model, &mut |p| {
        if quiet {
            return;
        }
        let step = (p.total / 200).max(1 << 20);
        if p.file != last.0 || p.done == p.total || p.done >= last.1 + step {
            last = (p.file.to_string(), p.done);
            let line = if p.total > 0 {
                format!("downloading {model}: {} {:>5.1}% of {:.1} MB", p.file, 100.0 * p.done as f64 / p.total as f64, p.total as f64 / 1e6)
            } else {
                format!("downloading {model}: {} {:.1} MB", p.file, p.done as f64 / 1e6)
            };
            eprint!("\r{line:<100}");
        }
    });
    if !quiet && !last.0.is_empty() {
        eprintln!();
    }
    Ok(dir?)
}

/// A model and its tokenizer, ready to answer.
pub struct Loaded {
    pub model: Model,
    pub tok: PromptTokenizer,
    /// Where weights were quantised while loading ("gpu" or "cpu"), if any were.
    pub quantised_on: Option<&'static str>,
}

/// Loads a model folder with the `quant` recipe, showing progress on stderr unless `quiet`.
pub fn load_model(gpu: &Gpu, model_arg: &str, quant: &str, quiet: bool) -> Result<Loaded> {
    let recipe = Recipe::parse(quant).map_err(|e| anyhow::anyhow!("--quant {quant}: {e}"))?;
    let dir = resolve_model(model_arg, quiet)?;
    let act = recipe.act(gpu.caps.f16);
    let config = std::fs::read(dir.join("config.json")).with_context(|| format!("reading {}", dir.join("config.json").display()))?;
    let cfg = ModelConfig::from_dir_files(&config, read_opt(&dir, "preprocessor_config.json")?.as_deref(), read_opt(&dir, "processor_config.json")?.as_deref())?;
    let tok = PromptTokenizer::from_dir(&dir)?;
    let source = TensorSource::open_dir(&dir)?;
    let mut last = 0u64;
    // The quantise stage, shown on the loading line: tensors done, total, where, and why not
    // on the GPU (once).
    let mut quant: Option<(usize, usize, &'static str)> = None;
    let mut noted = false;
    let weights = pollster::block_on(load_weights_opts(gpu, &cfg, &source, &recipe, act, &LoadOptions::default(), &mut |p| match p {
        LoadProgress::Quantise { tensors, tensors_total, on, note, .. } => {
            quant = Some((*tensors, *tensors_total, on.name()));
            if let (Some(n), false, false) = (note, noted, quiet) {
                noted = true;
                eprintln!("\n{n}");
            }
        }
        &LoadProgress::Upload { done, total } => {
            if !quiet && (done == total || done - last > total / 50) {
                last = done;
                let q = quant.map(|(t, n, on)| format!(", quantised {t} of {n} tensors on the {}", on.to_uppercase())).unwrap_or_default();
                eprint!("\rloading weights: {:>5.1}% of {:.1} MB{q}", 100.0 * done as f64 / total.max(1) as f64, total as f64 / 1e6);
                if done == total {
                    eprintln!();
                }
            }
        }
    }))?;
    Ok(Loaded { model: Model::new(gpu, cfg, weights, act)?, tok, quantised_on: quant.map(|q| q.2) })
}

/// Decodes and preprocesses one image file for `model`.
pub fn load_image(gpu: &Gpu, model: &Model, path: &Path) -> Result<dsvl_gpu::Tensor> {
    let icfg = ImageConfig::for_model(&model.cfg);
    let limits = DecodeLimits::default();
    let bytes = read_image_file(path, &limits).context("reading image")?;
    let img = decode_rgb(&bytes, &limits).with_context(|| format!("image {}", path.display()))?;
    pollster::block_on(preprocess(gpu, &icfg, &img)).with_context(|| format!("image {}", path.display()))
}

/// Sampling settings from the command line, with HF's ranges.
pub fn sampling_of(a: &RunArgs) -> Result<Sampling> {
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p {}: must be in (0, 1]", a.top_p);
    }
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!("--temperature {}: must be >= 0 (0 = greedy)", a.temperature);
    }
    if !(a.repetition_penalty > 0.0 && a.repetition_penalty.is_finite()) {
        bail!("--repetition-penalty {}: must be > 0 (1 = off)", a.repetition_penalty);
    }
    let s = Sampling { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, repetition_penalty: a.repetition_penalty, seed: a.seed, top_p_within_top_k: false };
    s.validate()?;
    Ok(s)
}

pub fn run(gpu: &Gpu, a: RunArgs) -> Result<()> {
    let Some(prompt) = a.prompt.clone() else {
        bail!("--prompt is required (or use `dsvl-gpu chat` for an interactive conversation)");
    };
    let t0 = Instant::now();
    let Loaded { model, tok, quantised_on } = load_model(gpu, &a.model, &a.quant, a.json)?;
    let cfg = &model.cfg;
    let t_load = t0.elapsed();

    let mut conv = Conversation::with_system(a.system.clone().unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string()));
    conv.user(prompt, a.images.len());
    let enc = encode(&tok, &conv, cfg.num_image_tokens)?;
    let t1 = Instant::now();
    let pixels = a.images.iter().map(|p| load_image(gpu, &model, p)).collect::<Result<Vec<_>>>()?;
    let t_pre = t1.elapsed();
    if let Some(path) = &a.dump_logits {
        let logits = pollster::block_on(model.prefill_logits(gpu, &enc.ids, tok.image_id(), &pixels, LogitRows::Last))?;
        write_npy(path, &logits)?;
    }
    let opts = GenerateOptions { sampling: sampling_of(&a)?, max_new_tokens: a.max_new_tokens, eos: Some(tok.eos_id()) };
    let mut stream = TextStream::new(&tok, &[STOP_STRING]);
    let mut text = String::new();
    let mut err = None;
    let stdout = std::io::stdout();
    let capacity = enc.ids.len().saturating_add(opts.max_new_tokens);
    if capacity > cfg.llm.max_positions {
        bail!("prompt of {} tokens + {} new tokens exceeds the context of {}", enc.ids.len(), opts.max_new_tokens, cfg.llm.max_positions);
    }
    let mut session = Session::new(&model, gpu, capacity.max(1))?;
    let ids = pollster::block_on(session.respond(gpu, &enc.ids, tok.image_id(), &pixels, &opts, &mut |id| {
        match stream.push(id) {
            Ok(c) => {
                text.push_str(&c.text);
                if !a.json {
                    let mut o = stdout.lock();
                    let _ = o.write_all(c.text.as_bytes());
                    let _ = o.flush();
                }
                !c.stopped
            }
            Err(e) => {
                err = Some(e);
                false
            }
        }
    }))?;
    if let Some(e) = err {
        return Err(e.into());
    }
    let tail = stream.finish()?;
    text.push_str(&tail.text);
    let t = session.timings();
    if a.json {
        let stats = model.weights.stats();
        let v = serde_json::json!({
            "text": text, "token_ids": ids, "prompt_tokens": enc.ids.len(),
            "timings": {
                "load_s": t_load.as_secs_f64(), "preprocess_s": t_pre.as_secs_f64(), "vision_s": t.vision_s,
                "prefill_s": t.prefill_s, "first_token_s": t.first_token_s, "decode_tok_s": t.decode_tok_s(),
            },
            "gpu_peak_bytes": gpu.pool_stats().peak_bytes,
            "adapter": gpu.adapter.to_string(), "quant": a.quant,
            "weight_formats": model.weights.recipe().name(), "weight_bytes": stats.bytes, "weight_params": stats.params,
            "quantised_on": quantised_on,
        });
        println!("{v}");
    } else {
        let mut o = stdout.lock();
        let _ = o.write_all(tail.text.as_bytes());
        let _ = writeln!(o);
    }
    Ok(())
}
