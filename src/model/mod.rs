pub mod config;
pub mod weights;
pub mod siglip;
pub mod llama;
pub mod vlm;
