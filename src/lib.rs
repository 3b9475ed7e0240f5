//! dsvl-gpu: DeepSeek-VL on any GPU through WebGPU.
//!
//! `gpu` holds the runtime (device, tensors, pipelines, recorded step lists);
//! `ops` holds one file per kernel family with its contract, dispatch maths and checks.

pub mod clock;
pub mod error;
pub mod gpu;
pub mod generate;
pub mod model;
pub mod ops;
pub mod check;
pub mod prompt;
mod tokenizer_check;
pub mod quant;
pub mod text;
pub mod image;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod bench_model;
#[cfg(not(target_arch = "wasm32"))]
pub mod hub;

#[cfg(feature = "web")]
pub mod web;

pub use error::{Error, Result};
pub use gpu::{DType, Gpu, GpuOptions, Tensor};
