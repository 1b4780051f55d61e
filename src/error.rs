//! The library's error type. Every message names the file, node or tensor it is about, so a
//! batch job's log line is enough to find the problem.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Not `source`: thiserror would chain it, and `{:#}` would print the cause twice.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// The file is not a readable ONNX model (protobuf, external data, structure).
    #[error("{}: {msg}", path.display())]
    BadModel { path: PathBuf, msg: String },
    /// Something inside the graph is wrong or unsupported; `at` names the node or tensor.
    #[error("{at}: {msg}")]
    Graph { at: String, msg: String },
    /// Operators the interpreter cannot run, listed all at once.
    #[error("unsupported operators: {0}")]
    Unsupported(String),
    /// Input data (calibration, evaluation) does not fit the model.
    #[error("{0}")]
    Data(String),
    /// onnxruntime or tract failed.
    #[error("{0}")]
    Runtime(String),
    /// A command-line value is out of range or inconsistent.
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            err: source,
        }
    }
    pub fn bad_model(path: &Path, msg: impl Into<String>) -> Self {
        Error::BadModel {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub fn graph(at: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Graph {
            at: at.into(),
            msg: msg.into(),
        }
    }
}

/// Shorthand for `Err(Error::graph(..))`.
#[macro_export]
macro_rules! bail_graph {
    ($at:expr, $($fmt:tt)*) => {
        return Err($crate::error::Error::graph($at, format!($($fmt)*)))
    };
}
