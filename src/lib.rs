//! onnx-prune: turns an ONNX model into a smaller one that computes nearly the same function.
//!
//! Stages, one module each: [`onnx`] (protobuf I/O), [`ir`] (typed graph), [`interp`] (the
//! interpreter), [`tensor`] (the tensor and scalar types every stage shares).

pub mod analysis;
pub mod autodiff;
pub mod calib;
pub mod data;
pub mod error;
pub mod inspect;
pub mod interp;
pub mod ir;
pub mod memory;
pub mod onnx;
pub mod prune;
pub mod rewrite;
pub mod runtime;
pub mod sensitivity;
pub mod sparse;
pub mod tensor;
pub mod validate;

pub use error::{Error, Result};
