//! Reference runtimes: onnxruntime (ground truth, CPU or CUDA) and tract (pure Rust).

pub mod ort;
#[cfg(feature = "tract")]
pub mod tract;

pub use ort::{Device, OrtSession, find_dylib};
