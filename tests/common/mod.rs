//! Shared test helpers: where setup put the downloaded dependencies and models.
#![allow(dead_code)]

use std::path::PathBuf;

/// `.deps/` (or `$ONNX_PRUNE_DEPS`), filled by scripts/setup.sh.
pub fn deps() -> PathBuf {
    std::env::var_os("ONNX_PRUNE_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps"))
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}
