//! GPU faults: a device lost in the middle of generation (a typed error; a new device answers
//! again), and a load that fails part way (a typed error naming the tensor, nothing left on the
//! GPU). A real out-of-memory cannot be provoked safely on lavapipe (its device memory is host
//! memory); a binding limit fails at the same point of the load and takes the same path.

use std::path::Path;

use dsvl_gpu::generate::GenerateOptions;
use dsvl_gpu::model::config::ModelConfig;
use dsvl_gpu::model::safetensors::{serialize, TensorSource};
use dsvl_gpu::ops::convert::Source;
use dsvl_gpu::model::vlm::Model;
use dsvl_gpu::model::weights::load_weights;
use dsvl_gpu::ops::sample::Sampling;
use dsvl_gpu::prompt::{encode, Conversation, PromptTokenizer};
use dsvl_gpu::{DType, Error, Gpu, GpuOptions};

fn open() -> Gpu {
    pollster::block_on(Gpu::new(&GpuOptions::from_env())).expect("a GPU adapter for tests")
}

fn load(gpu: &Gpu, dir: &Path) -> Result<Model, Error> {
    let read = |f: &str| std::fs::read(dir.join(f)).ok();
    let cfg = ModelConfig::from_dir_files(&read("config.json").unwrap(), read("preprocessor_config.json").as_deref(), read("processor_config.json").as_deref())?;
    let src = TensorSource::open_dir(dir)?;
    let w = pollster::block_on(load_weights(gpu, &cfg, &src, DType::F32, DType::F32, &mut |_, _| {}))?;
    Model::new(gpu, cfg, w, DType::F32)
}

fn tiny() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dsvl/tiny-orig"))
}

fn opts(n: usize) -> GenerateOptions {
    GenerateOptions { sampling: Sampling::default(), max_new_tokens: n, eos: None }
}

#[test]
fn device_lost_mid_generation_is_an_error_and_a_new_device_answers() {
    let tok = PromptTokenizer::from_dir(tiny()).unwrap();
    let mut conv = Conversation::new();
    conv.user("Hello there", 0);
    let gpu = open();
    let model = load(&gpu, tiny()).unwrap();
    let enc = encode(&tok, &conv, model.cfg.num_image_tokens).unwrap();
    let want = pollster::block_on(model.generate(&gpu, &enc.ids, tok.image_id(), &[], &opts(6), &mut |_| true)).unwrap();
    let mut n = 0;
    let r = pollster::block_on(model.generate(&gpu, &enc.ids, tok.image_id(), &[], &opts(6), &mut |_| {
        n += 1;
        if n == 2 {
            gpu.device.destroy();
        }
        true
    }));
    assert!(matches!(&r, Err(Error::DeviceLost(_))), "mid-generation: {r:?}");
    assert!(gpu.lost().is_some());
    // The same device stays lost, and says so.
    let r = pollster::block_on(model.generate(&gpu, &enc.ids, tok.image_id(), &[], &opts(6), &mut |_| true));
    let e = r.expect_err("a lost device cannot answer").to_string();
    assert!(e.starts_with("GPU device lost: Destroyed") && !e.contains('\n'), "{e}");
    // What a caller does then (`dsvl-gpu chat` does it): a new device, the model again.
    drop(model);
    drop(gpu);
    let gpu = open();
    let model = load(&gpu, tiny()).unwrap();
    let again = pollster::block_on(model.generate(&gpu, &enc.ids, tok.image_id(), &[], &opts(6), &mut |_| true)).unwrap();
    assert_eq!(again, want);
}

/// A small original-layout model whose MLP rows (intermediate 65536 floats, 256 KiB) exceed a 128 KiB
/// binding while everything loaded before them fits: the load fails part way.
fn wide_mlp_model() -> (ModelConfig, TensorSource) {
    let (w, p, t, mlp, n, h, inter, vocab) = (8, 2, 16, 32, 16, 16, 65536, 64);
    let cfg = serde_json::json!({
        "model_type": "multi_modality",
        "vision_config": {"params": {"model_name": "custom", "image_size": 8, "patch_size": p, "width": w, "layers": 1, "heads": 2, "mlp_ratio": 4}},
        "aligner_config": {"params": {"depth": 2, "input_dim": w, "n_embed": n}},
        "language_config": {"hidden_size": h, "num_attention_heads": 2, "num_hidden_layers": 2, "intermediate_size": inter, "vocab_size": vocab}
    });
    let cfg = ModelConfig::from_dir_files(&serde_json::to_vec(&cfg).unwrap(), None, None).unwrap();
    let v = |s: &str| format!("vision_model.vision_tower.{s}");
    let mut list: Vec<(String, Vec<usize>)> = vec![(v("patch_embed.proj.weight"), vec![w, 3, p, p]), (v("patch_embed.proj.bias"), vec![w]), (v("pos_embed"), vec![1, t, w])];
    for (s, shape) in [("norm1.weight", vec![w]), ("norm1.bias", vec![w]), ("norm2.weight", vec![w]), ("norm2.bias", vec![w]), ("attn.qkv.weight", vec![3 * w, w]), ("attn.qkv.bias", vec![3 * w]), ("attn.proj.weight", vec![w, w]), ("attn.proj.bias", vec![w]), ("mlp.fc1.weight", vec![mlp, w]), ("mlp.fc1.bias", vec![mlp]), ("mlp.fc2.weight", vec![w, mlp]), ("mlp.fc2.bias", vec![w])] {
        list.push((v(&format!("blocks.0.{s}")), shape));
    }
    list.extend([(v("norm.weight"), vec![w]), (v("norm.bias"), vec![w])]);
    list.extend([("aligner.layers.0.weight".into(), vec![n, w]), ("aligner.layers.0.bias".into(), vec![n]), ("aligner.layers.2.weight".into(), vec![n, n]), ("aligner.layers.2.bias".into(), vec![n])]);
    let l = |s: &str| format!("language_model.model.{s}");
    list.push((l("embed_tokens.weight"), vec![vocab, h]));
    for i in 0..2 {
        for (s, shape) in [("input_layernorm", vec![h]), ("self_attn.q_proj", vec![h, h]), ("self_attn.k_proj", vec![h, h]), ("self_attn.v_proj", vec![h, h]), ("self_attn.o_proj", vec![h, h]), ("post_attention_layernorm", vec![h]), ("mlp.gate_proj", vec![inter, h]), ("mlp.up_proj", vec![inter, h]), ("mlp.down_proj", vec![h, inter])] {
            list.push((l(&format!("layers.{i}.{s}.weight")), shape));
        }
    }
    list.extend([(l("norm.weight"), vec![h]), ("language_model.lm_head.weight".into(), vec![vocab, h])]);
    let data: Vec<Vec<u8>> = list.iter().map(|(_, s)| vec![0u8; 2 * s.iter().product::<usize>()]).collect();
    let tensors: Vec<_> = list.iter().zip(&data).map(|((name, shape), d)| (name.as_str(), Source::F16, shape.as_slice(), d.as_slice())).collect();
    let file = serialize(&tensors, &[]);
    (cfg, TensorSource::from_bytes(vec![("wide.safetensors".into(), file)]).unwrap())
}

#[test]
fn a_load_that_fails_part_way_frees_what_it_uploaded() {
    let gpu = pollster::block_on(Gpu::new(&GpuOptions { max_binding: Some(128 << 10), ..GpuOptions::from_env() })).unwrap();
    let before = gpu.pool_stats().live_bytes;
    let (cfg, src) = wide_mlp_model();
    let mut uploaded = 0;
    let e = pollster::block_on(load_weights(&gpu, &cfg, &src, DType::F32, DType::F32, &mut |done, _| uploaded = done)).err().expect("256 KiB rows in a 128 KiB binding");
    let msg = e.to_string();
    assert!(matches!(e, Error::BindingLimit { .. }) && msg.contains("tensor `language_model.model.layers.0.mlp.down_proj.weight` in wide.safetensors"), "{msg}");
    assert!(uploaded > 0, "the failure should come part way through");
    // Every tensor uploaded before the failure is gone again.
    assert_eq!(gpu.pool_stats().live_bytes, before, "GPU memory left behind by the failed load");
    // The same device loads and runs a model that fits.
    let tok = PromptTokenizer::from_dir(tiny()).unwrap();
    let model = load(&gpu, tiny()).unwrap();
    let mut conv = Conversation::new();
    conv.user("Hello there", 0);
    let enc = encode(&tok, &conv, model.cfg.num_image_tokens).unwrap();
    let ids = pollster::block_on(model.generate(&gpu, &enc.ids, tok.image_id(), &[], &opts(3), &mut |_| true)).unwrap();
    assert_eq!(ids.len(), 3);
}
