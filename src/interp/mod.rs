//! The interpreter: runs the IR on real inputs, generic over the float type it computes in.

pub mod engine;
pub mod ops;

pub use engine::{Engine, Feeds, fmt_shape, zero_tensor};
