//! The DeepSeek-VL model: configuration, checkpoint reading and weight loading.

pub mod config;
pub mod safetensors;
pub mod weights;

pub use config::{AlignerConfig, Layout, LlmConfig, ModelConfig, VisionConfig};
pub use safetensors::{TensorInfo, TensorSource};
pub use weights::{load_weights, Weights};
