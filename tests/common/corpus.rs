//! The bad-input corpus of tests/bad_inputs.rs, made at test time in a temp folder from the
//! tiny fixture model (tests/fixtures/dsvl/tiny-orig) and the preprocessing images, so nothing
//! large is committed. Each case is a command line (plus environment and stdin) and what must
//! come of it: a one-line error containing some words, or an answer.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

pub enum Expect {
    /// Exit 1, one `error: ` line containing each of these.
    Error(Vec<&'static str>),
    /// Exit 0, the output containing this.
    Answer(&'static str),
}

pub struct Case {
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
    pub expect: Expect,
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

const FX: &str = "tests/fixtures/dsvl/tiny-orig";
const FILES: [&str; 7] = [
    "config.json", "model.safetensors", "tokenizer.json", "special_tokens_map.json", "tokenizer_config.json",
    "preprocessor_config.json", "processor_config.json",
];

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json_of(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).unwrap()
}

/// Replaces a file without writing through a hard link to the fixture.
fn put(path: &Path, bytes: &[u8]) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).unwrap();
}

/// The fixture's model.safetensors with its header edited (the data is kept as is).
fn weights_with(edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
    weights_of(FX, edit)
}

/// `fx`'s model.safetensors with its header edited.
fn weights_of(fx: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
    let bytes = read(&format!("{fx}/model.safetensors"));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let Value::Object(mut h) = serde_json::from_slice(&bytes[8..8 + n]).unwrap() else { panic!("header") };
    edit(&mut h);
    raw_weights(&serde_json::to_vec(&h).unwrap(), &bytes[8 + n..])
}

fn raw_weights(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 3) as u8, ((x + y) * 5) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// A PNG whose IHDR declares `w` x `h` (with a valid CRC) over the fixture's pixel data.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut b = read("tests/fixtures/preprocess/wide.png");
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

struct Builder {
    dir: PathBuf,
    cases: Vec<Case>,
    /// The fixture model the edited copies start from.
    fx: &'static str,
}

impl Builder {
    /// A copy of the fixture model (hard links where possible) named `name`, edited by `edit`.
    fn model(&self, name: &str, edit: impl FnOnce(&Path)) -> String {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in FILES {
            if std::fs::hard_link(repo(&format!("{}/{f}", self.fx)), d.join(f)).is_err() {
                std::fs::copy(repo(&format!("{}/{f}", self.fx)), d.join(f)).unwrap();
            }
        }
        edit(&d);
        d.display().to_string()
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.join(name);
        put(&p, bytes);
        p.display().to_string()
    }

    fn add(&mut self, name: &str, args: &[&str], env: &[(&str, &str)], expect: Expect) {
        let args = args.iter().map(|s| s.to_string()).collect();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.cases.push(Case { name: name.into(), args, env, stdin: None, expect });
    }

    /// `run` on `model` with a short answer; `extra` adds images or overrides.
    fn run(&mut self, name: &str, model: &str, extra: &[&str], expect: Expect) {
        let mut args = vec!["run", "--model", model, "--prompt", "Describe.", "--json", "--max-new-tokens", "2"];
        args.extend_from_slice(extra);
        self.add(name, &args, &[], expect);
    }

    /// A model whose `file` is replaced by `bytes`.
    fn bad_file(&mut self, name: &str, file: &str, bytes: Vec<u8>, needles: Vec<&'static str>) {
        let m = self.model(name, |d| put(&d.join(file), &bytes));
        self.run(name, &m, &[], Expect::Error(needles));
    }

    /// A model whose JSON `file` is edited by `edit`.
    fn bad_json(&mut self, name: &str, file: &str, edit: impl FnOnce(&mut Value), needles: Vec<&'static str>) {
        let mut v = json_of(&format!("{}/{file}", self.fx));
        edit(&mut v);
        self.bad_file(name, file, serde_json::to_vec(&v).unwrap(), needles);
    }

    fn bad_image(&mut self, name: &str, path: &str, needles: Vec<&'static str>) {
        self.run(name, FX, &["--image", path], Expect::Error(needles));
    }
}

/// Every case, with its files written under `dir`.
pub fn build(dir: &Path) -> Vec<Case> {
    std::fs::create_dir_all(dir).unwrap();
    let mut b = Builder { dir: dir.to_path_buf(), cases: Vec::new(), fx: FX };
    checkpoints(&mut b);
    configs(&mut b);
    tokenizers(&mut b);
    images(&mut b);
    prompts(&mut b);
    gpu(&mut b);
    hybrid(&mut b);
    b.cases
}

const ST: &str = "model.safetensors";
const EMBED: &str = "language_model.model.embed_tokens.weight";
const UP: &str = "language_model.model.layers.1.mlp.up_proj.weight";

fn checkpoints(b: &mut Builder) {
    let st = read(&format!("{FX}/{ST}"));
    let mut v = st.clone();
    v[..8].copy_from_slice(&(st.len() as u64).to_le_bytes());
    b.bad_file("header length past the end", ST, v, vec!["model.safetensors", "header length", "runs past the end"]);
    let mut v = st.clone();
    v[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    b.bad_file("header length 2^64-1", ST, v, vec!["model.safetensors", "runs past the end"]);
    // A 101 MiB header inside a sparse file of that size: refused before it is read.
    let m = b.model("header length over the limit", |d| {
        let p = d.join(ST);
        let _ = std::fs::remove_file(&p);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(8 + (101 << 20)).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &(101u64 << 20).to_le_bytes(), 0).unwrap();
    });
    b.run("header length over the limit", &m, &[], Expect::Error(vec!["model.safetensors", "exceeds the 104857600-byte limit"]));
    b.bad_file("header not JSON", ST, raw_weights(b"{\"a\": [1, 2", &[]), vec!["model.safetensors", "not valid JSON"]);
    b.bad_file("empty weights file", ST, Vec::new(), vec!["model.safetensors", "too short"]);
    b.bad_file("truncated weights data", ST, st[..st.len() / 2].to_vec(), vec!["model.safetensors", "fall outside"]);
    b.bad_file("offsets out of range", ST, weights_with(|h| h[UP]["data_offsets"][1] = json!(1u64 << 60)), vec![UP, "fall outside"]);
    let first = "aligner.layers.0.bias";
    let gate = "language_model.model.layers.1.mlp.gate_proj.weight";
    b.bad_file("overlapping tensors", ST, weights_with(|h| h[UP]["data_offsets"] = h[gate]["data_offsets"].clone()), vec!["model.safetensors", "overlaps"]);
    b.bad_file("shape disagrees with bytes", ST, weights_with(|h| h[UP]["shape"] = json!([512, 257])), vec![UP, "needs", "bytes"]);
    b.bad_file("shape product overflows", ST, weights_with(|h| h[UP]["shape"] = json!([1u64 << 32, 1u64 << 32, 1u64 << 32])), vec![UP, "too many"]);
    b.bad_file("unsupported dtype", ST, weights_with(|h| h[UP]["dtype"] = json!("I64")), vec![UP, "dtype I64 is not supported"]);
    b.bad_file("missing tensor", ST, weights_with(|h| drop(h.remove(UP))), vec![UP, "missing"]);
    // A valid file whose tensor has another shape than config.json implies.
    b.bad_file("tensor shape against config", ST, weights_with(|h| h[UP]["shape"] = json!([256, 512])), vec![UP, "shape [256, 512], expected [512, 256]"]);
    // The same name twice in the header: only text can say that.
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(st[8..8 + n].to_vec()).unwrap();
    let entry = format!("\"{first}\":{},", serde_json::to_string(&json_of_header(&st)[first]).unwrap());
    let dup = header.replacen('{', &format!("{{{entry}"), 1);
    b.bad_file("duplicate tensor", ST, raw_weights(dup.as_bytes(), &st[8 + n..]), vec![first, "appears twice"]);

    // Sharded: an index naming a missing shard, an index that is not JSON, a shard outside the folder.
    let index = |map: Value| serde_json::to_vec(&json!({"metadata": {}, "weight_map": map})).unwrap();
    let names: Vec<String> = json_of_header(&st).as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    let all_in = |shard: &str| Value::Object(names.iter().map(|n| (n.clone(), json!(shard))).collect());
    let idx = "model.safetensors.index.json";
    let m = b.model("shard named but absent", |d| {
        std::fs::remove_file(d.join(ST)).unwrap();
        put(&d.join(idx), &index(all_in("model-00001-of-00002.safetensors")));
    });
    b.run("shard named but absent", &m, &[], Expect::Error(vec![idx, "model-00001-of-00002.safetensors", "missing"]));
    let m = b.model("index not JSON", |d| put(&d.join(idx), b"{\"weight_map\": "));
    b.run("index not JSON", &m, &[], Expect::Error(vec![idx, "not valid JSON"]));
    let m = b.model("shard outside the folder", |d| put(&d.join(idx), &index(all_in("../model.safetensors"))));
    b.run("shard outside the folder", &m, &[], Expect::Error(vec![idx, "not a plain file name"]));
    let m = b.model("no weights at all", |d| std::fs::remove_file(d.join(ST)).unwrap());
    b.run("no weights at all", &m, &[], Expect::Error(vec!["neither model.safetensors nor model.safetensors.index.json"]));
}

fn json_of_header(st: &[u8]) -> Value {
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&st[8..8 + n]).unwrap()
}

fn configs(b: &mut Builder) {
    let c = "config.json";
    let m = b.model("config.json missing", |d| std::fs::remove_file(d.join(c)).unwrap());
    b.run("config.json missing", &m, &[], Expect::Error(vec!["config.json", "No such file"]));
    b.bad_file("config.json not JSON", c, b"{\"model_type\": ".to_vec(), vec!["config.json", "invalid JSON"]);
    b.bad_file("config.json an array", c, b"[1, 2]".to_vec(), vec!["config.json", "expected an object"]);
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit, &'static str); 12] = [
        ("hidden_size zero", |v| v["language_config"]["hidden_size"] = json!(0), "language_config.hidden_size"),
        ("vocab_size negative", |v| v["language_config"]["vocab_size"] = json!(-1), "language_config.vocab_size"),
        ("layers huge", |v| v["language_config"]["num_hidden_layers"] = json!(1u64 << 40), "language_config.num_hidden_layers"),
        ("vocab_size 1e300", |v| v["language_config"]["vocab_size"] = json!(1e300), "language_config.vocab_size"),
        ("heads do not divide hidden", |v| v["language_config"]["num_attention_heads"] = json!(3), "language_config.num_attention_heads"),
        ("kv heads do not divide heads", |v| v["language_config"]["num_key_value_heads"] = json!(3), "language_config.num_key_value_heads"),
        ("vision heads do not divide width", |v| v["vision_config"]["params"]["heads"] = json!(3), "vision_config.params.heads"),
        ("patch larger than image", |v| v["vision_config"]["params"]["patch_size"] = json!(65), "vision_config.params.patch_size"),
        ("select_layer i64::MIN", |v| v["vision_config"]["params"]["select_layer"] = json!(i64::MIN), "vision_config.params.select_layer"),
        ("aligner width disagrees", |v| v["aligner_config"]["params"]["input_dim"] = json!(64), "aligner_config.params.input_dim"),
        ("not a DeepSeek-VL model", |v| v["model_type"] = json!("llava"), "model_type"),
        ("rope scaling unsupported", |v| v["language_config"]["rope_scaling"] = json!({"type": "yarn"}), "language_config.rope_scaling"),
    ];
    for (name, edit, key) in edits {
        b.bad_json(name, c, edit, vec!["config.json", key]);
    }
    // Consistent in itself, but not with the weights: the tensor at fault is named.
    b.bad_json("vocab_size against weights", c, |v| v["language_config"]["vocab_size"] = json!(2048), vec![EMBED, "expected [2048, 256]"]);
    b.bad_json("image_std zero", "preprocessor_config.json", |v| v["image_std"] = json!([0.5, 0, 0.5]), vec!["preprocessor_config.json", "image_std"]);
    b.bad_json("image_std underflows f32", "preprocessor_config.json", |v| v["image_std"] = json!(1e-300), vec!["preprocessor_config.json", "image_std"]);
    b.bad_json("num_image_tokens disagrees", "processor_config.json", |v| v["num_image_tokens"] = json!(17), vec!["processor_config.json", "num_image_tokens"]);
}

fn tokenizers(b: &mut Builder) {
    let t = "tokenizer.json";
    let m = b.model("tokenizer.json missing", |d| std::fs::remove_file(d.join(t)).unwrap());
    b.run("tokenizer.json missing", &m, &[], Expect::Error(vec!["tokenizer.json", "not found"]));
    b.bad_file("tokenizer.json not JSON", t, b"{\"model\": {".to_vec(), vec!["tokenizer.json"]);
    b.bad_json("tokenizer.json without the image token", t, |v| {
        v["added_tokens"].as_array_mut().unwrap().retain(|a| a["content"] != "<image_placeholder>");
        v["model"]["vocab"].as_object_mut().unwrap().remove("<image_placeholder>");
    }, vec!["tokenizer.json", "image tag `<image_placeholder>` is not in the vocabulary"]);
    // tokenizers 0.23 panics on these; they are refused before it sees them.
    b.bad_json("BPE merge outside the vocabulary", t, |v| v["model"]["merges"].as_array_mut().unwrap().push(json!(["Ġa", "Ġt"])), vec!["tokenizer.json", "`Ġa`, `Ġt`", "not in the vocabulary"]);
    b.bad_json("BPE continuing_subword_prefix", t, |v| v["model"]["continuing_subword_prefix"] = json!("x".repeat(300)), vec!["tokenizer.json", "lacks the continuing_subword_prefix"]);
    b.bad_json("bos not in the vocabulary", "special_tokens_map.json", |v| v["bos_token"] = json!("<s>"), vec!["bos_token `<s>`", "special_tokens_map.json"]);
    b.bad_file("tokenizer_config.json not JSON", "tokenizer_config.json", b"{,}".to_vec(), vec!["tokenizer_config.json"]);
    b.bad_json("image_tag not in the vocabulary", "processor_config.json", |v| v["image_tag"] = json!("<img>"), vec!["image tag `<img>`"]);
}

fn images(b: &mut Builder) {
    let wide = read("tests/fixtures/preprocess/wide.png");
    let p = b.file("truncated.png", &wide[..wide.len() / 2]);
    b.bad_image("truncated PNG", &p, vec!["truncated.png", "truncated"]);
    let mut noise = wide.clone();
    noise[40..].iter_mut().enumerate().for_each(|(i, x)| *x ^= (i * 31 + 7) as u8);
    let p = b.file("corrupt.png", &noise);
    b.bad_image("corrupt PNG", &p, vec!["corrupt.png", "corrupt"]);
    let p = b.file("zero.png", &png_declaring(0, 0));
    b.bad_image("0x0 PNG", &p, vec!["zero.png"]);
    let p = b.file("bomb.png", &png_declaring(100_000, 100_000));
    b.bad_image("PNG bomb 100000x100000", &p, vec!["bomb.png", "100000x100000", "exceeds the limit"]);
    let mut gif = read("tests/fixtures/preprocess/palette.gif");
    gif[6..10].copy_from_slice(&[0xff; 4]);
    let p = b.file("bomb.gif", &gif);
    b.bad_image("GIF bomb 65535x65535", &p, vec!["bomb.gif", "65535x65535"]);
    let mut jpg = read("tests/fixtures/preprocess/photo.jpg");
    let sof = jpg.windows(2).position(|w| w == [0xff, 0xc0]).expect("SOF0");
    jpg[sof + 5..sof + 9].copy_from_slice(&[0xff, 0xdc, 0xff, 0xdc]);
    let p = b.file("bomb.jpg", &jpg);
    b.bad_image("JPEG bomb 65500x65500", &p, vec!["bomb.jpg", "65500x65500"]);
    let mut webp = read("tests/fixtures/preprocess/lossless.webp");
    // VP8L: 14 bits of width-1, then 14 of height-1, from byte 21. (image-webp reads a field of
    // all ones, 16384, as 0; 16383 is the largest it reports.)
    webp[21..24].copy_from_slice(&[0xfe, 0xbf, 0xff]);
    webp[24] |= 0x0f;
    let p = b.file("bomb.webp", &webp);
    b.bad_image("WebP bomb 16383x16383", &p, vec!["bomb.webp", "16383x16383"]);
    for (side, needle) in [(60_000i32, "60000x60000"), (100_000, "too large")] {
        let mut bmp = read("tests/fixtures/preprocess/image.bmp");
        bmp[18..22].copy_from_slice(&side.to_le_bytes());
        bmp[22..26].copy_from_slice(&side.to_le_bytes());
        let p = b.file(&format!("bomb{side}.bmp"), &bmp);
        b.bad_image(&format!("BMP bomb {side}x{side}"), &p, vec!["bomb", needle]);
    }
    let p = b.file("image.tiff", b"II*\x00\x08\x00\x00\x00\x00\x00");
    b.bad_image("TIFF (unsupported)", &p, vec!["image.tiff", "unsupported"]);
    let p = b.file("notes.png", b"these are notes, not an image");
    b.bad_image("text named .png", &p, vec!["notes.png", "unrecognised format"]);
    let p = b.file("empty.png", b"");
    b.bad_image("empty image file", &p, vec!["empty.png"]);
    b.bad_image("a folder as image", &b.dir.display().to_string(), vec!["not a regular file"]);
    b.bad_image("/dev/zero as image", "/dev/zero", vec!["/dev/zero", "not a regular file"]);
    let fifo = b.dir.join("fifo.png");
    let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    b.bad_image("a FIFO as image", &fifo.display().to_string(), vec!["fifo.png", "not a regular file"]);
    b.bad_image("missing image", "/no/such/image.png", vec!["/no/such/image.png"]);

    // Odd but valid: these must be answered.
    let tall = b.file("1x100000.png", &png(1, 100_000));
    let wide1 = b.file("100000x1.png", &png(100_000, 1));
    let pre = |f: &str| repo(&format!("tests/fixtures/preprocess/{f}")).display().to_string();
    let odd = [tall, wide1, pre("tiny_1x1.png"), pre("cmyk.jpg"), pre("animated_frames.webp"), pre("animated.gif"), pre("exif_rotated.jpg"), pre("grey_alpha16.png")];
    let mut args: Vec<&str> = Vec::new();
    for p in &odd {
        args.extend(["--image", p.as_str()]);
    }
    b.run("odd images: 1x100000, 100000x1, 1x1, CMYK, animated WebP/GIF, EXIF, 16-bit grey+alpha", FX, &args, Expect::Answer("\"prompt_tokens\""));
}

fn prompts(b: &mut Builder) {
    let two = repo("tests/fixtures/dsvl/images/wide.png").display().to_string();
    let args = |prompt: &str, images: usize, new_tokens: &str| -> Vec<String> {
        let mut a: Vec<String> = ["run", "--model", FX, "--json", "--max-new-tokens", new_tokens, "--prompt", prompt].iter().map(|s| s.to_string()).collect();
        for _ in 0..images {
            a.extend(["--image".to_string(), two.clone()]);
        }
        a
    };
    let push = |b: &mut Builder, name: &str, a: Vec<String>, expect: Expect| {
        b.cases.push(Case { name: name.into(), args: a, env: Vec::new(), stdin: None, expect });
    };
    push(b, "more placeholders than images", args("<image_placeholder><image_placeholder> compare", 1, "2"), Expect::Error(vec!["2 `<image_placeholder>` placeholder(s) but 1 image(s)"]));
    push(b, "fewer placeholders than images", args("<image_placeholder> compare", 2, "2"), Expect::Error(vec!["1 `<image_placeholder>` placeholder(s) but 2 image(s)"]));
    push(b, "prompt longer than the context", args(&"word ".repeat(6000), 0, "2"), Expect::Error(vec!["exceeds the context of 4096"]));
    push(b, "max-new-tokens beyond the context", args("hi", 0, "100000"), Expect::Error(vec!["100000 new tokens exceeds the context"]));
    push(b, "max-new-tokens 2^64-1", args("hi", 0, &u64::MAX.to_string()), Expect::Error(vec!["exceeds the context"]));
    push(b, "empty prompt", args("", 0, "2"), Expect::Answer("\"prompt_tokens\""));
    // The model allows 16M positions, the adapter's binding limit far fewer.
    let m = b.model("context beyond the binding limit", |d| {
        let mut v = json_of(&format!("{FX}/config.json"));
        v["language_config"]["max_position_embeddings"] = json!(16_000_000);
        put(&d.join("config.json"), &serde_json::to_vec(&v).unwrap());
    });
    b.add("context beyond the binding limit", &["run", "--model", &m, "--prompt", "hi", "--json", "--max-new-tokens", "10000000"], &[], Expect::Error(vec!["KV cache: a context of 10000", "fit"]));
    let chat = |extra: &[&str]| -> Vec<String> { ["chat", "--model", FX].iter().chain(extra).map(|s| s.to_string()).collect() };
    let mut c = Case { name: "chat with a context of 0".into(), args: chat(&["--context", "0"]), env: Vec::new(), stdin: Some(b"hi\n".to_vec()), expect: Expect::Error(vec!["session of 0 tokens"]) };
    b.cases.push(c);
    c = Case { name: "chat answer longer than its context".into(), args: chat(&["--context", "64", "--max-new-tokens", "64"]), env: Vec::new(), stdin: Some(b"hi\n".to_vec()), expect: Expect::Error(vec!["--max-new-tokens 64 leaves no room"]) };
    b.cases.push(c);
}

fn gpu(b: &mut Builder) {
    let args = ["run", "--model", FX, "--prompt", "hi", "--json", "--max-new-tokens", "2"];
    b.add("adapter that does not exist", &args, &[("DSVL_ADAPTER", "no-such-gpu")], Expect::Error(vec!["no GPU adapter matches `no-such-gpu`", "available"]));
    b.add("no Vulkan driver", &args, &[("VK_ICD_FILENAMES", "/nonexistent/icd.json"), ("WGPU_BACKEND", "vulkan")], Expect::Error(vec!["no GPU adapter found", "install a Vulkan driver"]));
    // Dense f16 rows of the patch matrix are 1.5 KiB (int8 rows would fit and fail later, at the KV cache).
    let mut dense = args.to_vec();
    dense.extend(["--quant", "f16"]);
    b.add("weights beyond a 1 KiB binding limit", &dense, &[("DSVL_MAX_BINDING", "1024")], Expect::Error(vec!["vision_model.vision_tower.patch_embed.proj.weight", "allows 1024"]));
    let big = b.file("big-600x600.png", &png(600, 600));
    let mut a = args.to_vec();
    a.extend(["--image", big.as_str()]);
    b.add("image beyond a 64 KiB binding limit", &a, &[("DSVL_MAX_BINDING", "65536")], Expect::Error(vec!["big-600x600.png", "allows 65536"]));
    // The statistics tool's two ways to find nothing: no variant, no Vulkan driver.
    b.add("pipeline-stats of no variant", &["pipeline-stats", "no-such-kernel"], &[], Expect::Error(vec!["no pipeline variant matches \"no-such-kernel\""]));
    b.add("pipeline-stats without Vulkan", &["pipeline-stats", "gemv"], &[("VK_ICD_FILENAMES", "/nonexistent/icd.json")], Expect::Error(vec!["Vulkan"]));
}

/// The 7B hybrid tower's own ways to be wrong, on tests/fixtures/dsvl/tiny-hybrid-orig.
fn hi(v: &mut Value) -> &mut Value {
    &mut v["vision_config"]["params"]["high_res_cfg"]
}

fn hybrid(b: &mut Builder) {
    const HY: &str = "tests/fixtures/dsvl/tiny-hybrid-orig";
    b.fx = HY;
    let c = "config.json";
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit, &'static str); 8] = [
        ("hybrid: unknown SAM tower", |v| hi(v)["model_name"] = json!("sam_vit_h"), "vision_config.params.high_res_cfg.model_name"),
        ("hybrid: global block past the tower", |v| hi(v)["global_attn_indexes"] = json!([1, 7]), "global_attn_indexes"),
        ("hybrid: no global block", |v| hi(v)["global_attn_indexes"] = json!([]), "global_attn_indexes"),
        ("hybrid: window of zero", |v| hi(v)["window_size"] = json!(0), "window_size"),
        ("hybrid: aligner against SAM's channels", |v| hi(v)["downsample_channels"] = json!([64, 96]), "aligner_config.params.input_dim"),
        ("hybrid: plain aligner", |v| v["aligner_config"]["params"]["projector_type"] = json!("mlp_gelu"), "projector_type"),
        ("hybrid: concat by sequence", |v| v["vision_config"]["params"]["concat_type"] = json!("sequence"), "concat_type"),
        ("hybrid: 64 downsample convs", |v| hi(v)["downsample_channels"] = json!(vec![128; 64]), "downsample_channels"),
    ];
    for (name, edit, key) in edits {
        b.bad_json(name, c, edit, vec!["config.json", key]);
    }
    b.bad_json("hybrid: processor size against SAM", "preprocessor_config.json", |v| v["image_size"] = json!(64), vec!["preprocessor_config.json", "image_size"]);
    let rel = "vision_model.vision_tower_high.vision_tower.blocks.0.attn.rel_pos_h";
    let alpha = "vision_model.vision_tower_high.vision_tower.hd_alpha_downsamples";
    // Same bytes, another shape: the table's shape follows from the window.
    b.bad_file("hybrid: rel_pos table shape", ST, weights_of(HY, |h| h[rel]["shape"] = json!([10, 16])), vec![rel, "expected [5, 32]"]);
    b.bad_file("hybrid: alpha missing", ST, weights_of(HY, |h| drop(h.remove(alpha))), vec![alpha, "missing"]);
    b.fx = FX;
}
