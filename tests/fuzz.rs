//! Bounded fuzzing inside `cargo test` (proptest, stable Rust, no GPU): every parser that sees
//! untrusted bytes gets valid seeds mutated at the byte level (flips, awkward integers, JSON
//! tokens, cuts) and at the JSON-tree level (a value anywhere replaced by 0, -1, 2^64-1, 1e300, a
//! string, null, ...). Each target must never panic; what it accepts must satisfy its invariants,
//! and what it refuses must be a one-line error naming the file.
//!
//! Targets: safetensors headers, the shard index (with its shards), config.json /
//! preprocessor_config.json / processor_config.json, tokenizer.json, image decoding and the
//! preprocessing geometry, prompt building, and streaming detokenisation.
//!
//! The seed is fixed, so CI runs the same cases every time (10 to 15 s in a debug build); explore
//! further with `PROPTEST_CASES=20000 PROPTEST_RNG_SEED=N cargo test --test fuzz`. A failing
//! input is saved under `target/tmp/fuzz-failures/TARGET/` in the target's raw byte format;
//! once fixed, copy it to `tests/fixtures/regress/TARGET/`, which `regressions_replay` runs.

#[path = "common/mutate.rs"]
mod mutate;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mutate::{apply, apply_json, edit, json_edit, reseal_png};
use dsvl_gpu::image::{decode_rgb, placement, DecodeLimits};
use dsvl_gpu::model::config::ModelConfig;
use dsvl_gpu::model::safetensors::{parse, serialize, Bytes, TensorSource};
use dsvl_gpu::ops::convert::Source;
use dsvl_gpu::prompt::{encode, encode_next_turn, Conversation, Message, PromptTokenizer, Role, STOP_STRING};
use dsvl_gpu::text::TextStream;
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default(); // honours PROPTEST_* variables
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x05AF_E7E5);
    }
    // Failures are kept as raw inputs (see `guard`), not as proptest seed files.
    c.failure_persistence = None;
    c.max_shrink_time = 60_000;
    c
}

/// Runs `f` on `input`; a panic is saved as a regression candidate and reported as a failure.
fn guard(target: &str, f: fn(&[u8]), input: &[u8]) -> Result<(), TestCaseError> {
    let Err(p) = catch_unwind(AssertUnwindSafe(|| f(input))) else { return Ok(()) };
    let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let h = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let path = dir.join(format!("{h:016x}"));
    let _ = std::fs::write(&path, input);
    Err(TestCaseError::fail(format!("{target}: {msg} (input: {})", path.display())))
}

/// An error must be one line and name `file`.
fn one_line(e: &dsvl_gpu::Error, file: &str) {
    let s = e.to_string();
    assert!(!s.contains('\n') && s.contains(file), "error should be one line naming {file}: {s:?}");
}

// ---- safetensors -------------------------------------------------------------------------

const ST_KEYS: &[&str] = &["dtype", "shape", "data_offsets", "__metadata__", "a", "b", "format"];

/// A small valid file: three dtypes, an empty tensor, metadata. (header JSON, data bytes).
fn st_seed() -> (Value, Vec<u8>) {
    let a: Vec<u8> = (0..24).collect();
    let b: Vec<u8> = (0..8).map(|i| i * 3).collect();
    let c: Vec<u8> = vec![7; 4];
    let file = serialize(&[("a", Source::F32, &[2, 3], &a), ("b", Source::F16, &[4], &b), ("c", Source::BF16, &[1, 1, 2], &c), ("empty", Source::F32, &[0], &[])], &[("format", "pt")]);
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&file[8..8 + n]).unwrap(), file[8 + n..].to_vec())
}

fn target_safetensors(bytes: &[u8]) {
    let h = match parse("fuzz.safetensors", bytes) {
        Ok(h) => h,
        Err(e) => return one_line(&e, "fuzz.safetensors"),
    };
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut spans: Vec<_> = h.tensors.iter().map(|t| t.range.clone()).filter(|r| !r.is_empty()).collect();
    for t in &h.tensors {
        assert!(t.range.start >= 8 + n && t.range.end <= bytes.len(), "{}: {:?} outside the data", t.name, t.range);
        assert_eq!(t.numel() * t.dtype.size(), t.range.len(), "{}: size", t.name);
        assert_eq!(h.get(&t.name).map(|x| &x.range), Some(&t.range));
    }
    spans.sort_by_key(|r| r.start);
    assert!(spans.windows(2).all(|w| w[0].end <= w[1].start), "overlap accepted");
    let src = TensorSource::from_bytes(vec![("fuzz.safetensors".into(), bytes.to_vec())]).expect("parsed once, parses again");
    for t in &h.tensors {
        assert_eq!(src.get(&t.name).map(|(_, b, _)| b.len()), Some(t.range.len()));
    }
}

fn st_file(header: &Value, data: &[u8], len: Option<u64>) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = len.unwrap_or(h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

proptest! {
    #![proptest_config(config(3000))]
    #[test]
    fn fuzz_safetensors(je in prop::collection::vec(json_edit(ST_KEYS), 0..4), be in prop::collection::vec(edit(), 0..4), len in prop::option::weighted(0.1, any::<u64>())) {
        let (mut header, data) = st_seed();
        apply_json(&mut header, &je, ST_KEYS);
        let mut bytes = st_file(&header, &data, len);
        apply(&mut bytes, &be);
        guard("safetensors", target_safetensors, &bytes)?;
    }
}

// ---- the shard index ----------------------------------------------------------------------

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";
const IDX_KEYS: &[&str] = &["weight_map", "metadata", "a", "b", "c", "total_size"];

fn shards() -> &'static [(String, Vec<u8>); 2] {
    static S: OnceLock<[(String, Vec<u8>); 2]> = OnceLock::new();
    S.get_or_init(|| {
        let v = [1u8; 8];
        [(SHARD1.into(), serialize(&[("a", Source::F32, &[2], &v)], &[])), (SHARD2.into(), serialize(&[("b", Source::F16, &[4], &v), ("c", Source::BF16, &[2, 2], &v)], &[]))]
    })
}

fn target_index(bytes: &[u8]) {
    let files = shards().iter().map(|(n, b)| (n.clone(), Bytes::Owned(b.clone()))).collect();
    match TensorSource::from_index("fuzz.index.json", bytes, files) {
        Ok(src) => {
            // Whatever the index names resolves, and only plain names were accepted.
            for name in src.names().map(String::from).collect::<Vec<_>>() {
                let (_, _, file) = src.get(&name).expect("listed names resolve");
                assert!(file == SHARD1 || file == SHARD2, "{name} resolved to {file}");
            }
        }
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n') && (s.contains("fuzz.index.json") || s.contains("model-0000")), "{s:?}");
        }
    }
}

proptest! {
    #![proptest_config(config(2000))]
    #[test]
    fn fuzz_index(je in prop::collection::vec(json_edit(IDX_KEYS), 0..4), be in prop::collection::vec(edit(), 0..3)) {
        let mut v = serde_json::json!({"metadata": {"total_size": 40}, "weight_map": {"a": SHARD1, "b": SHARD2, "c": SHARD2}});
        apply_json(&mut v, &je, IDX_KEYS);
        let mut bytes = serde_json::to_vec(&v).unwrap();
        apply(&mut bytes, &be);
        guard("index", target_index, &bytes)?;
    }
}

// ---- model configuration ------------------------------------------------------------------

const CFG_KEYS: &[&str] = &[
    "hidden_size", "num_attention_heads", "head_dim", "num_key_value_heads", "vocab_size", "image_size", "patch_size",
    "select_layer", "width", "heads", "layers", "mlp_ratio", "model_name", "model_type", "depth", "projector_type",
    "rope_scaling", "rope_parameters", "rope_theta", "tie_word_embeddings", "image_token_id", "num_image_tokens",
    "image_mean", "image_std", "max_position_embeddings", "intermediate_size", "num_hidden_layers", "hidden_act",
    "rms_norm_eps", "layer_norm_eps", "cls", "select_feature", "input_dim", "n_embed", "text_config", "vision_config",
    "language_config", "aligner_config", "params",
    // The 7B hybrid tower's.
    "high_res_cfg", "low_res_cfg", "concat_type", "window_size", "global_attn_indexes", "out_chans", "downsample_channels",
    "pixel_mean", "pixel_std", "do_normalize", "high_res_vision_config", "output_channels", "mlp_dim", "high_res_size",
    "high_res_image_mean", "high_res_image_std",
];

/// The fixture folders whose configs are fuzzed: the 1.3B-style and the 7B hybrid, each layout.
const CFG_DIRS: [&str; 4] = [
    "tests/fixtures/dsvl/tiny-orig",
    "tests/fixtures/dsvl/tiny-hf",
    "tests/fixtures/dsvl/tiny-hybrid-orig",
    "tests/fixtures/dsvl/tiny-hybrid-hf",
];

/// Which fixture folder and which of its three files (config, preprocessor, processor) a role
/// (0..12) replaces; roles 0..6 keep their meaning from before the hybrid folders, for the
/// committed regressions.
fn cfg_role(role: usize) -> (&'static str, usize) {
    const ROLES: [(usize, usize); 12] = [(0, 0), (1, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 0), (3, 0), (2, 1), (2, 2), (3, 1), (3, 2)];
    let (dir, slot) = ROLES[role % 12];
    (CFG_DIRS[dir], slot)
}

/// First byte: which folder and file the rest replaces (`cfg_role`); the others are the
/// fixture's own.
fn target_config(input: &[u8]) {
    let Some((&role, bytes)) = input.split_first() else { return };
    let (dir, slot) = cfg_role(role as usize);
    let mut files = [fixture(&format!("{dir}/config.json")), fixture(&format!("{dir}/preprocessor_config.json")), fixture(&format!("{dir}/processor_config.json"))];
    files[slot] = bytes.to_vec();
    let name = ["config.json", "preprocessor_config.json", "processor_config.json"][slot];
    let c = match ModelConfig::from_dir_files(&files[0], Some(&files[1]), Some(&files[2])) {
        Ok(c) => c,
        Err(e) => return one_line(&e, name),
    };
    let (v, l, a) = (&c.vision, &c.llm, &c.aligner);
    assert!(v.layers >= 1 && v.heads >= 1 && v.width % v.heads == 0 && v.mlp_dim >= 1, "{v:?}");
    assert!(v.patch_size >= 1 && v.patch_size <= v.image_size, "{v:?}");
    assert_eq!(c.num_image_tokens, (v.image_size / v.patch_size).pow(2));
    assert!(v.eps.is_finite() && v.eps > 0.0 && v.image_std.iter().all(|s| s.is_finite() && *s > 0.0) && v.image_mean.iter().all(|m| m.is_finite()));
    assert!(l.hidden >= 1 && l.layers >= 1 && l.vocab >= 1 && l.intermediate >= 1 && l.max_positions >= 1, "{l:?}");
    assert!(l.kv_heads >= 1 && l.heads % l.kv_heads == 0 && l.head_dim % 2 == 0 && l.head_dim >= 2, "{l:?}");
    assert!(l.rms_eps.is_finite() && l.rms_eps > 0.0 && l.rope_theta.is_finite() && l.rope_theta > 0.0, "{l:?}");
    assert!(a.input_dim == v.width && a.n_embed == l.hidden && a.depth >= 1, "{a:?}");
    assert!(c.image_token_id.is_none_or(|t| (t as usize) < l.vocab));
    if let Some(s) = &c.sam {
        assert!(s.layers >= 1 && s.heads >= 1 && s.width % s.heads == 0 && s.mlp_dim >= 1 && s.window >= 1 && s.neck >= 1, "{s:?}");
        assert!(s.patch_size >= 1 && s.patch_size <= s.image_size && c.image_size() == s.image_size, "{s:?}");
        assert!(!s.global.is_empty() && s.global.iter().all(|&g| g < s.layers), "{s:?}");
        assert!((1..=4).contains(&s.downsample.len()) && !s.downsample.contains(&0), "{s:?}");
        assert!(a.hybrid && a.n_embed % 2 == 0, "{a:?}");
    }
}

proptest! {
    #![proptest_config(config(2000))]
    #[test]
    fn fuzz_config(role in 0u8..12, je in prop::collection::vec(json_edit(CFG_KEYS), 1..6), be in prop::collection::vec(edit(), 0..2)) {
        let (dir, slot) = cfg_role(role as usize);
        let file = ["config.json", "preprocessor_config.json", "processor_config.json"][slot];
        let mut v: Value = serde_json::from_slice(&fixture(&format!("{dir}/{file}"))).unwrap();
        apply_json(&mut v, &je, CFG_KEYS);
        let mut body = serde_json::to_vec(&v).unwrap();
        apply(&mut body, &be);
        let mut bytes = vec![role];
        bytes.extend(body);
        guard("config", target_config, &bytes)?;
    }
}

// ---- tokenizer.json -----------------------------------------------------------------------

const TOK_KEYS: &[&str] = &[
    "model", "vocab", "merges", "added_tokens", "pre_tokenizer", "decoder", "post_processor", "normalizer", "type",
    "content", "id", "special", "single", "pair", "special_tokens", "ids", "tokens", "byte_fallback", "unk_token",
];

fn target_tokenizer(bytes: &[u8]) {
    let special = fixture("tests/fixtures/dsvl/tiny-orig/special_tokens_map.json");
    let tok = match PromptTokenizer::from_bytes(bytes, Some(&special), None, None) {
        Ok(t) => t,
        Err(e) => return one_line(&e, "tokenizer.json"),
    };
    let mut conv = Conversation::new();
    conv.user("Hello <image_placeholder> 猫 User: x", 1);
    if let Ok(enc) = encode(&tok, &conv, 4) {
        assert_eq!(enc.image_positions.len(), 4);
        let _ = tok.decode(&enc.ids, true);
        let mut s = TextStream::new(&tok, &[STOP_STRING]);
        for &id in &enc.ids {
            let _ = s.push(id);
        }
        let _ = s.finish();
    }
}

proptest! {
    #![proptest_config(config(150))]
    #[test]
    fn fuzz_tokenizer_json(je in prop::collection::vec(json_edit(TOK_KEYS), 1..4), be in prop::collection::vec(edit(), 0..2)) {
        let mut v: Value = serde_json::from_slice(&fixture("tests/fixtures/dsvl/tiny-orig/tokenizer.json")).unwrap();
        apply_json(&mut v, &je, TOK_KEYS);
        let mut bytes = serde_json::to_vec(&v).unwrap();
        apply(&mut bytes, &be);
        guard("tokenizer", target_tokenizer, &bytes)?;
    }
}

// ---- images -------------------------------------------------------------------------------

const IMAGES: [&str; 12] = [
    "wide.png", "grey_alpha.png", "rgb16.png", "grey16.png", "palette.gif", "animated.gif", "photo.jpg", "cmyk.jpg",
    "exif_rotated.jpg", "lossless.webp", "animated_frames.webp", "image.bmp",
];

/// Small limits keep each case cheap; the bounds themselves are what is being tested.
const FUZZ_LIMITS: DecodeLimits = DecodeLimits { max_pixels: 1 << 22, max_alloc: 64 << 20 };

fn target_image(bytes: &[u8]) {
    let img = match decode_rgb(bytes, &FUZZ_LIMITS) {
        Ok(i) => i,
        Err(e) => return one_line(&e, "image"),
    };
    assert!(img.width >= 1 && img.height >= 1 && (img.width * img.height) as u64 <= FUZZ_LIMITS.max_pixels);
    assert_eq!(img.data.len(), img.width * img.height * 3);
    check_placement(img.width, img.height, 384);
}

fn check_placement(w: usize, h: usize, size: usize) {
    let p = placement(w, h, size).expect("non-empty");
    assert_eq!(p.side, size.max(14), "{w}x{h} at {size}: {p:?}");
    assert!(p.width >= 14 && p.height >= 14 && p.x + p.width <= p.side && p.y + p.height <= p.side, "{w}x{h} at {size}: {p:?}");
}

proptest! {
    #![proptest_config(config(1500))]
    #[test]
    fn fuzz_images(seed in 0..IMAGES.len(), be in prop::collection::vec(edit(), 1..6), reseal in any::<bool>()) {
        let mut bytes = fixture(&format!("tests/fixtures/preprocess/{}", IMAGES[seed]));
        apply(&mut bytes, &be);
        if reseal {
            reseal_png(&mut bytes);
        }
        guard("image", target_image, &bytes)?;
    }

    #[test]
    fn placement_fits_the_canvas(w in 1usize..2_000_000, h in 1usize..2_000_000, size in 14usize..2048) {
        check_placement(w, h, size);
    }
}

// ---- prompts and streaming ----------------------------------------------------------------

fn tok() -> &'static PromptTokenizer {
    static T: OnceLock<PromptTokenizer> = OnceLock::new();
    T.get_or_init(|| PromptTokenizer::from_dir(&root().join("tests/fixtures/dsvl/tiny-orig")).unwrap())
}

/// Bytes: one byte of image counts (2 bits per message), then the system prompt and the messages
/// separated by NUL (alternating User / Assistant, as UTF-8 with replacement).
fn target_prompt(bytes: &[u8]) {
    let Some((&counts, rest)) = bytes.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\0');
    let mut conv = Conversation::with_system(parts.next().unwrap_or(""));
    for (i, t) in parts.take(4).enumerate() {
        let role = if i % 2 == 0 { Role::User } else { Role::Assistant };
        let images = if role == Role::User { (counts >> (2 * i)) as usize & 3 } else { 0 };
        conv.messages.push(Message { role, text: t.to_string(), images });
    }
    let t = tok();
    let n = 16;
    match encode(t, &conv, n) {
        Ok(enc) => {
            assert_eq!(enc.ids.first(), Some(&t.bos_id()));
            assert_eq!(enc.image_positions.len(), conv.num_images() * n);
            assert!(enc.image_positions.iter().all(|&p| enc.ids[p as usize] == t.image_id()));
            assert_eq!(enc.ids.iter().filter(|&&i| i == t.image_id()).count(), enc.image_positions.len());
        }
        Err(e) => assert!(matches!(e, dsvl_gpu::Error::Prompt(_)) && !e.to_string().contains('\n'), "{e}"),
    }
    if let Some(last) = conv.messages.iter().rev().find(|m| m.role == Role::User)
        && let Ok(enc) = encode_next_turn(t, last, n)
    {
        assert_eq!(enc.image_positions.len(), last.images * n);
    }
}

/// Bytes: token ids as little-endian u16 pairs (modulo the vocabulary). The streamed text must
/// be the whole decode up to EOS, cut before the first `User:`.
fn target_stream(bytes: &[u8]) {
    let t = tok();
    let vocab = t.inner().get_vocab_size(true) as u32;
    let ids: Vec<u32> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32 % vocab).collect();
    let mut s = TextStream::new(t, &[STOP_STRING]);
    let mut out = String::new();
    for &id in &ids {
        let c = s.push(id).unwrap();
        out.push_str(&c.text);
        if c.stopped {
            break;
        }
    }
    out.push_str(&s.finish().unwrap().text);
    let upto = ids.iter().position(|&i| i == t.eos_id()).unwrap_or(ids.len());
    let full = t.decode(&ids[..upto], true).unwrap();
    let want = full.find(STOP_STRING).map_or(full.as_str(), |at| &full[..at]);
    assert_eq!(out, want, "ids {ids:?}");
}

const PIECES: [&str; 14] = [
    "<image_placeholder>", "User:", "Assistant:", "<｜end▁of▁sentence｜>", "<｜begin▁of▁sentence｜>", " ", "\n\n", "\u{1c}",
    "猫", "é", "a", "Hello", "Us", "\u{FFFD}",
];

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![3 => prop::sample::select(&PIECES[..]).prop_map(String::from), 1 => "\\PC{0,4}"], 0..8).prop_map(|v| v.concat().replace('\0', ""))
}

proptest! {
    #![proptest_config(config(1500))]
    #[test]
    fn fuzz_prompts(counts in any::<u8>(), system in text(), msgs in prop::collection::vec(text(), 1..5)) {
        let mut bytes = vec![counts];
        bytes.extend(system.bytes());
        for m in msgs {
            bytes.push(0);
            bytes.extend(m.bytes());
        }
        guard("prompt", target_prompt, &bytes)?;
    }

    #[test]
    fn fuzz_streaming(ids in prop::collection::vec(any::<u16>(), 0..40)) {
        let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        guard("stream", target_stream, &bytes)?;
    }
}

// ---- committed regressions ----------------------------------------------------------------

/// Every input under tests/fixtures/regress/TARGET/ goes through its target again.
#[test]
fn regressions_replay() {
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 7] = [
        ("safetensors", target_safetensors),
        ("index", target_index),
        ("config", target_config),
        ("tokenizer", target_tokenizer),
        ("image", target_image),
        ("prompt", target_prompt),
        ("stream", target_stream),
    ];
    let mut ran = 0;
    for (name, f) in targets {
        let Ok(dir) = std::fs::read_dir(root().join("tests/fixtures/regress").join(name)) else { continue };
        for entry in dir.flatten() {
            let input = std::fs::read(entry.path()).unwrap();
            if let Err(e) = guard(name, f, &input) {
                panic!("{}: {e}", entry.path().display());
            }
            ran += 1;
        }
    }
    eprintln!("regressions_replay: {ran} committed inputs");
}
