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
    /// The processor's mean and std (`preprocessor_config.json`; for the hybrid tower, of the high-res image).
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// The tower's own `Normalize(pixel_mean, pixel_std)` of its input (the original
    /// `CLIPVisionTower.image_norm`), when its params name one.
    pub pixel_norm: Option<([f32; 3], [f32; 3])>,
}

/// SAM-B, the high-resolution tower of the 7B hybrid encoder (`sam_b_downsample`).
#[derive(Clone, Debug, PartialEq)]
pub struct SamConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_dim: usize,
    pub eps: f64,
    /// Side of the attention windows; blocks listed in `global` attend over the whole grid.
    pub window: usize,
    pub global: Vec<usize>,
    /// Channels of the neck (`out_chans`).
    pub neck: usize,
    /// Output channels of the stride-2 convs after the bilinear resize.
    pub downsample: Vec<usize>,
    pub pixel_norm: Option<([f32; 3], [f32; 3])>,
}

impl SamConfig {
    /// Side of the patch grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Channels of the tower's output tokens.
    pub fn out_dim(&self) -> usize {
        self.downsample.last().copied().unwrap_or(self.neck)
    }
}

/// The MLP aligner: `depth` linears with GELU between them. The hybrid one
/// (`low_high_hybrid_split_mlp_gelu`) first projects each tower to n_embed/2 and concatenates
/// (high | low); `depth - 1` GELU + Linear pairs follow.
#[derive(Clone, Debug, PartialEq)]
pub struct AlignerConfig {
    pub input_dim: usize,
    pub n_embed: usize,
    pub depth: usize,
    pub hybrid: bool,
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
    /// The hybrid tower's high-resolution SAM-B (7B); `vision` is then its low-resolution SigLIP.
    pub sam: Option<SamConfig>,
    /// The processor's `do_normalize`; the hybrid processors leave normalising to each tower.
    pub do_normalize: bool,
}

impl ModelConfig {
    /// Side of the square image the processor produces (the high-res one for the hybrid tower).
    pub fn image_size(&self) -> usize {
        self.sam.as_ref().map_or(self.vision.image_size, |s| s.image_size)
    }
}

/// Upper bounds on sizes, far above any DeepSeek-VL model, so a hostile file cannot make us allocate.
const MAX_DIM: usize = 1 << 17;
const MAX_LAYERS: usize = 4096;
const MAX_VOCAB: usize = 1 << 24;
const MAX_POSITIONS: usize = 1 << 24;
const MAX_IMAGE: usize = 1 << 14;
/// Stride-2 convs after SAM's neck (the 7B has 2).
const MAX_DOWNSAMPLES: usize = 4;

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
            Some("deepseek_vl" | "deepseek_vl_hybrid") => Layout::Hf,
            Some(other) => return Err(root.err("model_type", format!("`{other}` is not a DeepSeek-VL model (expected multi_modality, deepseek_vl or deepseek_vl_hybrid)"))),
            None if map.contains_key("language_config") => Layout::Original,
            None if map.contains_key("text_config") => Layout::Hf,
            None => return Err(root.err("model_type", "missing, and neither language_config nor text_config is present")),
        };
        let (mut vision, aligner, llm, image_token_id, mut sam) = match layout {
            Layout::Original => original(&root)?,
            Layout::Hf => hf(&root)?,
        };

        let mut do_normalize = true;
        if let Some(sam) = sam.as_mut().filter(|_| layout == Layout::Hf) {
            // HF's config.json does not carry the towers' Normalize: the 7B's values, which
            // HF's hybrid processor config (when present) overrides.
            sam.pixel_norm = Some((CLIP_MEAN, CLIP_STD));
            vision.pixel_norm = Some(([0.5; 3], [0.5; 3]));
            (vision.image_mean, vision.image_std, do_normalize) = (CLIP_MEAN, CLIP_STD, false);
        }
        if let Some(bytes) = preprocessor_json {
            let map = parse_object(PREPROCESSOR, bytes)?;
            let pre = Obj { file: PREPROCESSOR, path: String::new(), map: &map };
            let hf_hybrid = ["high_res_size", "high_res_image_mean", "high_res_image_std"].iter().any(|k| map.contains_key(*k));
            if let Some(sam) = sam.as_mut().filter(|_| hf_hybrid) {
                hf_hybrid_processor(&pre, &mut vision, sam)?;
            } else {
                if let Some(m) = pre.triple("image_mean", false)? {
                    vision.image_mean = m;
                }
                if let Some(s) = pre.triple("image_std", true)? {
                    vision.image_std = s;
                }
                do_normalize = pre.bool("do_normalize")?.unwrap_or(true);
                let (size, whose) = match &sam {
                    Some(s) => (s.image_size, "high-res tower"),
                    None => (vision.image_size, "vision tower"),
                };
                if let Some(got) = pre.size("image_size", MAX_IMAGE)?
                    && got != size
                {
                    return Err(pre.err("image_size", format!("{got} disagrees with the {whose}'s image_size {size} in config.json")));
                }
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
        Ok(ModelConfig { layout, vision, aligner, llm, num_image_tokens, image_token_id, sam, do_normalize })
    }
}

type Parts = (VisionConfig, AlignerConfig, LlmConfig, Option<u32>, Option<SamConfig>);

fn original(root: &Obj) -> Result<Parts> {
    let vc = root.need_child("vision_config")?;
    let (vision, sam) = match vc.str("cls")? {
        None | Some("CLIPVisionTower") => (siglip_params(&vc.need_child("params")?)?, None),
        Some("HybridVisionTower") => {
            let vp = vc.need_child("params")?;
            match vp.str("concat_type")? {
                None | Some("tuple") => {}
                Some(other) => return Err(vp.err("concat_type", format!("`{other}` is not supported (only tuple)"))),
            }
            let sam = sam_params(&vp.need_child("high_res_cfg")?)?;
            (siglip_params(&vp.need_child("low_res_cfg")?)?, Some(sam))
        }
        Some(other) => return Err(vc.err("cls", format!("`{other}` is not supported (CLIPVisionTower or HybridVisionTower)"))),
    };

    let ac = root.need_child("aligner_config")?;
    let ap = ac.need_child("params")?;
    let (depth, hybrid) = match ap.str("projector_type")? {
        Some("mlp_gelu") | None => (ap.size_or("depth", 64, 1)?, false),
        Some("linear") => (1, false),
        Some("low_high_hybrid_split_mlp_gelu") => (ap.size_or("depth", 64, 1)?, true),
        Some(other) => return Err(ap.err("projector_type", format!("`{other}` is not supported (mlp_gelu, linear or low_high_hybrid_split_mlp_gelu)"))),
    };
    let aligner = AlignerConfig { input_dim: ap.need_size("input_dim", MAX_DIM)?, n_embed: ap.need_size("n_embed", MAX_DIM)?, depth, hybrid };
    if aligner.input_dim != vision.width {
        return Err(ap.err("input_dim", format!("{} disagrees with the vision width {}", aligner.input_dim, vision.width)));
    }
    match (&sam, hybrid) {
        (Some(s), true) if s.out_dim() != aligner.input_dim => {
            return Err(ap.err("input_dim", format!("{} disagrees with the high-res tower's {} output channels", aligner.input_dim, s.out_dim())));
        }
        (Some(_), true) if !aligner.n_embed.is_multiple_of(2) => return Err(ap.err("n_embed", format!("{} is odd; the hybrid aligner splits it in halves", aligner.n_embed))),
        (Some(_), false) => return Err(ap.err("projector_type", "the hybrid vision tower needs low_high_hybrid_split_mlp_gelu")),
        (None, true) => return Err(ap.err("projector_type", "low_high_hybrid_split_mlp_gelu needs the HybridVisionTower")),
        _ => {}
    }
    let lc = root.need_child("language_config")?;
    let llm = llama(&lc, false)?;
    if aligner.n_embed != llm.hidden {
        return Err(ap.err("n_embed", format!("{} disagrees with language_config.hidden_size {}", aligner.n_embed, llm.hidden)));
    }
    Ok((vision, aligner, llm, None, sam))
}

/// `CLIPVisionTower`'s `Normalize(pixel_mean, pixel_std)`, when both are given.
fn pixel_norm(p: &Obj) -> Result<Option<([f32; 3], [f32; 3])>> {
    match (p.triple("pixel_mean", false)?, p.triple("pixel_std", true)?) {
        (Some(m), Some(s)) => Ok(Some((m, s))),
        (None, None) => Ok(None),
        _ => Err(p.err("pixel_mean", "pixel_mean and pixel_std come together")),
    }
}

/// One row of the original code's SAM table: width, depth, heads, global blocks, downsample channels.
type SamRow = (usize, usize, usize, &'static [usize], &'static [usize]);

fn sam_table(model_name: &str) -> Option<SamRow> {
    match model_name {
        "sam_b_downsample" => Some((768, 12, 12, &[2, 5, 8, 11], &[512, 1024])),
        _ => None,
    }
}

/// A list of small non-negative integers (global_attn_indexes, downsample_channels).
fn list(o: &Obj, key: &str, max: usize) -> Result<Option<Vec<usize>>> {
    match o.map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.len() <= 64 && a.iter().all(|v| v.as_u64().is_some_and(|n| n <= max as u64)) => {
            Ok(Some(a.iter().map(|v| v.as_u64().unwrap_or(0) as usize).collect()))
        }
        Some(v) => Err(o.err(key, format!("expected a list of integers up to {max}, got {v}"))),
    }
}

/// `high_res_cfg` of the original hybrid tower: a row of the SAM table (test fixtures may
/// override its values, as for SigLIP), 1024 px unless `image_size` says otherwise. The
/// original builds every block and fixes the window (14), neck width (256) and MLP ratio (4).
fn sam_params(p: &Obj) -> Result<SamConfig> {
    let name = p.str("model_name")?.unwrap_or("");
    let Some((width, layers, heads, global, down)) = sam_table(name) else {
        return Err(p.err("model_name", format!("`{name}` is not supported (only sam_b_downsample)")));
    };
    let sam = SamConfig {
        image_size: p.size_or("image_size", MAX_IMAGE, 1024)?,
        patch_size: p.size_or("patch_size", MAX_IMAGE, 16)?,
        width: p.size_or("width", MAX_DIM, width)?,
        layers: p.size_or("layers", MAX_LAYERS, layers)?,
        heads: p.size_or("heads", MAX_DIM, heads)?,
        mlp_dim: 0,
        eps: 1e-6,
        window: p.size_or("window_size", MAX_IMAGE, 14)?,
        global: list(p, "global_attn_indexes", MAX_LAYERS)?.unwrap_or(global.to_vec()),
        neck: p.size_or("out_chans", MAX_DIM, 256)?,
        downsample: list(p, "downsample_channels", MAX_DIM)?.unwrap_or(down.to_vec()),
        pixel_norm: pixel_norm(p)?,
    };
    let ratio = p.float("mlp_ratio", 0.0, 1e3)?.unwrap_or(4.0);
    sam_checked(p, sam, ratio)
}

/// Checks the SAM numbers together.
fn sam_checked(o: &Obj, mut s: SamConfig, ratio: f64) -> Result<SamConfig> {
    if s.patch_size > s.image_size {
        return Err(o.err("patch_size", format!("{} exceeds image_size {}", s.patch_size, s.image_size)));
    }
    if !s.width.is_multiple_of(s.heads) {
        return Err(o.err("heads", format!("{} heads do not divide width {}", s.heads, s.width)));
    }
    if let Some(&g) = s.global.iter().find(|&&g| g >= s.layers) {
        return Err(o.err("global_attn_indexes", format!("block {g} does not exist in {} blocks", s.layers)));
    }
    if s.global.is_empty() {
        return Err(o.err("global_attn_indexes", "no global block: the high-res path reads the first one"));
    }
    if s.downsample.contains(&0) || s.neck == 0 {
        return Err(o.err("downsample_channels", "a conv with no channels"));
    }
    // Each stride-2 conv halves the map: the resize before them targets 2^n times SigLIP's grid.
    if s.downsample.is_empty() || s.downsample.len() > MAX_DOWNSAMPLES {
        return Err(o.err("downsample_channels", format!("{} convs (1 to {MAX_DOWNSAMPLES} supported)", s.downsample.len())));
    }
    let mlp = (s.width as f64 * ratio).floor();
    if !(1.0..=(MAX_DIM * 8) as f64).contains(&mlp) {
        return Err(o.err("mlp_ratio", format!("gives an MLP width of {mlp}")));
    }
    if s.mlp_dim == 0 {
        s.mlp_dim = mlp as usize;
    }
    Ok(s)
}

/// HF `high_res_vision_config` (`SamVisionConfig`; absent keys take its defaults).
fn hf_sam(o: &Obj) -> Result<SamConfig> {
    match o.str("model_type")? {
        None | Some("sam_vision_model") => {}
        Some(other) => return Err(o.err("model_type", format!("`{other}` is not supported (only sam_vision_model)"))),
    }
    for (key, want) in [("use_abs_pos", true), ("use_rel_pos", true), ("qkv_bias", true)] {
        if o.bool(key)?.is_some_and(|b| b != want) {
            return Err(o.err(key, format!("only {want} is supported")));
        }
    }
    if let Some(act) = o.str("hidden_act")?
        && act != "gelu"
    {
        return Err(o.err("hidden_act", format!("`{act}` is not supported (only gelu)")));
    }
    let width = o.size_or("hidden_size", MAX_DIM, 768)?;
    let out = o.size_or("output_channels", MAX_DIM, 256)?;
    let sam = SamConfig {
        image_size: o.size_or("image_size", MAX_IMAGE, 1024)?,
        patch_size: o.size_or("patch_size", MAX_IMAGE, 16)?,
        width,
        layers: o.size_or("num_hidden_layers", MAX_LAYERS, 12)?,
        heads: o.size_or("num_attention_heads", MAX_DIM, 12)?,
        mlp_dim: o.size("mlp_dim", MAX_DIM * 8)?.unwrap_or(0),
        eps: o.float("layer_norm_eps", 0.0, 1.0)?.unwrap_or(1e-6),
        window: o.size_or("window_size", MAX_IMAGE, 14)?,
        global: list(o, "global_attn_indexes", MAX_LAYERS)?.unwrap_or(vec![2, 5, 8, 11]),
        neck: out,
        // DeepseekVLSamVisionProj: two stride-2 convs to 2x and 4x the neck's channels.
        downsample: vec![2 * out, 4 * out],
        pixel_norm: None,
    };
    let ratio = o.float("mlp_ratio", 0.0, 1e3)?.unwrap_or(4.0);
    sam_checked(o, sam, ratio)
}

/// OpenAI CLIP's normalisation, SAM's in DeepSeek-VL 7B.
const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// HF's hybrid processor: `high_res_size`, `high_res_image_mean/std` for SAM, `image_mean/std`
/// for SigLIP. The original pipeline is kept (the low-res image is resized from the processed
/// high-res one), with these numbers.
fn hf_hybrid_processor(pre: &Obj, vision: &mut VisionConfig, sam: &mut SamConfig) -> Result<()> {
    let high_mean = pre.triple("high_res_image_mean", false)?.unwrap_or(CLIP_MEAN);
    let high_std = pre.triple("high_res_image_std", true)?.unwrap_or(CLIP_STD);
    let low = (pre.triple("image_mean", false)?.unwrap_or([0.5; 3]), pre.triple("image_std", true)?.unwrap_or([0.5; 3]));
    let normalize = pre.bool("do_normalize")?.unwrap_or(true);
    vision.image_mean = high_mean;
    vision.image_std = high_std;
    sam.pixel_norm = normalize.then_some((high_mean, high_std));
    vision.pixel_norm = normalize.then_some(low);
    if let Some(hs) = pre.child("high_res_size")? {
        let h = hs.need_size("height", MAX_IMAGE)?;
        if hs.size("width", MAX_IMAGE)?.is_some_and(|w| w != h) {
            return Err(hs.err("width", "the high-res image must be square"));
        }
        if h != sam.image_size {
            return Err(hs.err("height", format!("{h} disagrees with high_res_vision_config.image_size {}", sam.image_size)));
        }
    }
    Ok(())
}

/// A SigLIP tower's params (`vision_config.params`, or the hybrid's `low_res_cfg`).
fn siglip_params(vp: &Obj) -> Result<VisionConfig> {
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
    let mut vision = vision_checked(vp, image_size, patch, width, layers as usize, heads, ratio, 1e-6, ["image_size", "patch_size", "width", "heads", "mlp_ratio"])?;
    vision.pixel_norm = pixel_norm(vp)?;
    Ok(vision)
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
    let sam = match root.child("high_res_vision_config")? {
        Some(hc) => Some(hf_sam(&hc)?),
        None if root.str("model_type")? == Some("deepseek_vl_hybrid") => return Err(root.err("high_res_vision_config", "missing")),
        None => None,
    };
    if sam.is_some() && !llm.hidden.is_multiple_of(2) {
        return Err(tc.err("hidden_size", format!("{} is odd; the hybrid aligner splits it in halves", llm.hidden)));
    }
    let aligner = AlignerConfig { input_dim: vision.width, n_embed: llm.hidden, depth: 2, hybrid: sam.is_some() };
    let image_token_id = match root.map.get("image_token_id") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(id) if id < llm.vocab as u64 => Some(id as u32),
            _ => return Err(root.err("image_token_id", format!("{v} is not a token id below vocab_size {}", llm.vocab))),
        },
    };
    Ok((vision, aligner, llm, image_token_id, sam))
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
    Ok(VisionConfig { image_size, patch_size: patch, width, layers, heads, mlp_dim: mlp as usize, eps, image_mean: [0.5; 3], image_std: [0.5; 3], pixel_norm: None })
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
