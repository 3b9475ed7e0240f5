//! Opens every DeepSeek-VL reference fixture (tests/fixtures/dsvl, made by gen_dsvl.py) and checks that the
//! files parse and agree with each other: tensor names and shapes against config.json, cases.json against
//! the tokenizer, the .npy arrays and the greedy tokens, and tiny-hf against tiny-orig byte for byte.
//! No GPU needed.

#[path = "common/npy.rs"]
mod npy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use npy::Npy;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsvl")
}

fn json(path: &Path) -> Value {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn u(v: &Value, key: &str) -> usize {
    v[key].as_u64().unwrap_or_else(|| panic!("no integer {key:?} in {v}")) as usize
}

/// A safetensors file: name -> (dtype, shape, bytes).
type Tensors = BTreeMap<String, (String, Vec<usize>, Vec<u8>)>;

fn safetensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors header JSON");
    let data = &bytes[8 + n..];
    let mut out = Tensors::new();
    let mut covered = 0;
    for (name, t) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t["dtype"].as_str().unwrap().to_string();
        let shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let off = t["data_offsets"].as_array().unwrap();
        let (a, b) = (off[0].as_u64().unwrap() as usize, off[1].as_u64().unwrap() as usize);
        assert_eq!(dtype, "F16", "{name}: weights are stored as f16");
        assert_eq!(b - a, shape.iter().product::<usize>() * 2, "{name}: byte range vs shape {shape:?}");
        assert!(b <= data.len(), "{name}: data range past the end of {}", path.display());
        covered += b - a;
        out.insert(name.clone(), (dtype, shape, data[a..b].to_vec()));
    }
    assert_eq!(covered, data.len(), "{}: tensors do not tile the data section", path.display());
    out
}

/// Model dimensions, read from either config layout.
#[derive(Debug, PartialEq)]
struct Dims {
    width: usize,
    vis_layers: usize,
    heads: usize,
    mlp: usize,
    patch: usize,
    image: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
    n_heads: usize,
    n_kv: usize,
    vocab: usize,
}

fn dims_original(c: &Value) -> Dims {
    assert_eq!(c["model_type"], "multi_modality");
    let v = &c["vision_config"]["params"];
    assert_eq!(c["vision_config"]["cls"], "CLIPVisionTower");
    assert_eq!(v["model_name"], "siglip_large_patch16_384");
    let a = &c["aligner_config"]["params"];
    assert_eq!((a["projector_type"].as_str(), a["depth"].as_u64()), (Some("mlp_gelu"), Some(2)));
    let l = &c["language_config"];
    let width = u(v, "width");
    let total = u(v, "layers");
    let sel = v["select_layer"].as_i64().unwrap();
    let vis_layers =
        if sel <= 0 { (total as i64 + sel + 1).min(total as i64) as usize } else { total.min(sel as usize) };
    let d = Dims {
        width,
        vis_layers,
        heads: u(v, "heads"),
        mlp: (width as f64 * v["mlp_ratio"].as_f64().unwrap()) as usize,
        patch: u(v, "patch_size"),
        image: u(v, "image_size"),
        hidden: u(l, "hidden_size"),
        inter: u(l, "intermediate_size"),
        layers: u(l, "num_hidden_layers"),
        n_heads: u(l, "num_attention_heads"),
        n_kv: u(l, "num_key_value_heads"),
        vocab: u(l, "vocab_size"),
    };
    assert_eq!((u(a, "input_dim"), u(a, "n_embed")), (d.width, d.hidden));
    d
}

fn dims_hf(c: &Value) -> Dims {
    assert_eq!(c["model_type"], "deepseek_vl");
    let v = &c["vision_config"];
    let l = &c["text_config"];
    Dims {
        width: u(v, "hidden_size"),
        vis_layers: u(v, "num_hidden_layers"),
        heads: u(v, "num_attention_heads"),
        mlp: u(v, "intermediate_size"),
        patch: u(v, "patch_size"),
        image: u(v, "image_size"),
        hidden: u(l, "hidden_size"),
        inter: u(l, "intermediate_size"),
        layers: u(l, "num_hidden_layers"),
        n_heads: u(l, "num_attention_heads"),
        n_kv: u(l, "num_key_value_heads"),
        vocab: u(l, "vocab_size"),
    }
}

/// Every tensor a loader needs, with its shape, in the original layout.
fn expected_original(d: &Dims) -> BTreeMap<String, Vec<usize>> {
    let (w, h, hd) = (d.width, d.hidden, d.hidden / d.n_heads);
    let n = (d.image / d.patch).pow(2);
    let mut m = BTreeMap::new();
    let vt = "vision_model.vision_tower.";
    m.insert(format!("{vt}patch_embed.proj.weight"), vec![w, 3, d.patch, d.patch]);
    m.insert(format!("{vt}patch_embed.proj.bias"), vec![w]);
    m.insert(format!("{vt}pos_embed"), vec![1, n, w]);
    for i in 0..d.vis_layers {
        let b = format!("{vt}blocks.{i}.");
        for (k, s) in [
            ("norm1.weight", vec![w]),
            ("norm1.bias", vec![w]),
            ("norm2.weight", vec![w]),
            ("norm2.bias", vec![w]),
            ("attn.qkv.weight", vec![3 * w, w]),
            ("attn.qkv.bias", vec![3 * w]),
            ("attn.proj.weight", vec![w, w]),
            ("attn.proj.bias", vec![w]),
            ("mlp.fc1.weight", vec![d.mlp, w]),
            ("mlp.fc1.bias", vec![d.mlp]),
            ("mlp.fc2.weight", vec![w, d.mlp]),
            ("mlp.fc2.bias", vec![w]),
        ] {
            m.insert(format!("{b}{k}"), s);
        }
    }
    m.insert(format!("{vt}norm.weight"), vec![w]);
    m.insert(format!("{vt}norm.bias"), vec![w]);
    m.insert("aligner.layers.0.weight".into(), vec![h, w]);
    m.insert("aligner.layers.0.bias".into(), vec![h]);
    m.insert("aligner.layers.2.weight".into(), vec![h, h]);
    m.insert("aligner.layers.2.bias".into(), vec![h]);
    let lm = "language_model.model.";
    m.insert(format!("{lm}embed_tokens.weight"), vec![d.vocab, h]);
    for i in 0..d.layers {
        let b = format!("{lm}layers.{i}.");
        for (k, s) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![d.n_heads * hd, h]),
            ("self_attn.k_proj.weight", vec![d.n_kv * hd, h]),
            ("self_attn.v_proj.weight", vec![d.n_kv * hd, h]),
            ("self_attn.o_proj.weight", vec![h, d.n_heads * hd]),
            ("mlp.gate_proj.weight", vec![d.inter, h]),
            ("mlp.up_proj.weight", vec![d.inter, h]),
            ("mlp.down_proj.weight", vec![h, d.inter]),
        ] {
            m.insert(format!("{b}{k}"), s);
        }
    }
    m.insert(format!("{lm}norm.weight"), vec![h]);
    m.insert("language_model.lm_head.weight".into(), vec![d.vocab, h]);
    m
}

/// Original name -> HF (deepseek-community) names; the fused qkv maps to three.
fn to_hf(name: &str) -> Vec<String> {
    let vt = "vision_model.vision_tower.";
    let hv = "model.vision_model.vision_model.";
    if let Some(r) = name.strip_prefix(vt) {
        if let Some(s) = r.strip_prefix("patch_embed.proj.") {
            return vec![format!("{hv}embeddings.patch_embedding.{s}")];
        }
        if r == "pos_embed" {
            return vec![format!("{hv}embeddings.position_embedding.weight")];
        }
        if let Some(s) = r.strip_prefix("norm.") {
            return vec![format!("{hv}post_layernorm.{s}")];
        }
        let r = r.strip_prefix("blocks.").unwrap();
        let (i, rest) = r.split_once('.').unwrap();
        let b = format!("{hv}encoder.layers.{i}.");
        if let Some(s) = rest.strip_prefix("attn.qkv.") {
            return ["q", "k", "v"].iter().map(|x| format!("{b}self_attn.{x}_proj.{s}")).collect();
        }
        let rest = rest
            .replace("norm1.", "layer_norm1.")
            .replace("norm2.", "layer_norm2.")
            .replace("attn.proj.", "self_attn.out_proj.");
        return vec![format!("{b}{rest}")];
    }
    if let Some(s) = name.strip_prefix("aligner.layers.0.") {
        return vec![format!("model.aligner.linear1.{s}")];
    }
    if let Some(s) = name.strip_prefix("aligner.layers.2.") {
        return vec![format!("model.aligner.linear2.{s}")];
    }
    if let Some(s) = name.strip_prefix("language_model.model.") {
        return vec![format!("model.language_model.{s}")];
    }
    assert_eq!(name, "language_model.lm_head.weight");
    vec!["lm_head.weight".into()]
}

fn check_original(dir: &Path) -> (Dims, Tensors) {
    let d = dims_original(&json(&dir.join("config.json")));
    let t = safetensors(&dir.join("model.safetensors"));
    let want = expected_original(&d);
    let pool: Vec<_> = t.keys().filter(|k| k.starts_with("vision_model.vision_tower.attn_pool.")).collect();
    assert!(!pool.is_empty(), "{}: the unused attn_pool tensors are part of the fixture", dir.display());
    let have: BTreeSet<_> = t.keys().filter(|k| !k.contains(".attn_pool.")).cloned().collect();
    assert_eq!(have, want.keys().cloned().collect::<BTreeSet<_>>(), "{}: tensor names", dir.display());
    for (k, s) in &want {
        assert_eq!(&t[k].1, s, "{}: shape of {k}", dir.display());
    }
    (d, t)
}

fn argmax_top2(x: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &v) in x.iter().enumerate() {
        if v > best.1 {
            second = best.1;
            best = (i, v);
        } else if v > second {
            second = v;
        }
    }
    (best.0, best.1 - second)
}

fn check_cases(dir: &Path, d: &Dims) {
    let cases = json(&dir.join("cases.json"));
    let proc_ = json(&dir.join("processor_config.json"));
    let pre = json(&dir.join("preprocessor_config.json"));
    let n_img_tok = (d.image / d.patch).pow(2);
    assert_eq!(u(&proc_, "num_image_tokens"), n_img_tok);
    assert_eq!(u(&cases, "num_image_tokens"), n_img_tok);
    assert_eq!(u(&pre, "image_size"), d.image);
    assert_eq!(u(&cases, "vocab_size"), d.vocab);
    let (bos, eos, img) = (u(&cases, "bos_id"), u(&cases, "eos_id"), u(&cases, "image_token_id"));

    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).expect("tokenizer.json loads");
    assert_eq!(tok.token_to_id("<｜begin▁of▁sentence｜>"), Some(bos as u32));
    assert_eq!(tok.token_to_id("<｜end▁of▁sentence｜>"), Some(eos as u32));
    assert_eq!(tok.token_to_id("<image_placeholder>"), Some(img as u32));
    assert_eq!(tok.get_vocab_size(true), d.vocab);

    let list = cases["cases"].as_array().unwrap();
    assert!(list.len() >= 3);
    for c in list {
        let name = c["name"].as_str().unwrap();
        let ctx = format!("{}/{name}", dir.display());
        let ids: Vec<usize> = c["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let n_img = u(c, "num_images");
        // Our Rust tokenizer reproduces the Python one, then each image token expands.
        let enc = tok.encode(c["prompt"].as_str().unwrap(), true).expect("encode");
        let mut expanded = Vec::new();
        for &i in enc.get_ids() {
            let n = if i as usize == img { n_img_tok } else { 1 };
            expanded.extend(std::iter::repeat_n(i as usize, n));
        }
        assert_eq!(expanded, ids, "{ctx}: input_ids vs tokenizers crate");
        assert_eq!(ids[0], bos, "{ctx}");
        assert_eq!(ids.iter().filter(|&&i| i == img).count(), n_img * n_img_tok, "{ctx}");
        assert!(ids.iter().all(|&i| i < d.vocab), "{ctx}");

        if n_img > 0 {
            let px = Npy::read(dir.join(c["pixel_values"].as_str().unwrap())).unwrap();
            assert_eq!(px.shape, vec![n_img, 3, d.image, d.image], "{ctx}: pixel_values");
            assert!(px.f32().unwrap().iter().all(|v| (-1.0..=1.0).contains(v)), "{ctx}: pixels in [-1, 1]");
            assert_eq!(c["images"].as_array().unwrap().len(), n_img);
            for p in c["images"].as_array().unwrap() {
                assert!(dir.join(p.as_str().unwrap()).is_file(), "{ctx}: image {p}");
            }
        } else {
            assert!(c.get("pixel_values").is_none(), "{ctx}");
        }

        let last = Npy::read(dir.join(c["logits_last"].as_str().unwrap())).unwrap();
        assert_eq!(last.shape, vec![d.vocab], "{ctx}: logits_last");
        let last = last.f32().unwrap();
        assert!(last.iter().all(|v| v.is_finite()), "{ctx}");
        if let Some(p) = c.get("logits_all") {
            let all = Npy::read(dir.join(p.as_str().unwrap())).unwrap();
            assert_eq!(all.shape, vec![ids.len(), d.vocab], "{ctx}: logits_all");
            let all = all.f32().unwrap();
            assert_eq!(&all[(ids.len() - 1) * d.vocab..], &last[..], "{ctx}: last row of logits_all");
        }
        let greedy: Vec<usize> =
            c["greedy_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        let margins: Vec<f64> = c["greedy_margins"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!((greedy.len(), margins.len()), (8, 8), "{ctx}");
        assert!(margins.iter().all(|&m| m >= 0.0), "{ctx}");
        let (top, margin) = argmax_top2(&last);
        assert_eq!(top, greedy[0], "{ctx}: first greedy token is the argmax of logits_last");
        assert!((margin as f64 - margins[0]).abs() < 1e-3, "{ctx}: margin {margin} vs {}", margins[0]);
    }
}

#[test]
fn tiny_orig_fixture_is_consistent() {
    let dir = root().join("tiny-orig");
    let (d, _) = check_original(&dir);
    assert_eq!(d.width / d.heads, 64);
    assert_eq!(d.hidden / d.n_heads, 128);
    check_cases(&dir, &d);
}

#[test]
fn tiny_hf_fixture_matches_tiny_orig() {
    let (d, orig) = check_original(&root().join("tiny-orig"));
    let dir = root().join("tiny-hf");
    assert_eq!(dims_hf(&json(&dir.join("config.json"))), d);
    let hf = safetensors(&dir.join("model.safetensors"));
    let mut used = BTreeSet::new();
    for (name, (_, shape, bytes)) in orig.iter().filter(|(k, _)| !k.contains(".attn_pool.")) {
        let names = to_hf(name);
        let mut cat = Vec::new();
        for n in &names {
            let t = hf.get(n).unwrap_or_else(|| panic!("tiny-hf has no {n} (for {name})"));
            cat.extend_from_slice(&t.2);
            used.insert(n.clone());
        }
        assert_eq!(&cat, bytes, "{name}: same f16 values in both layouts");
        if name.ends_with("pos_embed") {
            assert_eq!(hf[&names[0]].1, shape[1..].to_vec());
        }
    }
    assert_eq!(used.len(), hf.len(), "tiny-hf has tensors tiny-orig lacks");
    check_cases(&dir, &d);
    // Same weights, so the same reference numbers.
    assert_eq!(
        std::fs::read(dir.join("one_image.logits_all.npy")).unwrap(),
        std::fs::read(root().join("tiny-orig/one_image.logits_all.npy")).unwrap()
    );
}

#[test]
fn vocab_orig_fixture_is_consistent() {
    let dir = root().join("vocab-orig");
    let (d, _) = check_original(&dir);
    assert_eq!((d.vocab, d.hidden, d.n_heads), (102400, 32, 1));
    let cases = json(&dir.join("cases.json"));
    assert_eq!((u(&cases, "bos_id"), u(&cases, "eos_id"), u(&cases, "image_token_id")), (100000, 100001, 100015));
    check_cases(&dir, &d);
}

#[test]
fn fixture_images_decode() {
    for name in ["wide.png", "tall.png", "big.png"] {
        let img = image::open(root().join("images").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(img.width() > 0 && img.height() > 0);
    }
}
