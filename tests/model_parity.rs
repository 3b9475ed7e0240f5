//! End-to-end logits against HF transformers' DeepseekVLForConditionalGeneration on the
//! committed fixtures (tests/fixtures/gen_dsvl.py): f32 weights and activations, relative L2
//! error of the next-token logits <= 1e-3 on every case, both checkpoint layouts; greedy
//! continuations equal HF's while its top-1 margin is clear.

mod common;
#[path = "common/npy.rs"]
mod npy;

use std::path::{Path, PathBuf};

use dsvl_gpu::generate::{GenerateOptions, Session};
use dsvl_gpu::gpu::{DType, Tensor};
use dsvl_gpu::model::llama::LogitRows;
use dsvl_gpu::model::config::ModelConfig;
use dsvl_gpu::model::safetensors::TensorSource;
use dsvl_gpu::model::vlm::Model;
use dsvl_gpu::model::weights::load_weights;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsvl").join(name)
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let n = npy::Npy::read(path).unwrap();
    let v = n.f32().unwrap();
    (n.shape, v)
}

fn load(dir: &Path, act: DType) -> Model {
    load_on(common::gpu(), dir, act)
}

fn load_on(gpu: &dsvl_gpu::Gpu, dir: &Path, act: DType) -> Model {
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    let cfg = ModelConfig::from_dir_files(&read("config.json").unwrap(), read("preprocessor_config.json").as_deref(), read("processor_config.json").as_deref()).unwrap();
    let src = TensorSource::open_dir(dir).unwrap();
    let w = pollster::block_on(load_weights(gpu, &cfg, &src, act, act, &mut |_, _| {})).unwrap();
    Model::new(gpu, cfg, w, act).unwrap()
}

fn run_fixture(name: &str) {
    run_fixture_as(name, DType::F32, 1e-3);
}

/// `act` for weights and activations; `tol` bounds the relative L2 error of the logits.
fn run_fixture_as(name: &str, act: DType, tol: f64) {
    run_fixture_on(common::gpu(), name, act, tol);
}

fn run_fixture_on(gpu: &dsvl_gpu::Gpu, name: &str, act: DType, tol: f64) {
    if act == DType::F16 && !gpu.caps.f16 {
        eprintln!("{name}: adapter has no SHADER_F16; f16 activations not run");
        return;
    }
    let dir = fixture(name);
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let model = load_on(gpu, &dir, act);
    let image_token = meta["image_token_id"].as_u64().unwrap() as u32;
    let s = model.cfg.image_size();
    for case in meta["cases"].as_array().unwrap() {
        let cname = case["name"].as_str().unwrap();
        let ids: Vec<u32> = case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let mut images = Vec::new();
        if let Some(px) = case.get("pixel_values").and_then(|v| v.as_str()) {
            let (shape, data) = read_f32(&dir.join(px));
            assert_eq!(&shape[1..], &[3, s, s]);
            for i in 0..shape[0] {
                let one = &data[i * 3 * s * s..(i + 1) * 3 * s * s];
                images.push(Tensor::from_f32(gpu, &[3, s, s], DType::F32, one).unwrap());
            }
        }
        let got = pollster::block_on(model.prefill_logits(gpu, &ids, image_token, &images, LogitRows::Last)).unwrap();
        let (_, want) = read_f32(&dir.join(case["logits_last"].as_str().unwrap()));
        let err = rel_l2(&got, &want);
        eprintln!("{name}/{cname} {act}: {} tokens, rel L2 {err:.2e}", ids.len());
        assert!(err <= tol, "{name}/{cname} {act}: logits rel L2 {err:.3e} > {tol:.0e}");
        if act != DType::F32 {
            continue; // greedy ids are compared on the f32 path, where HF's margins are clear
        }
        if let Some(all) = case.get("logits_all").and_then(|v| v.as_str()) {
            let got = pollster::block_on(model.prefill_logits(gpu, &ids, image_token, &images, LogitRows::All)).unwrap();
            let (_, want) = read_f32(&dir.join(all));
            let err = rel_l2(&got, &want);
            assert!(err <= tol, "{name}/{cname}: all-position logits rel L2 {err:.3e} > {tol:.0e}");
        }
        // Greedy continuation: equal to HF's up to the first step whose margin is not clear.
        let want_ids: Vec<u32> = case["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let margins: Vec<f64> = case["greedy_margins"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let opts = GenerateOptions { sampling: Default::default(), max_new_tokens: want_ids.len(), eos: None };
        let got_ids = pollster::block_on(model.generate(gpu, &ids, image_token, &images, &opts, &mut |_| true)).unwrap();
        let clear = margins.iter().position(|&m| m < 1e-3).unwrap_or(margins.len());
        assert_eq!(&got_ids[..clear], &want_ids[..clear], "{name}/{cname}: greedy ids (margins {margins:?})");
    }
}

#[test]
fn tiny_original_layout_matches_hf() {
    run_fixture("tiny-orig");
}

#[test]
fn tiny_hf_layout_matches_hf() {
    run_fixture("tiny-hf");
}

#[test]
fn tiny_hybrid_original_layout_matches_hf() {
    run_fixture("tiny-hybrid-orig");
}

#[test]
fn tiny_hybrid_hf_layout_matches_hf() {
    run_fixture("tiny-hybrid-hf");
}

#[test]
fn hybrid_f16_stays_close() {
    run_fixture_as("tiny-hybrid-orig", DType::F16, 2e-2);
}

#[test]
fn real_vocabulary_fixture_matches_hf() {
    run_fixture("vocab-orig");
}

/// Under a 256 KiB binding limit the prompt is prefilled in passes of 64 rows (the widest
/// activation row is 4 KiB), image rows falling on both sides of a pass boundary.
#[test]
fn prefill_in_passes_under_a_small_binding_limit_matches_hf() {
    let opts = dsvl_gpu::GpuOptions { max_binding: Some(256 << 10), ..dsvl_gpu::GpuOptions::from_env() };
    let gpu = pollster::block_on(dsvl_gpu::Gpu::new(&opts)).unwrap();
    let cfg = load_on(&gpu, &fixture("tiny-orig"), DType::F32).cfg.llm;
    assert_eq!(dsvl_gpu::model::llama::max_pass_rows(&gpu, &cfg, DType::F32), 64);
    run_fixture_on(&gpu, "tiny-orig", DType::F32, 1e-3);
}

#[test]
fn f16_weights_and_activations_stay_close() {
    // f16 rounds weights and every activation: the bound at the real shapes is 2e-2.
    run_fixture_as("tiny-orig", DType::F16, 2e-2);
}

/// The same with the tensor-core kernels (GEMMs, causal prefill attention) taking every product
/// they fit: on emulated cooperative matrices where the adapter has none (lavapipe), so the
/// graph's use of them is checked against HF, not only each kernel alone.
#[test]
fn f16_on_tensor_core_kernels_stays_close() {
    let opts = dsvl_gpu::GpuOptions { emulate_coop: true, ..dsvl_gpu::GpuOptions::from_env() };
    let gpu = pollster::block_on(dsvl_gpu::Gpu::new(&opts)).unwrap();
    if !gpu.caps.coop16 {
        eprintln!("{}: no SHADER_F16, so no emulated cooperative matrices; not run", gpu.adapter.name);
        return;
    }
    run_fixture_on(&gpu, "tiny-orig", DType::F16, 2e-2);
    let compiled = gpu.compiled_kernels();
    for want in ["matmul_coop_staged.gemm_coop_staged[", "attention_coop.attn_coop[HD128]"] {
        assert!(compiled.iter().any(|k| k.starts_with(want)), "{want} never ran; compiled: {compiled:#?}");
    }
}

/// A chat session keeps its KV cache: answering the multi-turn prompt after its first turn
/// prefills only the new part, and still produces HF's greedy continuation.
#[test]
fn session_reuses_the_cache_across_turns() {
    let gpu = common::gpu();
    let dir = fixture("tiny-orig");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let model = load(&dir, DType::F32);
    let eos = meta["eos_id"].as_u64().unwrap() as u32;
    let image_token = meta["image_token_id"].as_u64().unwrap() as u32;
    let case = meta["cases"].as_array().unwrap().iter().find(|c| c["name"] == "multi_turn").unwrap();
    let ids: Vec<u32> = case["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let s = model.cfg.image_size();
    let (shape, px) = read_f32(&dir.join(case["pixel_values"].as_str().unwrap()));
    let images: Vec<Tensor> = (0..shape[0]).map(|i| Tensor::from_f32(gpu, &[3, s, s], DType::F32, &px[i * 3 * s * s..(i + 1) * 3 * s * s]).unwrap()).collect();
    // The first turn ends at the first EOS (the end of the first answer).
    let first_turn = ids.iter().position(|&t| t == eos).expect("multi_turn has an answer ending in EOS");
    let want: Vec<u32> = case["greedy_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let opts = |n| GenerateOptions { sampling: Default::default(), max_new_tokens: n, eos: None };
    let mut session = Session::new(&model, gpu, ids.len() + want.len()).unwrap();
    let first_images = images.iter().take(ids[..first_turn].iter().filter(|&&t| t == image_token).count() / model.cfg.num_image_tokens).cloned().collect::<Vec<_>>();
    pollster::block_on(session.respond(gpu, &ids[..first_turn], image_token, &first_images, &opts(1), &mut |_| true)).unwrap();
    assert_eq!(session.prefilled_tokens(), first_turn);
    let got = pollster::block_on(session.respond(gpu, &ids, image_token, &images, &opts(want.len()), &mut |_| true)).unwrap();
    assert!(session.prefilled_tokens() <= ids.len() - first_turn, "prefilled {} of {} tokens", session.prefilled_tokens(), ids.len());
    assert_eq!(got, want, "greedy continuation after reusing the cache");
    assert_eq!(session.cached_tokens(), ids.len() + want.len() - 1);
}
