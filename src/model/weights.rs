// PLACEHOLDER (replaced by the loader branch): the interface the graph is written against.
use crate::gpu::{RowSplit, Tensor};
pub struct Linear { pub w: RowSplit, pub b: Option<Tensor> }
pub struct VisionBlock { pub norm1_w: Tensor, pub norm1_b: Tensor, pub qkv: Linear, pub proj: Linear, pub norm2_w: Tensor, pub norm2_b: Tensor, pub fc1: Linear, pub fc2: Linear }
pub struct VisionWeights { pub patch: Linear, pub pos_embed: Tensor, pub blocks: Vec<VisionBlock>, pub norm_w: Tensor, pub norm_b: Tensor }
pub struct AlignerWeights { pub layers: Vec<Linear> }
pub struct LlmLayer { pub input_norm: Tensor, pub q: Linear, pub k: Linear, pub v: Linear, pub o: Linear, pub post_norm: Tensor, pub gate: Linear, pub up: Linear, pub down: Linear }
pub struct LlmWeights { pub embed: RowSplit, pub layers: Vec<LlmLayer>, pub norm: Tensor, pub lm_head: RowSplit }
pub struct Weights { pub vision: VisionWeights, pub aligner: AlignerWeights, pub llm: LlmWeights }
