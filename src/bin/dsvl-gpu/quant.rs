//! `dsvl-gpu quantize`: a model folder quantised ahead of time into a folder that loads
//! directly; `dsvl-gpu quant-report`: each recipe's next-token logits against the f32 path.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dsvl_gpu::gpu::DType;
use dsvl_gpu::image::{decode_rgb, preprocess, DecodeLimits, ImageConfig};
use dsvl_gpu::model::safetensors::TensorSource;
use dsvl_gpu::model::ModelConfig;
use dsvl_gpu::prompt::{encode, Conversation, PromptTokenizer, DEFAULT_SYSTEM_PROMPT};
use dsvl_gpu::quant::report::{compare, Case};
use dsvl_gpu::quant::load::{QuantOn, Quantiser};
use dsvl_gpu::quant::{file, measure, Format, Recipe};
use dsvl_gpu::Gpu;

use crate::run::resolve_model;
use crate::selftest::npy_f32;

#[derive(clap::Args)]
pub struct QuantizeArgs {
    /// The model folder (or hub id) to quantise.
    #[arg(long)]
    pub model: String,
    /// The recipe, as `run --quant` takes it (q8, q4, mixed, overrides).
    #[arg(long, default_value = "q4")]
    pub quant: String,
    /// The folder to write: model.safetensors plus the model's config and tokenizer files.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A model folder (or hub id). Its cases.json prompts are used if it has them (the test
    /// fixtures), else a text prompt and one with a built-in image.
    #[arg(long)]
    pub model: String,
    /// Recipes to compare, separated by `;` (each as `run --quant` takes it).
    #[arg(long, default_value = "f16;q8;q4;mixed")]
    pub recipes: String,
    /// Also print the CPU table of every candidate format's error on synthetic weights.
    #[arg(long)]
    pub formats: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn model_config(dir: &Path) -> Result<ModelConfig> {
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    let config = std::fs::read(dir.join("config.json")).with_context(|| format!("reading {}", dir.join("config.json").display()))?;
    Ok(ModelConfig::from_dir_files(&config, read("preprocessor_config.json").as_deref(), read("processor_config.json").as_deref())?)
}

/// Quantises on `gpu` when one opens (unless `DSVL_CPU_QUANT=1`), else on the CPU.
pub fn quantize(gpu: Option<&Gpu>, a: QuantizeArgs) -> Result<()> {
    let recipe = Recipe::parse(&a.quant).map_err(|e| anyhow::anyhow!("--quant {}: {e}", a.quant))?;
    let dir = resolve_model(&a.model, false)?;
    if a.out.exists() && std::fs::canonicalize(&a.out)? == std::fs::canonicalize(&dir)? {
        bail!("--out {}: is the model folder itself; choose another", a.out.display());
    }
    let cfg = model_config(&dir)?;
    let src = TensorSource::open_dir(&dir)?;
    let gpu = gpu.filter(|_| QuantOn::from_env() == QuantOn::Gpu);
    let mut quantiser = Quantiser::new(if gpu.is_some() { QuantOn::Gpu } else { QuantOn::Cpu });
    let on = |q: &Quantiser| if q.on() == QuantOn::Gpu { "GPU" } else { "CPU" };
    let label = format!("quantising to {} on the {}", recipe.name(), on(&quantiser));
    let bytes = pollster::block_on(file::quantize_checkpoint(&cfg, &src, &recipe, gpu.map(|g| (g, &mut quantiser)), &mut |done, total| {
        eprint!("\r{label}: tensor {done} of {total}");
        if done == total {
            eprintln!();
        }
    }))?;
    if let Some(note) = quantiser.note() {
        eprintln!("note: {note}");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // Everything beside the weights (config, tokenizer, processor files) is copied as it is.
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if !entry.file_type()?.is_file() || n.ends_with(".safetensors") || n == "model.safetensors.index.json" {
            continue;
        }
        std::fs::copy(entry.path(), a.out.join(&name)).with_context(|| format!("copying {n}"))?;
    }
    let out = a.out.join("model.safetensors");
    std::fs::write(&out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {} ({:.1} MB, {}, quantised on the {})", out.display(), bytes.len() as f64 / 1e6, recipe.name(), on(&quantiser));
    Ok(())
}

/// The folder's cases.json prompts, or a text prompt and an image prompt of our own.
fn cases(gpu: &Gpu, dir: &Path, cfg: &ModelConfig) -> Result<(Vec<Case>, u32)> {
    if let Ok(meta) = std::fs::read(dir.join("cases.json")) {
        let meta: serde_json::Value = serde_json::from_slice(&meta).context("cases.json")?;
        let mut out = Vec::new();
        for c in meta["cases"].as_array().context("cases.json: cases")? {
            let ids = c["input_ids"].as_array().context("input_ids")?.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect();
            let mut pixels = Vec::new();
            if let Some(px) = c["pixel_values"].as_str() {
                let (shape, data) = npy_f32(&std::fs::read(dir.join(px)).with_context(|| format!("reading {px}"))?)?;
                let per: usize = shape[1..].iter().product();
                pixels.extend((0..shape[0]).map(|i| data[i * per..(i + 1) * per].to_vec()));
            }
            out.push(Case { name: c["name"].as_str().unwrap_or("case").into(), ids, pixels });
        }
        return Ok((out, meta["image_token_id"].as_u64().context("cases.json: image_token_id")? as u32));
    }
    let tok = PromptTokenizer::from_dir(dir)?;
    let icfg = ImageConfig::for_model(cfg);
    let img = decode_rgb(include_bytes!("../../../tests/fixtures/dsvl/images/big.png"), &DecodeLimits::default())?;
    let pixels = pollster::block_on(async { gpu.read_f32(&preprocess(gpu, &icfg, &img).await?).await })?;
    let mut out = Vec::new();
    for (name, text, images) in [("text", "Write a short poem about the sea.", 0), ("image", "<image_placeholder>Describe this image in detail.", 1)] {
        let mut conv = Conversation::with_system(DEFAULT_SYSTEM_PROMPT);
        conv.user(text, images);
        let ids = encode(&tok, &conv, cfg.num_image_tokens)?.ids;
        out.push(Case { name: name.into(), ids, pixels: vec![pixels.clone(); images] });
    }
    Ok((out, tok.image_id()))
}

/// The bound a recipe is held to: 0.999 when every matrix is int8 or wider, else 0.98.
fn bound(r: &Recipe) -> f64 {
    let int4 = [r.vision, r.aligner, r.llm, r.embed, r.lm_head].iter().any(|f| matches!(f, Format::Q(q) if q.bits == 4));
    if int4 { 0.98 } else { 0.999 }
}

pub fn report(gpu: &Gpu, a: ReportArgs) -> Result<()> {
    if a.formats {
        println!("{}", measure::markdown(&measure::error_table(512, 2048)?));
    }
    let recipes: Vec<Recipe> = a.recipes.split(';').map(|s| Recipe::parse(s.trim()).map_err(|e| anyhow::anyhow!("--recipes {s}: {e}"))).collect::<Result<_>>()?;
    let dir = resolve_model(&a.model, a.json)?;
    let cfg = model_config(&dir)?;
    let src = TensorSource::open_dir(&dir)?;
    let (cases, image_token) = cases(gpu, &dir, &cfg)?;
    let mut runs = Vec::new();
    for r in &recipes {
        runs.push((*r, DType::F32));
        if gpu.caps.f16 && r.act(true) == DType::F16 {
            runs.push((*r, DType::F16));
        }
    }
    let rows = pollster::block_on(compare(gpu, &cfg, &src, image_token, &cases, &runs))?;
    if !a.json {
        println!("adapter: {}\nlogits against the f32 path (f32 weights and activations), {}\n", gpu.adapter, dir.display());
        println!("| recipe | activations | case | cosine | rel L2 | same top-1 | bytes/param | weight MB |\n|---|---|---|---|---|---|---|---|");
    }
    let mut failed = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let (recipe, _) = runs[i / cases.len()];
        let ok = row.cosine >= bound(&recipe);
        if !ok {
            failed.push(format!("{} ({}, {}): cosine {:.5} < {}", row.recipe, row.act, row.case, row.cosine, bound(&recipe)));
        }
        let bpp = row.bytes as f64 / row.params.max(1) as f64;
        if a.json {
            println!("{}", serde_json::json!({"recipe": row.recipe, "activations": row.act.name(), "case": row.case, "cosine": row.cosine, "rel_l2": row.rel_l2, "top1": row.top1, "weight_bytes": row.bytes, "weight_params": row.params, "bound": bound(&recipe), "ok": ok}));
        } else {
            println!("| {} | {} | {} | {:.6} | {:.2e} | {} | {bpp:.3} | {:.1} |", row.recipe, row.act, row.case, row.cosine, row.rel_l2, if row.top1 { "yes" } else { "no" }, row.bytes as f64 / 1e6);
        }
    }
    if !failed.is_empty() {
        bail!("below the bound (0.999 for int8 recipes, 0.98 with int4): {}", failed.join("; "));
    }
    Ok(())
}
