//! The model configuration read from a checkpoint folder's `config.json` (original
//! `multi_modality` layout or HF `deepseek_vl` layout), `preprocessor_config.json` and
//! `processor_config.json`. Every value comes from the files (or, where a key is absent, from
//! the default of the Python class that wrote it); every value is validated before anything is
//! sized by it, and each error is one line naming the file and the key.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Which tensor names and config keys the checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// deepseek-ai's `multi_modality` checkpoints: `vision_model.vision_tower.*`, `aligner.layers.*`, `language_model.*`.
    Original,
    /// HF transformers' `deepseek_vl` port: `model.vision_model.vision_model.*`, `model.aligner.linear1|2`, `model.language_model.*`.
    Hf,
}

/// The SigLIP vision tower.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    /// Blocks actually built and run (after `select_layer`), not the tower's nominal depth.
    pub layers: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub eps: f64,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

/// The MLP aligner: `depth` linears with GELU between them.
#[derive(Clone, Debug, PartialEq)]
pub struct AlignerConfig {
    pub input_dim: usize,
    pub n_embed: usize,
    pub depth: usize,
}

/// The Llama-style decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub max_positions: usize,
    /// lm_head shares the embedding table (HF `tie_word_embeddings`; the original checkpoints are not tied).
    pub tie_embeddings: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub layout: Layout,
    pub vision: VisionConfig,
    pub aligner: AlignerConfig,
    pub llm: LlmConfig,
    /// Tokens per image: floor(image_size / patch_size)^2, checked against `processor_config.json`.
    pub num_image_tokens: usize,
    /// The image token id when the config names one (HF `image_token_id`); the tokenizer is authoritative.
    pub image_token_id: Option<u32>,
}

/// Upper bounds on sizes, far above any DeepSeek-VL model, so a hostile file cannot make us allocate.
const MAX_DIM: usize = 1 << 17;
const MAX_LAYERS: usize = 4096;
const MAX_VOCAB: usize = 1 << 24;
const MAX_POSITIONS: usize = 1 << 24;
const MAX_IMAGE: usize = 1 << 14;

/// One row of the original code's SigLIP table: width, depth, heads, mlp_ratio, patch.
fn vision_table(model_name: &str) -> Option<(usize, usize, usize, f64, usize)> {
    match model_name {
        "siglip_large_patch16_384" => Some((1024, 24, 16, 4.0, 16)),
        "siglip_so400m_patch14_384" => Some((1152, 27, 16, 3.7362, 14)),
        _ => None,
    }
}

/// A JSON object being read, with the file and key path used in errors.
struct Obj<'a> {
    file: &'a str,
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Config { file: self.file.to_string(), key: self.key(key), message: message.into() }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    fn child(&self, key: &str) -> Result<Option<Obj<'a>>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj { file: self.file, path: self.key(key), map })),
            Some(v) => Err(self.err(key, format!("expected an object, got {}", kind(v)))),
        }
    }

    fn need_child(&self, key: &str) -> Result<Obj<'a>> {
        self.child(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, format!("expected a string, got {}", kind(v)))),
        }
    }

    /// A positive integer no larger than `max`, or None when absent.
    fn size(&self, key: &str, max: usize) -> Result<Option<usize>> {
        let Some(v) = self.map.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
        let n = match v {
            Value::Number(n) => n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e19).map(|f| f as u64)),
            _ => return Err(self.err(key, format!("expected a positive integer, got {}", kind(v)))),
        };
        match n {
            Some(n) if n >= 1 && n <= max as u64 => Ok(Some(n as usize)),
            _ => Err(self.err(key, format!("{v} is out of range (1..={max})"))),
        }
    }

    fn size_or(&self, key: &str, max: usize, default: usize) -> Result<usize> {
        Ok(self.size(key, max)?.unwrap_or(default))
    }

    fn need_size(&self, key: &str, max: usize) -> Result<usize> {
        self.size(key, max)?.ok_or_else(|| self.err(key, "missing"))
    }

    /// An integer of either sign (select_layer).
    fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some_and(|i| i.unsigned_abs() <= MAX_LAYERS as u64) => Ok(n.as_i64()),
            Some(v) => Err(self.err(key, format!("expected a small integer, got {v}"))),
        }
    }

    /// A finite float in (lo, hi), or None when absent.
    fn float(&self, key: &str, lo: f64, hi: f64) -> Result<Option<f64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if f.is_finite() && f > lo && f < hi => Ok(Some(f)),
                _ => Err(self.err(key, format!("{n} is out of range ({lo}..{hi})"))),
            },
            Some(v) => Err(self.err(key, format!("expected a number, got {}", kind(v)))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.err(key, format!("expected true or false, got {}", kind(v)))),
        }
    }

    /// Three finite numbers (image_mean / image_std); a single number is repeated.
    fn triple(&self, key: &str, positive: bool) -> Result<Option<[f32; 3]>> {
        // Checked as the f32 it becomes: 1e-300 is positive in f64 but a zero std in f32.
        let ok = |f: f64| {
            let x = f as f32;
            x.is_finite() && x.abs() < 1e6 && (!positive || (x > 0.0 && x.is_normal()))
        };
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_f64().is_some_and(ok) => Ok(Some([n.as_f64().unwrap_or(0.0) as f32; 3])),
            Some(Value::Array(a)) if a.len() == 3 && a.iter().all(|v| v.as_f64().is_some_and(ok)) => {
                Ok(Some([0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.0) as f32)))
            }
            Some(v) => Err(self.err(key, format!("expected three finite{} numbers, got {v}", if positive { " positive" } else { "" }))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_object(file: &str, bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(v) => Err(Error::Config { file: file.into(), key: "(top level)".into(), message: format!("expected an object, got {}", kind(&v)) }),
        Err(e) => Err(Error::Config { file: file.into(), key: "(top level)".into(), message: format!("invalid JSON: {e}") }),
    }
}

const CONFIG: &str = "config.json";
const PREPROCESSOR: &str = "preprocessor_config.json";
const PROCESSOR: &str = "processor_config.json";

impl ModelConfig {
    /// Reads `config.json` and, when present, `preprocessor_config.json` (image size, mean, std)
    /// and `processor_config.json` (`num_image_tokens`), checking they agree.
    pub fn from_dir_files(config_json: &[u8], preprocessor_json: Option<&[u8]>, processor_json: Option<&[u8]>) -> Result<ModelConfig> {
        let map = parse_object(CONFIG, config_json)?;
        let root = Obj { file: CONFIG, path: String::new(), map: &map };
        let layout = match root.str("model_type")? {
            Some("multi_modality") => Layout::Original,
            Some("deepseek_vl") => Layout::Hf,
            Some("deepseek_vl_hybrid") => return Err(root.err("model_type", "deepseek_vl_hybrid (the 7B hybrid tower) is not supported yet")),
            Some(other) => return Err(root.err("model_type", format!("`{other}` is not a DeepSeek-VL model (expected multi_modality or deepseek_vl)"))),
            None if map.contains_key("language_config") => Layout::Original,
            None if map.contains_key("text_config") => Layout::Hf,
            None => return Err(root.err("model_type", "missing, and neither language_config nor text_config is present")),
        };
        let (mut vision, aligner, llm, image_token_id) = match layout {
            Layout::Original => original(&root)?,
            Layout::Hf => hf(&root)?,
        };

        if let Some(bytes) = preprocessor_json {
            let map = parse_object(PREPROCESSOR, bytes)?;
            let pre = Obj { file: PREPROCESSOR, path: String::new(), map: &map };
            if let Some(m) = pre.triple("image_mean", false)? {
                vision.image_mean = m;
            }
            if let Some(s) = pre.triple("image_std", true)? {
                vision.image_std = s;
            }
            if let Some(size) = pre.size("image_size", MAX_IMAGE)?
                && size != vision.image_size
            {
                return Err(pre.err("image_size", format!("{size} disagrees with the vision tower's image_size {} in config.json", vision.image_size)));
            }
        }

        let grid = vision.image_size / vision.patch_size;
        let num_image_tokens = grid * grid;
        if let Some(bytes) = processor_json {
            let map = parse_object(PROCESSOR, bytes)?;
            let pro = Obj { file: PROCESSOR, path: String::new(), map: &map };
            if let Some(n) = pro.size("num_image_tokens", MAX_IMAGE * MAX_IMAGE)?
                && n != num_image_tokens
            {
                return Err(pro.err("num_image_tokens", format!("{n} disagrees with floor(image_size {} / patch_size {})^2 = {num_image_tokens}", vision.image_size, vision.patch_size)));
            }
        }
        Ok(ModelConfig { layout, vision, aligner, llm, num_image_tokens, image_token_id })
    }
}

type Parts = (VisionConfig, AlignerConfig, LlmConfig, Option<u32>);

fn original(root: &Obj) -> Result<Parts> {
    let vc = root.need_child("vision_config")?;
    match vc.str("cls")? {
        None | Some("CLIPVisionTower") => {}
        Some(other) => return Err(vc.err("cls", format!("`{other}` is not supported (only CLIPVisionTower)"))),
    }
    let vp = vc.need_child("params")?;
    let name = vp.str("model_name")?.unwrap_or("");
    let row = vision_table(name);
    let over = (vp.size("width", MAX_DIM)?, vp.size("layers", MAX_LAYERS)?, vp.size("heads", MAX_DIM)?, vp.float("mlp_ratio", 0.0, 1e3)?, vp.size("patch_size", MAX_IMAGE)?);
    let (width, total, heads, ratio, patch) = match (row, over) {
        (Some(r), o) => (o.0.unwrap_or(r.0), o.1.unwrap_or(r.1), o.2.unwrap_or(r.2), o.3.unwrap_or(r.3), o.4.unwrap_or(r.4)),
        (None, (Some(w), Some(l), Some(h), Some(m), Some(p))) => (w, l, h, m, p),
        (None, _) => {
            return Err(vp.err("model_name", format!("`{name}` is unknown (known: siglip_large_patch16_384, siglip_so400m_patch14_384) and width/layers/heads/mlp_ratio/patch_size are not all given")));
        }
    };
    match vp.str("select_feature")? {
        None | Some("same") => {}
        Some(other) => return Err(vp.err("select_feature", format!("`{other}` is not supported (only `same`)"))),
    }
    let select = vp.int("select_layer")?.unwrap_or(-1);
    let total_i = total as i64;
    let layers = if select <= 0 { total_i.min(total_i + select + 1) } else { total_i.min(select) };
    if layers < 1 {
        return Err(vp.err("select_layer", format!("{select} leaves no block of {total}")));
    }
    let image_size = vp.size_or("image_size", MAX_IMAGE, 384)?;
    let vision = vision_checked(&vp, image_size, patch, width, layers as usize, heads, ratio, 1e-6, ["image_size", "patch_size", "width", "heads", "mlp_ratio"])?;

    let ac = root.need_child("aligner_config")?;
    let ap = ac.need_child("params")?;
    let depth = match ap.str("projector_type")? {
        Some("mlp_gelu") | None => ap.size_or("depth", 64, 1)?,
        Some("linear") => 1,
        Some(other) => return Err(ap.err("projector_type", format!("`{other}` is not supported (mlp_gelu or linear)"))),
    };
    let aligner = AlignerConfig { input_dim: ap.need_size("input_dim", MAX_DIM)?, n_embed: ap.need_size("n_embed", MAX_DIM)?, depth };
    if aligner.input_dim != vision.width {
        return Err(ap.err("input_dim", format!("{} disagrees with the vision width {width}", aligner.input_dim)));
    }
    let lc = root.need_child("language_config")?;
    let llm = llama(&lc, false)?;
    if aligner.n_embed != llm.hidden {
        return Err(ap.err("n_embed", format!("{} disagrees with language_config.hidden_size {}", aligner.n_embed, llm.hidden)));
    }
    Ok((vision, aligner, llm, None))
}

fn hf(root: &Obj) -> Result<Parts> {
    let vc = root.need_child("vision_config")?;
    match vc.str("model_type")? {
        None | Some("siglip_vision_model") => {}
        Some(other) => return Err(vc.err("model_type", format!("`{other}` is not supported (only siglip_vision_model)"))),
    }
    // Absent keys take SiglipVisionConfig's defaults, as transformers does when it reads the file.
    let width = vc.size_or("hidden_size", MAX_DIM, 768)?;
    let mlp = vc.size_or("intermediate_size", MAX_DIM * 8, 3072)?;
    let eps = vc.float("layer_norm_eps", 0.0, 1.0)?.unwrap_or(1e-6);
    let image_size = vc.size_or("image_size", MAX_IMAGE, 224)?;
    let patch = vc.size_or("patch_size", MAX_IMAGE, 16)?;
    let layers = vc.size_or("num_hidden_layers", MAX_LAYERS, 12)?;
    let heads = vc.size_or("num_attention_heads", MAX_DIM, 12)?;
    let mut vision = vision_checked(&vc, image_size, patch, width, layers, heads, 1.0, eps, ["image_size", "patch_size", "hidden_size", "num_attention_heads", "intermediate_size"])?;
    vision.mlp_dim = mlp;
    let tc = root.need_child("text_config")?;
    let tie_default = root.bool("tie_word_embeddings")?.unwrap_or(true);
    let mut llm = llama(&tc, tie_default)?;
    // DeepseekVLConfig ties lm_head to the embeddings unless the top level says otherwise.
    llm.tie_embeddings |= tie_default;
    let aligner = AlignerConfig { input_dim: vision.width, n_embed: llm.hidden, depth: 2 };
    let image_token_id = match root.map.get("image_token_id") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(id) if id < llm.vocab as u64 => Some(id as u32),
            _ => return Err(root.err("image_token_id", format!("{v} is not a token id below vocab_size {}", llm.vocab))),
        },
    };
    Ok((vision, aligner, llm, image_token_id))
}

/// Checks the vision numbers together; `keys` names (image_size, patch, width, heads, mlp) in this layout's terms.
#[allow(clippy::too_many_arguments)]
fn vision_checked(o: &Obj, image_size: usize, patch: usize, width: usize, layers: usize, heads: usize, ratio: f64, eps: f64, keys: [&str; 5]) -> Result<VisionConfig> {
    // The patch conv has stride = kernel = patch and no padding: a remainder is dropped, as in
    // timm (384 px at patch 14 gives a 27x27 grid).
    if patch > image_size {
        return Err(o.err(keys[1], format!("{patch} exceeds image_size {image_size}")));
    }
    if !width.is_multiple_of(heads) {
        return Err(o.err(keys[3], format!("{heads} heads do not divide width {width}")));
    }
    let mlp = (width as f64 * ratio).floor();
    if !(1.0..=(MAX_DIM * 8) as f64).contains(&mlp) {
        return Err(o.err(keys[4], format!("gives an MLP width of {mlp}")));
    }
    Ok(VisionConfig { image_size, patch_size: patch, width, layers, heads, mlp_dim: mlp as usize, eps, image_mean: [0.5; 3], image_std: [0.5; 3] })
}

/// A LlamaConfig-style object (`language_config` or `text_config`); absent keys take LlamaConfig's defaults.
fn llama(o: &Obj, tie_default: bool) -> Result<LlmConfig> {
    if let Some(act) = o.str("hidden_act")?
        && act != "silu"
    {
        return Err(o.err("hidden_act", format!("`{act}` is not supported (only silu)")));
    }
    for key in ["attention_bias", "mlp_bias"] {
        if o.bool(key)? == Some(true) {
            return Err(o.err(key, "biases in the decoder are not supported"));
        }
    }
    let hidden = o.size_or("hidden_size", MAX_DIM, 4096)?;
    let heads = o.size_or("num_attention_heads", MAX_DIM, 32)?;
    let kv_heads = o.size_or("num_key_value_heads", MAX_DIM, heads)?;
    if hidden % heads != 0 && o.size("head_dim", MAX_DIM)?.is_none() {
        return Err(o.err("num_attention_heads", format!("{heads} heads do not divide hidden_size {hidden}")));
    }
    let head_dim = o.size_or("head_dim", MAX_DIM, hidden / heads)?;
    if head_dim % 2 != 0 {
        return Err(o.err("head_dim", format!("{head_dim} is odd; rotary embeddings need an even head size")));
    }
    if kv_heads > heads || heads % kv_heads != 0 {
        return Err(o.err("num_key_value_heads", format!("{kv_heads} does not divide num_attention_heads {heads}")));
    }
    // rope_theta at the top (transformers 4.x) or inside rope_parameters (5.x); scaled RoPE is not supported.
    let mut rope_theta = o.float("rope_theta", 0.0, 1e12)?;
    for key in ["rope_scaling", "rope_parameters"] {
        if let Some(rp) = o.child(key)? {
            match rp.str("rope_type")?.or(rp.str("type")?) {
                None | Some("default") => {}
                Some(other) => return Err(rp.err("rope_type", format!("`{other}` RoPE scaling is not supported"))),
            }
            if let Some(t) = rp.float("rope_theta", 0.0, 1e12)? {
                rope_theta = Some(t);
            }
        }
    }
    Ok(LlmConfig {
        hidden,
        intermediate: o.size_or("intermediate_size", MAX_DIM * 8, 11008)?,
        layers: o.size_or("num_hidden_layers", MAX_LAYERS, 32)?,
        heads,
        kv_heads,
        head_dim,
        vocab: o.size_or("vocab_size", MAX_VOCAB, 32000)?,
        rms_eps: o.float("rms_norm_eps", 0.0, 1.0)?.unwrap_or(1e-6),
        rope_theta: rope_theta.unwrap_or(10000.0),
        max_positions: o.size_or("max_position_embeddings", MAX_POSITIONS, 2048)?,
        tie_embeddings: o.bool("tie_word_embeddings")?.unwrap_or(tie_default),
    })
}
