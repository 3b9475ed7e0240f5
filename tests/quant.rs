//! Quantised weights end to end on the committed fixtures: next-token logits against the f32
//! path (cosine >= 0.999 for q8, >= 0.98 for q4), GPU bytes per parameter, and a checkpoint
//! quantised ahead of time loading back to the same logits.

mod common;
#[path = "common/npy.rs"]
mod npy;

use std::path::{Path, PathBuf};

use dsvl_gpu::gpu::DType;
use dsvl_gpu::model::safetensors::TensorSource;
use dsvl_gpu::model::ModelConfig;
use dsvl_gpu::quant::report::{compare, Case};
use dsvl_gpu::quant::load::{QuantOn, Quantiser};
use dsvl_gpu::quant::{Format, Recipe};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsvl").join(name)
}

fn config(dir: &Path) -> ModelConfig {
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    ModelConfig::from_dir_files(&read("config.json").unwrap(), read("preprocessor_config.json").as_deref(), read("processor_config.json").as_deref()).unwrap()
}

/// The fixture's prompts (cases.json) with their pixels; and the image token id.
fn cases(dir: &Path, only: &[&str]) -> (Vec<Case>, u32) {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for c in meta["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        let ids = c["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let mut pixels = Vec::new();
        if let Some(px) = c.get("pixel_values").and_then(|v| v.as_str()) {
            let n = npy::Npy::read(dir.join(px)).unwrap();
            let per: usize = n.shape[1..].iter().product();
            let data = n.f32().unwrap();
            pixels.extend((0..n.shape[0]).map(|i| data[i * per..(i + 1) * per].to_vec()));
        }
        out.push(Case { name: name.into(), ids, pixels });
    }
    (out, meta["image_token_id"].as_u64().unwrap() as u32)
}

#[test]
fn quantised_logits_stay_close_to_f32() {
    let gpu = common::gpu();
    let dir = fixture("tiny-orig");
    let cfg = config(&dir);
    let src = TensorSource::open_dir(&dir).unwrap();
    let (cases, image_token) = cases(&dir, &["one_image", "text_only"]);
    let q8 = Recipe::parse("q8").unwrap();
    let q4 = Recipe::parse("q4").unwrap();
    let recipes = [(q8, DType::F32), (q4, DType::F32), (Recipe::mixed(), DType::F32)];
    let rows = pollster::block_on(compare(gpu, &cfg, &src, image_token, &cases, &recipes)).unwrap();
    for r in &rows {
        eprintln!("{} {} {}: cosine {:.6}, rel L2 {:.2e}, top-1 {}, {:.3} bytes/param", r.recipe, r.act, r.case, r.cosine, r.rel_l2, r.top1, r.bytes as f64 / r.params as f64);
        let min = if r.recipe == q8.name() { 0.999 } else { 0.98 };
        assert!(r.cosine >= min, "{} {}: cosine {} < {min}", r.recipe, r.case, r.cosine);
        if r.recipe == q4.name() {
            assert!(r.bytes as f64 <= 0.65 * r.params as f64, "q4: {} bytes for {} params", r.bytes, r.params);
        }
    }
    assert_eq!(rows.len(), recipes.len() * cases.len());
    let _ = Format::F32;
}

/// Writes `src_dir` quantised with `recipe` into a fresh folder (what `dsvl-gpu quantize` does).
fn quantize_to(src_dir: &Path, recipe: &Recipe, tag: &str) -> PathBuf {
    let cfg = config(src_dir);
    let src = TensorSource::open_dir(src_dir).unwrap();
    let mut last = (0, 0);
    let bytes = pollster::block_on(dsvl_gpu::quant::file::quantize_checkpoint(&cfg, &src, recipe, None, &mut |d, t| last = (d, t))).unwrap();
    assert!(last.0 == last.1 && last.1 > 0, "progress {last:?}");
    let out = std::env::temp_dir().join(format!("dsvl-quant-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "preprocessor_config.json", "processor_config.json"] {
        if src_dir.join(f).exists() {
            std::fs::copy(src_dir.join(f), out.join(f)).unwrap();
        }
    }
    std::fs::write(out.join("model.safetensors"), bytes).unwrap();
    out
}

fn logits_of(dir: &Path, recipe: &Recipe, case: &Case, image_token: u32) -> (Vec<f32>, dsvl_gpu::model::WeightStats, Recipe) {
    let gpu = common::gpu();
    let cfg = config(dir);
    let src = TensorSource::open_dir(dir).unwrap();
    let mut last = (0, 1);
    let w = pollster::block_on(dsvl_gpu::model::load_weights_with(gpu, &cfg, &src, recipe, DType::F32, &mut |d, t| last = (d, t))).unwrap();
    assert_eq!(last.0, last.1, "progress ends at its total");
    let (stats, formats) = (w.stats(), w.recipe());
    let s = cfg.vision.image_size;
    let model = dsvl_gpu::model::vlm::Model::new(gpu, cfg, w, DType::F32).unwrap();
    let images: Vec<_> = case.pixels.iter().map(|p| dsvl_gpu::Tensor::from_f32(gpu, &[3, s, s], DType::F32, p).unwrap()).collect();
    let logits = pollster::block_on(model.prefill_logits(gpu, &case.ids, image_token, &images, dsvl_gpu::model::llama::LogitRows::Last)).unwrap();
    (logits, stats, formats)
}

/// A checkpoint quantised ahead of time loads (whatever --quant says) to exactly the logits of
/// quantising at load time: the same codes reach the same kernels. Both layouts: the HF one
/// stacks separately quantised q, k and v.
#[test]
fn quantised_checkpoints_load_to_the_same_logits() {
    for (fx, recipe) in [("tiny-orig", "q4"), ("tiny-hf", "mixed")] {
        let dir = fixture(fx);
        let recipe = Recipe::parse(recipe).unwrap();
        let (cases, image_token) = cases(&dir, &["one_image"]);
        let out = quantize_to(&dir, &recipe, fx);
        let src = TensorSource::open_dir(&out).unwrap();
        let meta = src.metadata().next().unwrap().1.clone();
        assert_eq!(meta.get(dsvl_gpu::quant::file::RECIPE_KEY), Some(&recipe.name()));
        let (want, want_stats, want_formats) = logits_of(&dir, &recipe, &cases[0], image_token);
        let (got, got_stats, got_formats) = logits_of(&out, &Recipe::uniform(Format::F16), &cases[0], image_token);
        assert_eq!(got_formats, recipe, "{fx}: formats as written");
        assert_eq!((got_formats, got_stats), (want_formats, want_stats), "{fx}");
        assert_eq!(got, want, "{fx}: logits from the quantised folder");
        std::fs::remove_dir_all(out).ok();
    }
}

/// `dsvl-gpu quantize` on the GPU writes the same file, byte for byte, as on the CPU (the GPU
/// quantiser is the CPU twin's bit-identical port), for int4 with offsets and for int8.
#[test]
fn quantize_on_the_gpu_writes_the_cpu_file() {
    let gpu = common::gpu();
    for (fx, recipe) in [("tiny-orig", "q4"), ("tiny-hf", "mixed")] {
        let dir = fixture(fx);
        let recipe = Recipe::parse(recipe).unwrap();
        let (cfg, src) = (config(&dir), TensorSource::open_dir(&dir).unwrap());
        let cpu = pollster::block_on(dsvl_gpu::quant::file::quantize_checkpoint(&cfg, &src, &recipe, None, &mut |_, _| {})).unwrap();
        let mut q = Quantiser::new(QuantOn::Gpu);
        let mut last = (0, 0);
        let on_gpu = pollster::block_on(dsvl_gpu::quant::file::quantize_checkpoint(&cfg, &src, &recipe, Some((gpu, &mut q)), &mut |d, t| last = (d, t))).unwrap();
        assert!(last.0 == last.1 && last.1 > 0, "progress {last:?}");
        assert_eq!(q.on(), QuantOn::Gpu, "{fx}: fell back to the CPU: {:?}", q.note());
        assert_eq!(on_gpu.len(), cpu.len(), "{fx}");
        assert!(on_gpu == cpu, "{fx}: the GPU's file differs from the CPU's");
    }
}

/// The bytes `estimate` computes from shapes are the bytes loading takes; for the released 1.3B
/// model, int4 stays within 0.65 bytes per parameter, scales included.
#[test]
fn weight_bytes_per_parameter() {
    let gpu = common::gpu();
    let dir = fixture("tiny-orig");
    let cfg = config(&dir);
    let src = TensorSource::open_dir(&dir).unwrap();
    for name in ["f16", "q8", "q4", "mixed"] {
        let recipe = Recipe::parse(name).unwrap();
        let w = pollster::block_on(dsvl_gpu::model::load_weights_with(gpu, &cfg, &src, &recipe, DType::F32, &mut |_, _| {})).unwrap();
        assert_eq!(w.stats(), dsvl_gpu::model::estimate(&cfg, &recipe, DType::F32), "tiny-orig {name}");
    }
    let real = serde_json::json!({
        "model_type": "multi_modality",
        "aligner_config": {"cls": "MlpProjector", "params": {"depth": 2, "input_dim": 1024, "n_embed": 2048, "projector_type": "mlp_gelu"}},
        "language_config": {"hidden_size": 2048, "intermediate_size": 5632, "max_position_embeddings": 16384, "num_attention_heads": 16,
            "num_hidden_layers": 24, "num_key_value_heads": 16, "vocab_size": 102400},
        "vision_config": {"cls": "CLIPVisionTower", "params": {"image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same", "select_layer": -1}}
    });
    let cfg = ModelConfig::from_dir_files(&serde_json::to_vec(&real).unwrap(), None, None).unwrap();
    for (name, max) in [("f16", 2.01), ("q8", 1.02), ("mixed", 0.8), ("q4", 0.65)] {
        let s = dsvl_gpu::model::estimate(&cfg, &Recipe::parse(name).unwrap(), DType::F16);
        let bpp = s.bytes as f64 / s.params as f64;
        eprintln!("deepseek-vl-1.3b {name}: {:.3} GB for {:.3} G params, {bpp:.4} bytes/param", s.bytes as f64 / 1e9, s.params as f64 / 1e9);
        assert!(bpp <= max, "{name}: {bpp} bytes/param > {max}");
    }
}

/// Load-time quantisation (on the GPU by default; on the CPU under DSVL_CPU_QUANT=1) uploads
/// exactly what the CPU twin makes of the checkpoint's values, and a quantised file that lacks
/// its format or has the wrong shapes fails with the tensor named, before any upload.
#[test]
fn loaded_codes_are_the_cpu_twins_and_bad_files_are_named() {
    use dsvl_gpu::quant::{file, Packed, QFormat, Weight};
    let gpu = common::gpu();
    let dir = fixture("tiny-orig");
    let cfg = config(&dir);
    let src = TensorSource::open_dir(&dir).unwrap();
    let recipe = Recipe::parse("q4,lm_head=q8c,embed=f16").unwrap();
    let w = pollster::block_on(dsvl_gpu::model::load_weights_with(gpu, &cfg, &src, &recipe, DType::F32, &mut |_, _| {})).unwrap();
    assert!(matches!(&w.llm.embed, Weight::Dense(_)));
    for (name, weight, fmt) in [
        ("language_model.model.layers.1.mlp.down_proj.weight", &w.llm.layers[1].down.w, QFormat::q4(32, true)),
        ("language_model.lm_head.weight", &w.llm.lm_head, QFormat::q8(0)),
        ("vision_model.vision_tower.patch_embed.proj.weight", &w.vision.patch.w, QFormat::q4(32, true)),
    ] {
        let Weight::Quant(q) = weight else { panic!("{name} is not quantised") };
        let (t, bytes, _) = src.need(name).unwrap();
        let want = file::quantize_bytes(fmt, t.dtype, bytes, q.rows, q.cols).unwrap();
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        for p in &q.parts {
            codes.extend(pollster::block_on(gpu.read_u32(&p.codes)).unwrap());
            let s = pollster::block_on(gpu.read_u32(&p.scales)).unwrap();
            let halves: Vec<half::f16> = bytemuck::cast_slice(&s).to_vec();
            scales.extend_from_slice(&halves[..p.rows * q.layout.row_scales]);
        }
        assert_eq!(Packed { fmt, rows: q.rows, cols: q.cols, codes, scales }, want, "{name}");
    }

    // A quantised file with one format key missing, then with a misshapen scale tensor.
    let out = quantize_to(&dir, &Recipe::parse("q8").unwrap(), "bad");
    let path = out.join("model.safetensors");
    let good = std::fs::read(&path).unwrap();
    let header = dsvl_gpu::model::safetensors::parse("model.safetensors", &good).unwrap();
    let name = "language_model.model.layers.0.mlp.up_proj.weight";
    type Reshape<'a> = &'a dyn Fn(&str, &[usize]) -> Option<Vec<usize>>;
    let edit = |f: Reshape, drop_key: Option<&str>| {
        let tensors: Vec<(String, dsvl_gpu::ops::convert::Source, Vec<usize>, Vec<u8>)> = header
            .tensors
            .iter()
            .map(|t| {
                let bytes = good[t.range.clone()].to_vec();
                match f(&t.name, &t.shape) {
                    Some(shape) => (t.name.clone(), t.dtype, shape, bytes),
                    None => (t.name.clone(), t.dtype, t.shape.clone(), bytes),
                }
            })
            .collect();
        let refs: Vec<_> = tensors.iter().map(|(n, d, s, b)| (n.as_str(), *d, &s[..], &b[..])).collect();
        let meta: Vec<(&str, &str)> = header.metadata.iter().filter(|(k, _)| Some(k.as_str()) != drop_key).map(|(k, v)| (k.as_str(), v.as_str())).collect();
        TensorSource::from_bytes(vec![("model.safetensors".into(), dsvl_gpu::model::safetensors::serialize(&refs, &meta))]).unwrap()
    };
    let load_err = |src: &TensorSource| pollster::block_on(dsvl_gpu::model::load_weights_with(gpu, &cfg, src, &recipe, DType::F32, &mut |_, _| panic!("nothing may upload"))).err().unwrap().to_string();
    let key = file::format_key(name);
    let e = load_err(&edit(&|_, _| None, Some(&key)));
    assert!(e.contains(&format!("{name}.qcodes`: no `{key}`")), "{e}");
    let scales = format!("{name}{}", file::SCALES);
    // [512, 2] scales reshaped to [256, 4]: same bytes, wrong shape.
    let e = load_err(&edit(&|n, s| (n == scales).then(|| vec![s[0] / 2, s[1] * 2]), None));
    assert!(e.contains(&format!("`{scales}`")) && e.contains("expected F16 [512, 2]"), "{e}");
    std::fs::remove_dir_all(out).ok();
}

/// The codes and scales of every quantised matrix of `w`, read back (tied tables once).
fn packed_of(w: &dsvl_gpu::model::Weights) -> Vec<dsvl_gpu::quant::Packed> {
    use dsvl_gpu::quant::{Packed, Weight};
    let gpu = common::gpu();
    let mut out = Vec::new();
    for (_, m) in w.matrices() {
        let Weight::Quant(q) = m else { continue };
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        for p in &q.parts {
            codes.extend(pollster::block_on(gpu.read_u32(&p.codes)).unwrap());
            let s = pollster::block_on(gpu.read_u32(&p.scales)).unwrap();
            let halves: Vec<half::f16> = bytemuck::cast_slice(&s).to_vec();
            scales.extend_from_slice(&halves[..p.rows * q.layout.row_scales]);
        }
        out.push(Packed { fmt: q.fmt, rows: q.rows, cols: q.cols, codes, scales });
    }
    out
}

/// Loads `dir` with `recipe`, quantising where `on` says: the weights, the logits of `case` and
/// every progress report.
fn load_on(dir: &Path, recipe: &Recipe, on: dsvl_gpu::quant::QuantOn, case: &Case, image_token: u32) -> (dsvl_gpu::model::Weights, Vec<f32>, Vec<dsvl_gpu::model::weights::LoadProgress>) {
    use dsvl_gpu::model::weights::{load_weights_opts, LoadOptions};
    let gpu = common::gpu();
    let cfg = config(dir);
    let src = TensorSource::open_dir(dir).unwrap();
    let mut seen = Vec::new();
    let w = pollster::block_on(load_weights_opts(gpu, &cfg, &src, recipe, DType::F32, &LoadOptions { quantise_on: on }, &mut |p| seen.push(p.clone()))).unwrap();
    let s = cfg.vision.image_size;
    let model = dsvl_gpu::model::vlm::Model::new(gpu, cfg, w, DType::F32).unwrap();
    let images: Vec<_> = case.pixels.iter().map(|p| dsvl_gpu::Tensor::from_f32(gpu, &[3, s, s], DType::F32, p).unwrap()).collect();
    let logits = pollster::block_on(model.prefill_logits(gpu, &case.ids, image_token, &images, dsvl_gpu::model::llama::LogitRows::Last)).unwrap();
    (model.weights, logits, seen)
}

/// Quantising at load on the GPU gives the CPU twin's codes and scales for every matrix, bit for
/// bit, so the logits are the same numbers (tolerance: none). Both layouts (the HF one stacks
/// separately quantised q, k and v), every recipe; the quantise stage is reported from nothing
/// to its totals, on the GPU.
#[test]
fn gpu_quantised_at_load_equals_cpu_quantised() {
    use dsvl_gpu::model::weights::LoadProgress;
    use dsvl_gpu::quant::QuantOn;
    for (fx, recipe) in [("tiny-orig", "q8"), ("tiny-orig", "q4"), ("tiny-hf", "mixed"), ("tiny-orig", "q4g64,embed=q8c,lm_head=q4g32")] {
        let dir = fixture(fx);
        let recipe = Recipe::parse(recipe).unwrap();
        let (cases, image_token) = cases(&dir, &["one_image"]);
        let (wg, lg, seen) = load_on(&dir, &recipe, QuantOn::Gpu, &cases[0], image_token);
        let (wc, lc, seen_cpu) = load_on(&dir, &recipe, QuantOn::Cpu, &cases[0], image_token);
        let (pg, pc) = (packed_of(&wg), packed_of(&wc));
        assert!(!pg.is_empty() && pg.len() == pc.len(), "{fx} {}: {} and {} quantised matrices", recipe.name(), pg.len(), pc.len());
        for (i, (g, c)) in pg.iter().zip(&pc).enumerate() {
            assert!(g == c, "{fx} {}: matrix {i} ({} [{}, {}]) differs between GPU and CPU quantisation", recipe.name(), g.fmt, g.rows, g.cols);
        }
        assert_eq!(lg, lc, "{fx} {}: logits", recipe.name());
        let stages: Vec<_> = seen.iter().filter_map(|p| match p {
            LoadProgress::Quantise { done, total, tensors, tensors_total, on, note } => Some((*done, *total, *tensors, *tensors_total, *on, note.clone())),
            LoadProgress::Upload { .. } => None,
        }).collect();
        let (first, last) = (stages.first().unwrap(), stages.last().unwrap());
        assert_eq!((first.0, first.2), (0, 0), "{fx}: the quantise stage starts from nothing");
        assert!(last.0 == last.1 && last.2 == last.3 && last.3 > 0, "{fx}: the quantise stage ends at {last:?}");
        assert!(stages.iter().all(|s| s.4 == QuantOn::Gpu && s.5.is_none()), "{fx}: quantised off the GPU: {last:?}");
        let cpu_last = seen_cpu.iter().rev().find_map(|p| match p {
            LoadProgress::Quantise { on, tensors, .. } => Some((*on, *tensors)),
            LoadProgress::Upload { .. } => None,
        });
        assert_eq!(cpu_last, Some((QuantOn::Cpu, last.3)), "{fx}: the CPU load's quantise stage");
        let uploads: Vec<(u64, u64)> = seen.iter().filter_map(|p| if let LoadProgress::Upload { done, total } = p { Some((*done, *total)) } else { None }).collect();
        let (done, total) = *uploads.last().unwrap();
        assert_eq!(done, total, "{fx}: upload progress ends at its total");
        eprintln!("{fx} {}: {} matrices quantised on the GPU = CPU; {} quantise reports over {} tensors", recipe.name(), pg.len(), stages.len(), last.3);
    }
}

/// A non-finite weight fails the load on the GPU path with the CPU path's message: the tensor,
/// its row and column, the value.
#[test]
fn non_finite_weights_fail_alike_on_both_paths() {
    use dsvl_gpu::model::weights::{load_weights_opts, LoadOptions};
    use dsvl_gpu::quant::QuantOn;
    let gpu = common::gpu();
    let dir = fixture("tiny-orig");
    let cfg = config(&dir);
    let mut bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header = dsvl_gpu::model::safetensors::parse("model.safetensors", &bytes).unwrap();
    // gate_proj of layer 1 ([512, 256], f16): row 300, column 7 becomes +inf; row 301 NaN.
    let name = "language_model.model.layers.1.mlp.gate_proj.weight";
    let t = header.tensors.iter().find(|t| t.name == name).unwrap();
    let at = |r: usize, c: usize| t.range.start + (r * 256 + c) * 2;
    bytes[at(300, 7)..at(300, 7) + 2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    bytes[at(301, 0)..at(301, 0) + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
    let src = TensorSource::from_bytes(vec![("model.safetensors".into(), bytes)]).unwrap();
    let err = |on| pollster::block_on(load_weights_opts(gpu, &cfg, &src, &Recipe::parse("q4").unwrap(), DType::F32, &LoadOptions { quantise_on: on }, &mut |_| {})).err().unwrap().to_string();
    let (g, c) = (err(QuantOn::Gpu), err(QuantOn::Cpu));
    assert!(g.contains(name) && g.contains("row 300, column 7 holds inf"), "{g}");
    assert_eq!(g, c);
}
