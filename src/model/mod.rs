//! The DeepSeek-VL model: configuration, checkpoint reading, weight loading and the graph
//! (vision tower, aligner, decoder, the whole model).

pub mod config;
pub mod footprint;
pub mod llama;
pub mod safetensors;
pub mod sam;
pub mod sam_weights;
pub mod siglip;
pub mod vlm;
pub mod weights;

pub use config::{AlignerConfig, Layout, LlmConfig, ModelConfig, SamConfig, VisionConfig};
pub use safetensors::{TensorInfo, TensorSource};
pub use footprint::{estimate, WeightStats};
pub use weights::{load_weights, load_weights_opts, load_weights_with, LoadOptions, LoadProgress, Weights};
