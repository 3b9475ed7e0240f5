//! Opens every DeepSeek-VL reference fixture (tests/fixtures/dsvl, made by gen_dsvl.py and gen_dsvl_hybrid.py)
//! and checks that the files parse and agree with each other: tensor names and shapes against config.json,
//! cases.json against the tokenizer, the .npy arrays and the greedy tokens, and each HF-layout folder against
//! its original-layout twin byte for byte.
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
    assert_eq!(c["vision_config"]["cls"], "CLIPVisionTower");
    let a = &c["aligner_config"]["params"];
    assert_eq!((a["projector_type"].as_str(), a["depth"].as_u64()), (Some("mlp_gelu"), Some(2)));
    let d = siglip_llama_dims(&c["vision_config"]["params"], &c["language_config"]);
    assert_eq!((u(a, "input_dim"), u(a, "n_embed")), (d.width, d.hidden));
    d
}

/// A SigLIP tower's `params` (table row overridden by explicit keys) plus an original `language_config`.
fn siglip_llama_dims(v: &Value, l: &Value) -> Dims {
    assert_eq!(v["model_name"], "siglip_large_patch16_384");
    let width = u(v, "width");
    let total = u(v, "layers");
    let sel = v["select_layer"].as_i64().unwrap();
    let vis_layers =
        if sel <= 0 { (total as i64 + sel + 1).min(total as i64) as usize } else { total.min(sel as usize) };
    Dims {
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
    }
}

fn dims_hf(c: &Value) -> Dims {
    assert_eq!(c["model_type"], "deepseek_vl");
    siglip_llama_dims_hf(c)
}

fn siglip_llama_dims_hf(c: &Value) -> Dims {
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
    let (w, h) = (d.width, d.hidden);
    let mut m = BTreeMap::new();
    expected_siglip(&mut m, "vision_model.vision_tower.", d);
    m.insert("aligner.layers.0.weight".into(), vec![h, w]);
    m.insert("aligner.layers.0.bias".into(), vec![h]);
    m.insert("aligner.layers.2.weight".into(), vec![h, h]);
    m.insert("aligner.layers.2.bias".into(), vec![h]);
    expected_llama(&mut m, d);
    m
}

fn expected_siglip(m: &mut BTreeMap<String, Vec<usize>>, vt: &str, d: &Dims) {
    let w = d.width;
    let n = (d.image / d.patch).pow(2);
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
}

fn expected_llama(m: &mut BTreeMap<String, Vec<usize>>, d: &Dims) {
    let (h, hd) = (d.hidden, d.hidden / d.n_heads);
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
}

/// Original name -> HF (deepseek-community) names; the fused qkv maps to three.
fn to_hf(name: &str) -> Vec<String> {
    if let Some(r) = name.strip_prefix("vision_model.vision_tower.") {
        return siglip_to_hf(r);
    }
    if let Some(s) = name.strip_prefix("aligner.layers.0.") {
        return vec![format!("model.aligner.linear1.{s}")];
    }
    if let Some(s) = name.strip_prefix("aligner.layers.2.") {
        return vec![format!("model.aligner.linear2.{s}")];
    }
    vec![llama_to_hf(name)]
}

/// A timm SigLIP name (below its tower prefix) -> the published HF names.
fn siglip_to_hf(r: &str) -> Vec<String> {
    let hv = "model.vision_model.vision_model.";
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
    vec![format!("{b}{rest}")]
}

fn llama_to_hf(name: &str) -> String {
    if let Some(s) = name.strip_prefix("language_model.model.") {
        return format!("model.language_model.{s}");
    }
    assert_eq!(name, "language_model.lm_head.weight");
    "lm_head.weight".into()
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

/// What cases.json is checked against.
struct CaseDims {
    /// Side of the stored pixel_values (the processor's image_size).
    image: usize,
    n_img_tok: usize,
    vocab: usize,
    /// Range of the stored pixels: [-1, 1] once normalised (mean = std = 0.5), [0, 1] before.
    pixels: std::ops::RangeInclusive<f32>,
}

fn check_cases(dir: &Path, d: &Dims) {
    let n_img_tok = (d.image / d.patch).pow(2);
    check_cases_with(dir, &CaseDims { image: d.image, n_img_tok, vocab: d.vocab, pixels: -1.0..=1.0 });
}

fn check_cases_with(dir: &Path, d: &CaseDims) {
    let cases = json(&dir.join("cases.json"));
    let proc_ = json(&dir.join("processor_config.json"));
    let pre = json(&dir.join("preprocessor_config.json"));
    let n_img_tok = d.n_img_tok;
    assert_eq!(u(&proc_, "num_image_tokens"), n_img_tok);
    assert_eq!(u(&cases, "num_image_tokens"), n_img_tok);
    assert_eq!(u(&pre, "image_size"), d.image);
    assert_eq!(u(&cases, "image_size"), d.image);
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
            assert!(px.f32().unwrap().iter().all(|v| d.pixels.contains(v)), "{ctx}: pixels in {:?}", d.pixels);
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

// ---------------------------------------------------------------- 7B hybrid tower (gen_dsvl_hybrid.py)

/// The SAM-B-style high-res tower of a HybridVisionTower (`sam_b_downsample` row plus explicit overrides).
#[derive(Debug, PartialEq)]
struct Sam {
    width: usize,
    layers: usize,
    heads: usize,
    patch: usize,
    image: usize,
    window: usize,
    global: Vec<usize>,
    out_chans: usize,
    down: Vec<usize>,
}

impl Sam {
    fn grid(&self) -> usize {
        self.image / self.patch
    }
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// (low-res SigLIP + LLM, high-res SAM) from an original-layout hybrid config.json.
fn dims_hybrid(c: &Value) -> (Dims, Sam) {
    assert_eq!(c["model_type"], "multi_modality");
    let vc = &c["vision_config"];
    assert_eq!(vc["cls"], "HybridVisionTower");
    assert_eq!(vc["params"]["concat_type"], "tuple");
    let (hi, lo) = (&vc["params"]["high_res_cfg"], &vc["params"]["low_res_cfg"]);
    assert_eq!(hi["model_name"], "sam_b_downsample");
    let d = siglip_llama_dims(lo, &c["language_config"]);
    let s = Sam {
        width: u(hi, "width"),
        layers: u(hi, "layers"),
        heads: u(hi, "heads"),
        patch: u(hi, "patch_size"),
        image: u(hi, "image_size"),
        window: u(hi, "window_size"),
        global: usizes(&hi["global_attn_indexes"]),
        out_chans: u(hi, "out_chans"),
        down: usizes(&hi["downsample_channels"]),
    };
    let a = &c["aligner_config"]["params"];
    assert_eq!((a["projector_type"].as_str(), a["depth"].as_u64()), (Some("low_high_hybrid_split_mlp_gelu"), Some(2)));
    // Both towers feed the aligner input_dim features per token, one token per low-res patch.
    let input = u(a, "input_dim");
    assert_eq!((input, u(hi, "output_dim"), u(lo, "output_dim")), (d.width, input, input));
    assert_eq!((s.down.len(), *s.down.last().unwrap()), (2, input));
    assert_eq!(u(a, "n_embed"), d.hidden);
    (d, s)
}

fn dims_hybrid_hf(c: &Value) -> (Dims, Sam) {
    assert_eq!(c["model_type"], "deepseek_vl_hybrid");
    let h = &c["high_res_vision_config"];
    let width = u(h, "hidden_size");
    assert_eq!(u(h, "mlp_dim"), 4 * width);
    let oc = u(h, "output_channels");
    let s = Sam {
        width,
        layers: u(h, "num_hidden_layers"),
        heads: u(h, "num_attention_heads"),
        patch: u(h, "patch_size"),
        image: u(h, "image_size"),
        window: u(h, "window_size"),
        global: usizes(&h["global_attn_indexes"]),
        out_chans: oc,
        down: vec![2 * oc, 4 * oc], // fixed in transformers' DeepseekVLSamVisionProj
    };
    (siglip_llama_dims_hf(c), s)
}

fn expected_hybrid(d: &Dims, s: &Sam) -> BTreeMap<String, Vec<usize>> {
    let mut m = BTreeMap::new();
    let t = "vision_model.vision_tower_high.vision_tower.";
    let (w, g, oc) = (s.width, s.grid(), s.out_chans);
    m.insert(format!("{t}patch_embed.proj.weight"), vec![w, 3, s.patch, s.patch]);
    m.insert(format!("{t}patch_embed.proj.bias"), vec![w]);
    m.insert(format!("{t}pos_embed"), vec![1, g, g, w]);
    for i in 0..s.layers {
        let b = format!("{t}blocks.{i}.");
        let span = if s.global.contains(&i) { g } else { s.window };
        for (k, sh) in [
            ("norm1.weight", vec![w]),
            ("norm1.bias", vec![w]),
            ("norm2.weight", vec![w]),
            ("norm2.bias", vec![w]),
            ("attn.qkv.weight", vec![3 * w, w]),
            ("attn.qkv.bias", vec![3 * w]),
            ("attn.proj.weight", vec![w, w]),
            ("attn.proj.bias", vec![w]),
            ("attn.rel_pos_h", vec![2 * span - 1, w / s.heads]),
            ("attn.rel_pos_w", vec![2 * span - 1, w / s.heads]),
            ("mlp.lin1.weight", vec![4 * w, w]),
            ("mlp.lin1.bias", vec![4 * w]),
            ("mlp.lin2.weight", vec![w, 4 * w]),
            ("mlp.lin2.bias", vec![w]),
        ] {
            m.insert(format!("{b}{k}"), sh);
        }
    }
    for neck in ["neck", "neck_hd"] {
        m.insert(format!("{t}{neck}.0.weight"), vec![oc, w, 1, 1]);
        m.insert(format!("{t}{neck}.1.weight"), vec![oc]);
        m.insert(format!("{t}{neck}.1.bias"), vec![oc]);
        m.insert(format!("{t}{neck}.2.weight"), vec![oc, oc, 3, 3]);
        m.insert(format!("{t}{neck}.3.weight"), vec![oc]);
        m.insert(format!("{t}{neck}.3.bias"), vec![oc]);
    }
    m.insert(format!("{t}downsamples.0.weight"), vec![s.down[0], oc, 3, 3]);
    m.insert(format!("{t}downsamples.1.weight"), vec![s.down[1], s.down[0], 3, 3]);
    m.insert(format!("{t}hd_alpha_downsamples"), vec![1]);
    expected_siglip(&mut m, "vision_model.vision_tower_low.vision_tower.", d);
    let (h, input) = (d.hidden, d.width);
    for p in ["high_up_proj", "low_up_proj"] {
        m.insert(format!("aligner.{p}.weight"), vec![h / 2, input]);
        m.insert(format!("aligner.{p}.bias"), vec![h / 2]);
    }
    m.insert("aligner.layers.1.weight".into(), vec![h, h]);
    m.insert("aligner.layers.1.bias".into(), vec![h]);
    expected_llama(&mut m, d);
    m
}

/// Tensors the original hybrid checkpoints carry and a loader must ignore.
fn unused_hybrid(name: &str) -> bool {
    name.starts_with("vision_model.vision_tower_low.vision_tower.attn_pool.")
        || name.starts_with("vision_model.high_layer_norm.")
        || name.starts_with("vision_model.low_layer_norm.")
}

/// Original hybrid name -> published HF names.
fn to_hf_hybrid(name: &str) -> Vec<String> {
    if let Some(r) = name.strip_prefix("vision_model.vision_tower_low.vision_tower.") {
        return siglip_to_hf(r);
    }
    let neck = |r: &str, pre: &str| {
        let (i, s) = r.split_once('.').unwrap();
        let n = ["conv1", "layer_norm1", "conv2", "layer_norm2"][i.parse::<usize>().unwrap()];
        format!("{pre}{n}.{s}")
    };
    let sam = "model.high_res_vision_model.vision_encoder.";
    if let Some(r) = name.strip_prefix("vision_model.vision_tower_high.vision_tower.") {
        let out = if let Some(s) = r.strip_prefix("patch_embed.proj.") {
            format!("{sam}patch_embed.projection.{s}")
        } else if r == "pos_embed" {
            format!("{sam}pos_embed")
        } else if let Some(r) = r.strip_prefix("blocks.") {
            let (i, rest) = r.split_once('.').unwrap();
            let rest = rest.replace("norm1.", "layer_norm1.").replace("norm2.", "layer_norm2.");
            format!("{sam}layers.{i}.{rest}")
        } else if let Some(r) = r.strip_prefix("neck.") {
            neck(r, &format!("{sam}neck."))
        } else if let Some(r) = r.strip_prefix("neck_hd.") {
            neck(r, "model.high_res_vision_neck.")
        } else if let Some(r) = r.strip_prefix("downsamples.") {
            let (i, s) = r.split_once('.').unwrap();
            format!("model.high_res_vision_proj.conv{}.{s}", i.parse::<usize>().unwrap() + 1)
        } else {
            assert_eq!(r, "hd_alpha_downsamples");
            "model.high_res_vision_alpha".into()
        };
        return vec![out];
    }
    for (o, h) in [("high_up_proj", "high_res_vision_proj"), ("low_up_proj", "vision_proj"), ("layers.1", "proj")] {
        if let Some(s) = name.strip_prefix(&format!("aligner.{o}.")) {
            return vec![format!("model.aligner.{h}.{s}")];
        }
    }
    vec![llama_to_hf(name)]
}

fn check_hybrid_original(dir: &Path) -> (Dims, Sam, Tensors) {
    let (d, s) = dims_hybrid(&json(&dir.join("config.json")));
    let t = safetensors(&dir.join("model.safetensors"));
    let want = expected_hybrid(&d, &s);
    for k in ["vision_model.high_layer_norm.weight", "vision_model.low_layer_norm.bias"] {
        assert!(t.contains_key(k), "{}: the unused {k} is part of the fixture", dir.display());
    }
    assert!(t.keys().any(|k| k.contains(".attn_pool.")), "{}: the unused attn_pool tensors", dir.display());
    let have: BTreeSet<_> = t.keys().filter(|k| !unused_hybrid(k)).cloned().collect();
    assert_eq!(have, want.keys().cloned().collect::<BTreeSet<_>>(), "{}: tensor names", dir.display());
    for (k, sh) in &want {
        assert_eq!(&t[k].1, sh, "{}: shape of {k}", dir.display());
    }
    (d, s, t)
}

fn f16s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

fn hybrid_case_dims(d: &Dims, s: &Sam) -> CaseDims {
    // The stored pixels are the processor output at the high-res size, before either tower's normalisation.
    CaseDims { image: s.image, n_img_tok: (d.image / d.patch).pow(2), vocab: d.vocab, pixels: 0.0..=1.0 }
}

#[test]
fn tiny_hybrid_orig_fixture_is_consistent() {
    let dir = root().join("tiny-hybrid-orig");
    let (d, s, t) = check_hybrid_original(&dir);
    // Windows of 3 over an 8x8 grid: the grid pads to 9, so the padded-window path is covered.
    assert_eq!((s.grid(), s.window, s.width / s.heads, s.global.clone()), (8, 3, 32, vec![1, 3]));
    // SAM path 8x8 -> bilinear to 4x the SigLIP grid (16x16) -> two stride-2 convs -> 4x4 = 16 tokens.
    assert_eq!((d.image / d.patch).pow(2), 16);
    // The parameters HF zero-initialises must be nonzero here, or their code paths go untested.
    let high = "vision_model.vision_tower_high.vision_tower.";
    assert_eq!(f16s(&t[&format!("{high}hd_alpha_downsamples")].2), vec![0.5]);
    for i in 0..s.layers {
        for a in ["h", "w"] {
            let v = f16s(&t[&format!("{high}blocks.{i}.attn.rel_pos_{a}")].2);
            assert!(v.iter().filter(|x| **x != 0.0).count() > v.len() / 2, "rel_pos_{a} of block {i} is zero");
        }
    }
    let pre = json(&dir.join("preprocessor_config.json"));
    assert_eq!(pre["do_normalize"], false);
    assert_eq!(usizes(&pre["background_color"]), vec![122, 116, 104]);
    check_cases_with(&dir, &hybrid_case_dims(&d, &s));
}

#[test]
fn tiny_hybrid_hf_fixture_matches_tiny_hybrid_orig() {
    let (d, s, orig) = check_hybrid_original(&root().join("tiny-hybrid-orig"));
    let dir = root().join("tiny-hybrid-hf");
    let (hf_d, hf_s) = dims_hybrid_hf(&json(&dir.join("config.json")));
    assert_eq!((&hf_d, &hf_s), (&d, &s));
    let hf = safetensors(&dir.join("model.safetensors"));
    let mut used = BTreeSet::new();
    for (name, (_, shape, bytes)) in orig.iter().filter(|(k, _)| !unused_hybrid(k)) {
        let names = to_hf_hybrid(name);
        let mut cat = Vec::new();
        for n in &names {
            let t = hf.get(n).unwrap_or_else(|| panic!("tiny-hybrid-hf has no {n} (for {name})"));
            cat.extend_from_slice(&t.2);
            used.insert(n.clone());
        }
        assert_eq!(&cat, bytes, "{name}: same f16 values in both layouts");
        if names.len() == 1 {
            // timm's SigLIP pos_embed [1, N, D] is [N, D] in HF; SAM's [1, G, G, D] is the same in both.
            let siglip_pos = name == "vision_model.vision_tower_low.vision_tower.pos_embed";
            assert_eq!(hf[&names[0]].1, if siglip_pos { shape[1..].to_vec() } else { shape.clone() }, "{name}");
        }
    }
    assert_eq!(used.len(), hf.len(), "tiny-hybrid-hf has tensors tiny-hybrid-orig lacks");
    check_cases_with(&dir, &hybrid_case_dims(&d, &s));
    // Same weights, so the same reference numbers.
    assert_eq!(
        std::fs::read(dir.join("one_image.logits_all.npy")).unwrap(),
        std::fs::read(root().join("tiny-hybrid-orig/one_image.logits_all.npy")).unwrap()
    );
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
