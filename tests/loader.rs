//! Config parsing, the safetensors reader and weight loading, on small synthetic checkpoints with
//! the real tensor names of both layouts. Values are multiples of 1/16 in [-0.5, 0.5], exact in
//! f32, f16 and bf16, so every read-back must match exactly (f16 weights included).

mod common;

use dsvl_gpu::model::safetensors::{parse, serialize, Bytes};
use dsvl_gpu::model::{load_weights, Layout, ModelConfig, TensorSource};
use dsvl_gpu::ops::convert::Source;
use dsvl_gpu::{DType, Gpu};
use dsvl_gpu::gpu::RowSplit;
use dsvl_gpu::quant::Weight;
use half::{bf16, f16};
use serde_json::{json, Value};

// The tiny model: image 8, patch 4 (4 tokens), width 8, 2 heads, mlp 16, 3 blocks of which
// select_layer -2 keeps 2; aligner 8 -> 16 -> 16; decoder hidden 16, 2 layers, 2 heads (kv 1), vocab 40.
const W: usize = 8;
const P: usize = 4;
const T: usize = 4;
const MLP: usize = 16;
const H: usize = 16;
const I: usize = 24;
const V: usize = 40;
const HD: usize = 8;

fn original_config() -> Value {
    json!({
        "model_type": "multi_modality",
        "vision_config": {"cls": "CLIPVisionTower", "params": {"model_name": "siglip_large_patch16_384", "image_size": 8, "select_feature": "same", "select_layer": -2,
            "width": W, "layers": 3, "heads": 2, "mlp_ratio": 2.0, "patch_size": P}},
        "aligner_config": {"cls": "MlpProjector", "params": {"projector_type": "mlp_gelu", "depth": 2, "input_dim": W, "n_embed": H}},
        "language_config": {"hidden_size": H, "intermediate_size": I, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "vocab_size": V, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 64}
    })
}

fn hf_config() -> Value {
    json!({
        "model_type": "deepseek_vl",
        "image_token_id": 7,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": W, "intermediate_size": MLP, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 8, "patch_size": P, "layer_norm_eps": 1e-6},
        "text_config": {"model_type": "llama", "hidden_size": H, "intermediate_size": I, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "vocab_size": V, "rms_norm_eps": 1e-6, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "max_position_embeddings": 64}
    })
}

/// Deterministic values for a tensor: multiples of 1/16 in [-0.5, 0.5].
fn values(name: &str, n: usize) -> Vec<f32> {
    let seed = name.bytes().fold(17u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    (0..n).map(|i| ((seed.wrapping_add(i as u32 * 7) % 17) as f32 - 8.0) / 16.0).collect()
}

fn encode(v: &[f32], d: Source) -> Vec<u8> {
    match d {
        Source::F32 => bytemuck::cast_slice(v).to_vec(),
        Source::F16 => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
        Source::BF16 => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
        Source::U32 => unreachable!("weights are floats"),
    }
}

/// (name, shape) of every tensor in a checkpoint of the layout, unused ones included.
fn tensor_list(layout: Layout, tie: bool) -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |n: String, s: &[usize]| t.push((n, s.to_vec()));
    match layout {
        Layout::Original => {
            let v = "vision_model.vision_tower";
            add(format!("{v}.patch_embed.proj.weight"), &[W, 3, P, P]);
            add(format!("{v}.patch_embed.proj.bias"), &[W]);
            add(format!("{v}.pos_embed"), &[1, T, W]);
            for i in 0..3 {
                for n in ["norm1", "norm2"] {
                    add(format!("{v}.blocks.{i}.{n}.weight"), &[W]);
                    add(format!("{v}.blocks.{i}.{n}.bias"), &[W]);
                }
                add(format!("{v}.blocks.{i}.attn.qkv.weight"), &[3 * W, W]);
                add(format!("{v}.blocks.{i}.attn.qkv.bias"), &[3 * W]);
                add(format!("{v}.blocks.{i}.attn.proj.weight"), &[W, W]);
                add(format!("{v}.blocks.{i}.attn.proj.bias"), &[W]);
                add(format!("{v}.blocks.{i}.mlp.fc1.weight"), &[MLP, W]);
                add(format!("{v}.blocks.{i}.mlp.fc1.bias"), &[MLP]);
                add(format!("{v}.blocks.{i}.mlp.fc2.weight"), &[W, MLP]);
                add(format!("{v}.blocks.{i}.mlp.fc2.bias"), &[W]);
            }
            add(format!("{v}.norm.weight"), &[W]);
            add(format!("{v}.norm.bias"), &[W]);
            add(format!("{v}.attn_pool.latent"), &[1, 1, W]);
            add(format!("{v}.attn_pool.kv.weight"), &[2 * W, W]);
            add("aligner.layers.0.weight".into(), &[H, W]);
            add("aligner.layers.0.bias".into(), &[H]);
            add("aligner.layers.2.weight".into(), &[H, H]);
            add("aligner.layers.2.bias".into(), &[H]);
        }
        Layout::Hf => {
            let v = "model.vision_model.vision_model";
            add(format!("{v}.embeddings.patch_embedding.weight"), &[W, 3, P, P]);
            add(format!("{v}.embeddings.patch_embedding.bias"), &[W]);
            add(format!("{v}.embeddings.position_embedding.weight"), &[T, W]);
            for i in 0..2 {
                for n in ["layer_norm1", "layer_norm2"] {
                    add(format!("{v}.encoder.layers.{i}.{n}.weight"), &[W]);
                    add(format!("{v}.encoder.layers.{i}.{n}.bias"), &[W]);
                }
                for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    add(format!("{v}.encoder.layers.{i}.self_attn.{p}.weight"), &[W, W]);
                    add(format!("{v}.encoder.layers.{i}.self_attn.{p}.bias"), &[W]);
                }
                add(format!("{v}.encoder.layers.{i}.mlp.fc1.weight"), &[MLP, W]);
                add(format!("{v}.encoder.layers.{i}.mlp.fc1.bias"), &[MLP]);
                add(format!("{v}.encoder.layers.{i}.mlp.fc2.weight"), &[W, MLP]);
                add(format!("{v}.encoder.layers.{i}.mlp.fc2.bias"), &[W]);
            }
            add(format!("{v}.post_layernorm.weight"), &[W]);
            add(format!("{v}.post_layernorm.bias"), &[W]);
            add(format!("{v}.head.probe"), &[1, 1, W]);
            add("model.aligner.linear1.weight".into(), &[H, W]);
            add("model.aligner.linear1.bias".into(), &[H]);
            add("model.aligner.linear2.weight".into(), &[H, H]);
            add("model.aligner.linear2.bias".into(), &[H]);
        }
    }
    let lm = if layout == Layout::Original { "language_model.model" } else { "model.language_model" };
    add(format!("{lm}.embed_tokens.weight"), &[V, H]);
    for i in 0..2 {
        add(format!("{lm}.layers.{i}.input_layernorm.weight"), &[H]);
        add(format!("{lm}.layers.{i}.post_attention_layernorm.weight"), &[H]);
        add(format!("{lm}.layers.{i}.self_attn.q_proj.weight"), &[2 * HD, H]);
        add(format!("{lm}.layers.{i}.self_attn.k_proj.weight"), &[HD, H]);
        add(format!("{lm}.layers.{i}.self_attn.v_proj.weight"), &[HD, H]);
        add(format!("{lm}.layers.{i}.self_attn.o_proj.weight"), &[H, 2 * HD]);
        add(format!("{lm}.layers.{i}.mlp.gate_proj.weight"), &[I, H]);
        add(format!("{lm}.layers.{i}.mlp.up_proj.weight"), &[I, H]);
        add(format!("{lm}.layers.{i}.mlp.down_proj.weight"), &[H, I]);
    }
    add(format!("{lm}.norm.weight"), &[H]);
    if !tie {
        add(if layout == Layout::Original { "language_model.lm_head.weight".into() } else { "lm_head.weight".into() }, &[V, H]);
    }
    t
}

/// A checkpoint file; `edit` may drop or reshape entries first.
fn checkpoint(list: &[(String, Vec<usize>)], d: Source) -> Vec<u8> {
    let data: Vec<Vec<u8>> = list.iter().map(|(n, s)| encode(&values(n, s.iter().product()), d)).collect();
    let entries: Vec<(&str, Source, &[usize], &[u8])> = list.iter().zip(&data).map(|((n, s), b)| (n.as_str(), d, s.as_slice(), b.as_slice())).collect();
    serialize(&entries, &[("format", "pt")])
}

fn config(v: &Value) -> ModelConfig {
    ModelConfig::from_dir_files(&serde_json::to_vec(v).unwrap(), None, None).unwrap()
}

async fn read(gpu: &Gpu, w: &Weight) -> Vec<f32> {
    let s: &RowSplit = w.as_dense().expect("a dense weight");
    let mut out = Vec::new();
    for (_, t) in &s.parts {
        out.extend(gpu.read_f32(t).await.unwrap());
    }
    out
}

#[test]
fn loads_original_layout_from_each_dtype() {
    let gpu = common::gpu();
    let cfg = config(&original_config());
    assert_eq!((cfg.layout, cfg.vision.layers, cfg.vision.mlp_dim, cfg.num_image_tokens), (Layout::Original, 2, MLP, T));
    let list = tensor_list(Layout::Original, false);
    for (src_dtype, wdtype) in [(Source::F32, DType::F32), (Source::F16, DType::F32), (Source::BF16, DType::F32), (Source::BF16, DType::F16), (Source::F32, DType::F16)] {
        let src = TensorSource::from_bytes(vec![("model.safetensors".into(), checkpoint(&list, src_dtype))]).unwrap();
        let mut last = (0, 0);
        let mut calls = 0;
        let w = pollster::block_on(load_weights(gpu, &cfg, &src, wdtype, DType::F32, &mut |d, t| {
            assert!(d > last.0 && d <= t);
            last = (d, t);
            calls += 1;
        }))
        .unwrap();
        // Progress: ends at the total, which is every used tensor (not block 2, not attn_pool).
        let used: usize = list.iter().filter(|(n, _)| !n.contains("blocks.2.") && !n.contains("attn_pool")).map(|(_, s)| s.iter().product::<usize>() * src_dtype.size()).sum();
        assert_eq!(last, (used as u64, used as u64), "{src_dtype:?}");
        assert!(calls > 40);

        let v = "vision_model.vision_tower";
        let check = |got: Vec<f32>, name: &str, n: usize| assert_eq!(got, values(name, n), "{name} from {src_dtype:?} as {wdtype}");
        pollster::block_on(async {
            assert_eq!(w.vision.blocks.len(), 2);
            assert_eq!((w.vision.patch.w.rows(), w.vision.patch.w.cols(), w.vision.patch.w.as_dense().map(|d| d.dtype)), (W, 3 * P * P, Some(wdtype)));
            check(read(gpu, &w.vision.patch.w).await, &format!("{v}.patch_embed.proj.weight"), W * 3 * P * P);
            check(gpu.read_f32(w.vision.patch.b.as_ref().unwrap()).await.unwrap(), &format!("{v}.patch_embed.proj.bias"), W);
            assert_eq!(w.vision.pos_embed.shape(), &[T, W]);
            check(gpu.read_f32(&w.vision.pos_embed).await.unwrap(), &format!("{v}.pos_embed"), T * W);
            check(read(gpu, &w.vision.blocks[1].qkv.w).await, &format!("{v}.blocks.1.attn.qkv.weight"), 3 * W * W);
            check(gpu.read_f32(w.vision.blocks[1].qkv.b.as_ref().unwrap()).await.unwrap(), &format!("{v}.blocks.1.attn.qkv.bias"), 3 * W);
            check(gpu.read_f32(&w.vision.blocks[1].norm2_b).await.unwrap(), &format!("{v}.blocks.1.norm2.bias"), W);
            check(read(gpu, &w.vision.blocks[0].fc2.w).await, &format!("{v}.blocks.0.mlp.fc2.weight"), W * MLP);
            check(gpu.read_f32(&w.vision.norm_w).await.unwrap(), &format!("{v}.norm.weight"), W);
            assert_eq!(w.aligner.layers.len(), 2);
            check(read(gpu, &w.aligner.layers[1].w).await, "aligner.layers.2.weight", H * H);
            check(read(gpu, &w.llm.embed).await, "language_model.model.embed_tokens.weight", V * H);
            // q | k | v and gate | up are stacked into one matrix each, rows in that order.
            let ly = "language_model.model.layers.1";
            let stacked = |parts: &[(&str, usize)]| parts.iter().flat_map(|(n, k)| values(&format!("{ly}.{n}.weight"), *k)).collect::<Vec<f32>>();
            let qkv = stacked(&[("self_attn.q_proj", 2 * HD * H), ("self_attn.k_proj", HD * H), ("self_attn.v_proj", HD * H)]);
            assert_eq!(read(gpu, &w.llm.layers[1].qkv.w).await, qkv, "qkv from {src_dtype:?} as {wdtype}");
            assert!(w.llm.layers[1].qkv.b.is_none());
            assert_eq!(read(gpu, &w.llm.layers[1].gate_up.w).await, stacked(&[("mlp.gate_proj", I * H), ("mlp.up_proj", I * H)]));
            check(gpu.read_f32(&w.llm.layers[1].post_norm).await.unwrap(), "language_model.model.layers.1.post_attention_layernorm.weight", H);
            check(read(gpu, &w.llm.layers[0].down.w).await, "language_model.model.layers.0.mlp.down_proj.weight", H * I);
            check(gpu.read_f32(&w.llm.norm).await.unwrap(), "language_model.model.norm.weight", H);
            check(read(gpu, &w.llm.lm_head).await, "language_model.lm_head.weight", V * H);
        });
    }
}

#[test]
fn loads_hf_layout_concatenating_qkv_and_tying_lm_head() {
    let gpu = common::gpu();
    let cfg = config(&hf_config());
    assert_eq!((cfg.layout, cfg.vision.layers, cfg.llm.tie_embeddings, cfg.image_token_id), (Layout::Hf, 2, true, Some(7)));
    let list = tensor_list(Layout::Hf, true);
    let src = TensorSource::from_bytes(vec![("model.safetensors".into(), checkpoint(&list, Source::BF16))]).unwrap();
    let w = pollster::block_on(load_weights(gpu, &cfg, &src, DType::F16, DType::F16, &mut |_, _| {})).unwrap();
    let v = "model.vision_model.vision_model";
    pollster::block_on(async {
        for b in 0..2 {
            let mut want = Vec::new();
            let mut want_b = Vec::new();
            for p in ["q_proj", "k_proj", "v_proj"] {
                want.extend(values(&format!("{v}.encoder.layers.{b}.self_attn.{p}.weight"), W * W));
                want_b.extend(values(&format!("{v}.encoder.layers.{b}.self_attn.{p}.bias"), W));
            }
            let qkv = &w.vision.blocks[b].qkv;
            assert_eq!((qkv.w.rows(), qkv.w.cols()), (3 * W, W));
            assert_eq!(read(gpu, &qkv.w).await, want, "block {b} qkv rows q|k|v");
            assert_eq!(gpu.read_f32(qkv.b.as_ref().unwrap()).await.unwrap(), want_b);
            assert_eq!(read(gpu, &w.vision.blocks[b].proj.w).await, values(&format!("{v}.encoder.layers.{b}.self_attn.out_proj.weight"), W * W));
        }
        assert_eq!(w.vision.pos_embed.dtype(), DType::F16);
        assert_eq!(gpu.read_f32(&w.vision.pos_embed).await.unwrap(), values(&format!("{v}.embeddings.position_embedding.weight"), T * W));
        assert_eq!(gpu.read_f32(&w.vision.norm_b).await.unwrap(), values(&format!("{v}.post_layernorm.bias"), W));
        assert_eq!(read(gpu, &w.aligner.layers[0].w).await, values("model.aligner.linear1.weight", H * W));
        assert_eq!(read(gpu, &w.llm.layers[0].qkv.w).await[..2 * HD * H], values("model.language_model.layers.0.self_attn.q_proj.weight", 2 * HD * H));
        // Tied: lm_head is the embedding table.
        let embed = values("model.language_model.embed_tokens.weight", V * H);
        assert_eq!(read(gpu, &w.llm.lm_head).await, embed);
    });
}

#[test]
fn sharded_checkpoint_and_open_dir() {
    let gpu = common::gpu();
    let cfg = config(&original_config());
    let list = tensor_list(Layout::Original, false);
    let (a, b) = list.split_at(list.len() / 2);
    let shard_a = checkpoint(a, Source::BF16);
    let shard_b = checkpoint(b, Source::F16);
    let mut map = serde_json::Map::new();
    for (n, _) in a {
        map.insert(n.clone(), json!("model-00001-of-00002.safetensors"));
    }
    for (n, _) in b {
        map.insert(n.clone(), json!("model-00002-of-00002.safetensors"));
    }
    let index = serde_json::to_vec(&json!({"metadata": {"total_size": 0}, "weight_map": map})).unwrap();

    // On disk, memory-mapped.
    let dir = std::env::temp_dir().join(format!("dsvl-loader-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors.index.json"), &index).unwrap();
    std::fs::write(dir.join("model-00001-of-00002.safetensors"), &shard_a).unwrap();
    std::fs::write(dir.join("model-00002-of-00002.safetensors"), &shard_b).unwrap();
    let src = TensorSource::open_dir(&dir).unwrap();
    let w = pollster::block_on(load_weights(gpu, &cfg, &src, DType::F32, DType::F32, &mut |_, _| {})).unwrap();
    assert_eq!(pollster::block_on(read(gpu, &w.llm.lm_head)), values("language_model.lm_head.weight", V * H));
    assert_eq!(src.metadata().count(), 2);

    // A shard named by the index but absent.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let e = TensorSource::open_dir(&dir).err().unwrap().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("missing") && e.contains("model.safetensors.index.json"), "{e}");
    let e = TensorSource::from_index("model.safetensors.index.json", &index, vec![("model-00001-of-00002.safetensors".into(), Bytes::Owned(shard_a.clone()))]).err().unwrap().to_string();
    assert!(e.contains("shard `model-00002-of-00002.safetensors`") && e.contains("missing"), "{e}");
    // An index pointing outside the folder.
    let bad = serde_json::to_vec(&json!({"weight_map": {"x": "../secret.safetensors"}})).unwrap();
    let e = TensorSource::from_index("idx.json", &bad, vec![]).err().unwrap().to_string();
    assert!(e.contains("not a plain file name"), "{e}");
    // A tensor in a shard other than the index says.
    let swapped = index.clone();
    let e = TensorSource::from_index("idx.json", &swapped, vec![("model-00001-of-00002.safetensors".into(), Bytes::Owned(shard_b.clone())), ("model-00002-of-00002.safetensors".into(), Bytes::Owned(shard_a.clone()))]).err().unwrap().to_string();
    assert!(e.contains("index says shard"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
    let e = TensorSource::open_dir(&dir).err().unwrap().to_string();
    assert!(e.contains("neither model.safetensors"), "{e}");
}

/// A raw file from a header (JSON text) and a data length.
fn raw(header: &str, data: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend(std::iter::repeat_n(0u8, data));
    v
}

fn parse_err(bytes: &[u8]) -> String {
    let e = parse("bad.safetensors", bytes).expect_err("must fail").to_string();
    assert!(e.starts_with("bad.safetensors: ") && !e.contains('\n'), "{e}");
    e
}

#[test]
fn hostile_safetensors_files() {
    let ok = raw(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}"#, 8);
    let h = parse("ok", &ok).unwrap();
    assert_eq!(h.tensors[0].range, (ok.len() - 8)..ok.len());
    assert_eq!(h.metadata.get("format").map(String::as_str), Some("pt"));

    let cases: &[(Vec<u8>, &str)] = &[
        (vec![1, 2, 3], "too short"),
        ({
            let mut v = ok.clone();
            v[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
            v
        }, "runs past the end"),
        ({
            let mut v = (u64::MAX).to_le_bytes().to_vec();
            v.extend([b'{'; 16]);
            v
        }, "runs past the end"),
        (raw("{not json", 0), "not valid JSON"),
        (raw("[1,2]", 0), "not valid JSON"),
        (raw(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#, 8), "tensor `a`: data_offsets [0, 16] fall outside the 8 data bytes"),
        (raw(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, 8), "tensor `a`: data_offsets"),
        (raw(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, 12), "data overlaps tensor `a`"),
        (raw(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8), "tensor `a`: shape [3] of F32 needs 12 bytes but data_offsets [0, 8] hold 8"),
        (raw(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#, 8), "needs too many bytes"),
        (raw(r#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, 8), "tensor `a`: dtype I64 is not supported"),
        (raw(r#"{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,8]}}"#, 8), "unknown dtype `Q9`"),
        (raw(r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#, 8), "not a non-negative integer"),
        (raw(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8), "tensor `a`: appears twice"),
        (raw(r#"{"a":{"dtype":"F32","data_offsets":[0,8]}}"#, 8), "tensor `a`: shape is missing"),
        (raw(r#"{"a":{"dtype":"F32","shape":[2]}}"#, 8), "tensor `a`: data_offsets is missing"),
        (raw(r#"{"__metadata__":{"k":1}}"#, 0), "__metadata__.k is not a string"),
    ];
    for (bytes, want) in cases {
        let e = parse_err(bytes);
        assert!(e.contains(want), "expected `{want}` in: {e}");
    }
    // The same tensor in two files of one source.
    let e = TensorSource::from_bytes(vec![("one.safetensors".into(), ok.clone()), ("two.safetensors".into(), ok.clone())]).err().unwrap().to_string();
    assert!(e.contains("two.safetensors: tensor `a`: also in one.safetensors"), "{e}");
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let gpu = common::gpu();
    let cfg = config(&original_config());
    let load = |list: &[(String, Vec<usize>)]| {
        let src = TensorSource::from_bytes(vec![("model.safetensors".into(), checkpoint(list, Source::BF16))]).unwrap();
        pollster::block_on(load_weights(gpu, &cfg, &src, DType::F32, DType::F32, &mut |_, _| panic!("nothing may upload before validation"))).err().unwrap().to_string()
    };
    let full = tensor_list(Layout::Original, false);
    let name = "language_model.model.layers.1.mlp.up_proj.weight";
    let without: Vec<_> = full.iter().filter(|(n, _)| n != name).cloned().collect();
    let e = load(&without);
    assert_eq!(e, format!("model.safetensors: tensor `{name}`: missing"));
    let reshaped: Vec<_> = full.iter().map(|(n, s)| if n == name { (n.clone(), vec![I + 1, H]) } else { (n.clone(), s.clone()) }).collect();
    let e = load(&reshaped);
    assert_eq!(e, format!("model.safetensors: tensor `{name}`: shape [{}, {H}], expected [{I}, {H}]", I + 1));
    let e = load(&tensor_list(Layout::Original, true));
    assert!(e.contains("language_model.lm_head.weight`: missing"), "{e}");
    // A pos_embed in the HF shape inside an original checkpoint.
    let pos = "vision_model.vision_tower.pos_embed";
    let wrong: Vec<_> = full.iter().map(|(n, s)| if n == pos { (n.clone(), vec![T, W]) } else { (n.clone(), s.clone()) }).collect();
    assert!(load(&wrong).contains(&format!("`{pos}`: shape [{T}, {W}], expected [1, {T}, {W}]")));
}

/// The released 1.3B config.json (original layout), abbreviated to the keys that matter.
fn real_13b() -> Value {
    json!({
        "model_type": "multi_modality",
        "aligner_config": {"cls": "MlpProjector", "model_type": "aligner", "params": {"depth": 2, "input_dim": 1024, "n_embed": 2048, "projector_type": "mlp_gelu"}},
        "language_config": {"hidden_size": 2048, "intermediate_size": 5632, "max_position_embeddings": 16384, "model_type": "llama", "num_attention_heads": 16,
            "num_hidden_layers": 24, "num_key_value_heads": 16, "torch_dtype": "bfloat16", "vocab_size": 102400},
        "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision", "params": {"image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same", "select_layer": -1}}
    })
}

#[test]
fn config_values_and_table() {
    let pre = br#"{"image_size": 384, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "min_size": 14}"#;
    let pro = br#"{"num_image_tokens": 576, "add_special_token": false}"#;
    let c = ModelConfig::from_dir_files(&serde_json::to_vec(&real_13b()).unwrap(), Some(pre), Some(pro)).unwrap();
    assert_eq!((c.vision.width, c.vision.layers, c.vision.heads, c.vision.mlp_dim, c.vision.patch_size, c.num_image_tokens), (1024, 24, 16, 4096, 16, 576));
    assert_eq!((c.llm.hidden, c.llm.heads, c.llm.kv_heads, c.llm.head_dim, c.llm.vocab, c.llm.max_positions), (2048, 16, 16, 128, 102400, 16384));
    assert_eq!((c.llm.rms_eps, c.llm.rope_theta, c.llm.tie_embeddings), (1e-6, 10000.0, false));
    assert_eq!((c.aligner.input_dim, c.aligner.n_embed, c.aligner.depth), (1024, 2048, 2));

    let mut so = real_13b();
    so["vision_config"]["params"]["model_name"] = json!("siglip_so400m_patch14_384");
    so["vision_config"]["params"]["select_layer"] = json!(-3);
    so["aligner_config"]["params"]["input_dim"] = json!(1152);
    let c = config(&so);
    // int(1152 * 3.7362) = 4304 as timm computes it; 27 + (-3) + 1 = 25 blocks; 384 px at patch 14 is a 27x27 grid (timm drops the remainder).
    assert_eq!((c.vision.width, c.vision.layers, c.vision.mlp_dim, c.vision.patch_size, c.num_image_tokens), (1152, 25, 4304, 14, 729));
    let mut sel = real_13b();
    sel["vision_config"]["params"]["select_layer"] = json!(5);
    assert_eq!(config(&sel).vision.layers, 5);
    sel["vision_config"]["params"]["select_layer"] = json!(40);
    assert_eq!(config(&sel).vision.layers, 24);
    let mut mean = real_13b();
    mean["vision_config"]["params"]["image_size"] = json!(384);
    let c = ModelConfig::from_dir_files(&serde_json::to_vec(&mean).unwrap(), Some(br#"{"image_mean": [0.1, 0.2, 0.3], "image_std": [1, 2, 3]}"#), None).unwrap();
    assert_eq!((c.vision.image_mean, c.vision.image_std), ([0.1, 0.2, 0.3], [1.0, 2.0, 3.0]));
}

#[test]
fn bad_config_values_name_the_key() {
    type Edit = fn(&mut Value);
    let orig: &[(Edit, &str)] = &[
        (|v| v["language_config"]["hidden_size"] = json!(0), "config.json: config key `language_config.hidden_size`: 0 is out of range"),
        (|v| v["language_config"]["vocab_size"] = json!(-5), "`language_config.vocab_size`: -5 is out of range"),
        (|v| v["language_config"]["vocab_size"] = json!(1e300), "`language_config.vocab_size`"),
        (|v| v["language_config"]["num_hidden_layers"] = json!(1u64 << 40), "`language_config.num_hidden_layers`"),
        (|v| v["language_config"]["num_attention_heads"] = json!(3), "`language_config.num_attention_heads`: 3 heads do not divide hidden_size 2048"),
        (|v| v["language_config"]["num_key_value_heads"] = json!(5), "`language_config.num_key_value_heads`: 5 does not divide"),
        (|v| v["language_config"]["rms_norm_eps"] = json!("tiny"), "`language_config.rms_norm_eps`: expected a number"),
        (|v| v["language_config"]["rope_scaling"] = json!({"type": "linear", "factor": 2.0}), "`language_config.rope_scaling.rope_type`: `linear`"),
        (|v| v["language_config"]["hidden_act"] = json!("relu"), "`language_config.hidden_act`"),
        (|v| v["vision_config"]["params"]["model_name"] = json!("vit_huge"), "`vision_config.params.model_name`: `vit_huge` is unknown"),
        (|v| v["vision_config"]["params"]["heads"] = json!(7), "`vision_config.params.heads`: 7 heads do not divide width 1024"),
        (|v| v["vision_config"]["params"]["patch_size"] = json!(385), "`vision_config.params.patch_size`: 385 exceeds image_size 384"),
        (|v| v["vision_config"]["params"]["mlp_ratio"] = json!(-1.0), "`vision_config.params.mlp_ratio`"),
        (|v| v["vision_config"]["params"]["select_layer"] = json!(-25), "`vision_config.params.select_layer`: -25 leaves no block"),
        (|v| v["vision_config"]["params"]["select_feature"] = json!("cls_patch"), "`vision_config.params.select_feature`"),
        (|v| v["vision_config"]["cls"] = json!("SamTower"), "`vision_config.cls`"),
        (|v| v["vision_config"]["cls"] = json!("HybridVisionTower"), "`vision_config.params.high_res_cfg`: missing"),
        (|v| v["aligner_config"]["params"]["input_dim"] = json!(512), "`aligner_config.params.input_dim`: 512 disagrees with the vision width 1024"),
        (|v| v["aligner_config"]["params"]["n_embed"] = json!(1024), "`aligner_config.params.n_embed`: 1024 disagrees"),
        (|v| v["aligner_config"]["params"]["projector_type"] = json!("low_high_hybrid_split_mlp_gelu"), "`aligner_config.params.projector_type`"),
        (|v| v["model_type"] = json!("llava"), "`model_type`: `llava` is not a DeepSeek-VL model"),
        (|v| { v.as_object_mut().unwrap().remove("language_config"); }, "`language_config`: missing"),
        (|v| v["vision_config"] = json!([1]), "`vision_config`: expected an object"),
    ];
    for (edit, want) in orig {
        let mut v = real_13b();
        edit(&mut v);
        let e = ModelConfig::from_dir_files(&serde_json::to_vec(&v).unwrap(), None, None).expect_err(want).to_string();
        assert!(e.contains(want) && e.starts_with("config.json: config key `") && !e.contains('\n'), "expected `{want}` in: {e}");
    }
    let hf: &[(Edit, &str)] = &[
        (|v| v["vision_config"]["hidden_size"] = json!(9), "`vision_config.num_attention_heads`: 2 heads do not divide width 9"),
        (|v| v["text_config"]["rope_parameters"]["rope_type"] = json!("yarn"), "`text_config.rope_parameters.rope_type`"),
        (|v| v["image_token_id"] = json!(4000), "`image_token_id`: 4000 is not a token id below vocab_size 40"),
        (|v| v["model_type"] = json!("deepseek_vl_hybrid"), "`high_res_vision_config`: missing"),
    ];
    for (edit, want) in hf {
        let mut v = hf_config();
        edit(&mut v);
        let e = ModelConfig::from_dir_files(&serde_json::to_vec(&v).unwrap(), None, None).expect_err(want).to_string();
        assert!(e.contains(want), "expected `{want}` in: {e}");
    }
    let c = serde_json::to_vec(&real_13b()).unwrap();
    type Case<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a str);
    let cases: [Case; 5] = [
        (Some(b"{"), None, "preprocessor_config.json: config key `(top level)`: invalid JSON"),
        (Some(br#"{"image_mean": [0.5, 0.5]}"#), None, "preprocessor_config.json: config key `image_mean`: expected three finite numbers"),
        (Some(br#"{"image_std": [0.5, 0, 0.5]}"#), None, "`image_std`: expected three finite positive numbers"),
        (Some(br#"{"image_size": 224}"#), None, "`image_size`: 224 disagrees with the vision tower's image_size 384"),
        (None, Some(br#"{"num_image_tokens": 577}"#), "processor_config.json: config key `num_image_tokens`: 577 disagrees"),
    ];
    for (pre, pro, want) in cases {
        let e = ModelConfig::from_dir_files(&c, pre, pro).expect_err(want).to_string();
        assert!(e.contains(want), "expected `{want}` in: {e}");
    }
    let e = ModelConfig::from_dir_files(b"\xff\xfe", None, None).err().unwrap().to_string();
    assert!(e.starts_with("config.json: config key `(top level)`: invalid JSON"), "{e}");
}

/// The HF-generated fixtures (tests/fixtures/dsvl/*, made by the fixture generator with
/// transformers): each folder's config and every tensor it uses must load. Skipped, with a
/// message, while those fixtures are not in this checkout. DSVL_FIXTURES overrides the folder.
#[test]
fn generated_fixtures_load() {
    let root = std::env::var("DSVL_FIXTURES").map(std::path::PathBuf::from).unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsvl"));
    let gpu = common::gpu();
    let mut seen = 0;
    for name in ["tiny-orig", "tiny-hf", "vocab-orig"] {
        let dir = root.join(name);
        let Ok(config) = std::fs::read(dir.join("config.json")) else { continue };
        let pre = std::fs::read(dir.join("preprocessor_config.json")).ok();
        let pro = std::fs::read(dir.join("processor_config.json")).ok();
        let cfg = ModelConfig::from_dir_files(&config, pre.as_deref(), pro.as_deref()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let src = TensorSource::open_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut last = (0, 1);
        let w = pollster::block_on(load_weights(gpu, &cfg, &src, DType::F32, DType::F32, &mut |d, t| last = (d, t))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(last.0, last.1);
        assert_eq!((w.vision.blocks.len(), w.llm.layers.len(), w.llm.lm_head.rows()), (cfg.vision.layers, cfg.llm.layers, cfg.llm.vocab));
        eprintln!("{name}: {:?} layout, vision {}x{} ({} tokens), llm {}x{} vocab {}, {} bytes", cfg.layout, cfg.vision.layers, cfg.vision.width, cfg.num_image_tokens, cfg.llm.layers, cfg.llm.hidden, cfg.llm.vocab, last.1);
        seen += 1;
    }
    if seen == 0 {
        eprintln!("generated_fixtures_load: no fixtures under {}; skipped", root.display());
    }
}

/// Quantising at load from bf16 (the released checkpoints' dtype), on the GPU: every matrix's
/// codes and scales are the CPU path's, bit for bit, on values full of exact ties (multiples of
/// 1/16); a tied head in another format than the table reads the table twice, and both
/// progress stages count it in their totals.
#[test]
fn quantised_at_load_from_bf16_gpu_equals_cpu_with_a_tied_head() {
    use dsvl_gpu::model::weights::{load_weights_opts, LoadOptions, LoadProgress};
    use dsvl_gpu::quant::{QuantOn, Recipe};
    let gpu = common::gpu();
    let cfg = config(&hf_config());
    let src = TensorSource::from_bytes(vec![("model.safetensors".into(), checkpoint(&tensor_list(Layout::Hf, true), Source::BF16))]).unwrap();
    let recipe = Recipe::parse("q4,embed=f16,lm_head=q8").unwrap();
    let load = |on| {
        let mut seen = Vec::new();
        let w = pollster::block_on(load_weights_opts(gpu, &cfg, &src, &recipe, DType::F32, &LoadOptions { quantise_on: on }, &mut |p| seen.push(p.clone()))).unwrap();
        (w, seen)
    };
    let read_all = |w: &dsvl_gpu::model::Weights| -> Vec<(Vec<u32>, Vec<u32>)> {
        w.matrices()
            .into_iter()
            .filter_map(|(_, m)| match m {
                Weight::Quant(q) => Some(q.parts.iter().map(|p| (pollster::block_on(gpu.read_u32(&p.codes)).unwrap(), pollster::block_on(gpu.read_u32(&p.scales)).unwrap())).fold((Vec::new(), Vec::new()), |(mut c, mut s), (pc, ps)| {
                    c.extend(pc);
                    s.extend(ps);
                    (c, s)
                })),
                Weight::Dense(_) => None,
            })
            .collect()
    };
    let (wg, seen) = load(QuantOn::Gpu);
    let (wc, _) = load(QuantOn::Cpu);
    assert!(matches!(wg.llm.embed, Weight::Dense(_)) && matches!(wg.llm.lm_head, Weight::Quant(_)));
    let (g, c) = (read_all(&wg), read_all(&wc));
    // Vision: patch + 2 x (qkv, out, fc1, fc2); aligner 2; decoder 2 x (qkv, o, gate|up, down); head.
    assert_eq!((g.len(), c.len()), (20, 20));
    for (i, (a, b)) in g.iter().zip(&c).enumerate() {
        assert!(a == b, "matrix {i}: GPU and CPU quantisation differ");
    }
    let last_upload = seen.iter().rev().find_map(|p| if let LoadProgress::Upload { done, total } = p { Some((*done, *total)) } else { None }).unwrap();
    assert_eq!(last_upload.0, last_upload.1, "upload progress");
    let Some(LoadProgress::Quantise { done, total, tensors, tensors_total, on, .. }) = seen.iter().rev().find(|p| matches!(p, LoadProgress::Quantise { .. })).cloned() else { panic!("no quantise stage") };
    // Tensors: patch, 2 x (q, k, v, out, fc1, fc2), 2 aligner, 2 x (q, k, v, o, gate, up, down), the table again.
    assert_eq!((done, tensors, tensors_total, on), (total, 30, 30, QuantOn::Gpu));
}
