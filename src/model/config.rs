// PLACEHOLDER (replaced by the loader branch): the interface the graph is written against.
use crate::error::Result;
pub enum Layout { Original, Hf }
pub struct VisionConfig { pub image_size: usize, pub patch_size: usize, pub width: usize, pub layers: usize, pub heads: usize, pub mlp_dim: usize, pub eps: f64, pub image_mean: [f32; 3], pub image_std: [f32; 3] }
pub struct AlignerConfig { pub input_dim: usize, pub n_embed: usize, pub depth: usize }
pub struct LlmConfig { pub hidden: usize, pub intermediate: usize, pub layers: usize, pub heads: usize, pub kv_heads: usize, pub head_dim: usize, pub vocab: usize, pub rms_eps: f64, pub rope_theta: f64, pub max_positions: usize }
pub struct ModelConfig { pub layout: Layout, pub vision: VisionConfig, pub aligner: AlignerConfig, pub llm: LlmConfig, pub num_image_tokens: usize }
impl ModelConfig { pub fn from_dir_files(_c: &[u8], _p: Option<&[u8]>, _q: Option<&[u8]>) -> Result<ModelConfig> { unimplemented!() } }
