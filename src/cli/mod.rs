//! Command handlers of the `onnx-prune` binary that are too long for main.rs.

pub mod prune;
