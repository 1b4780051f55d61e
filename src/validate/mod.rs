//! Agreement between two models' outputs: errors, cosine similarity, top-1 agreement and
//! accuracy against labels.

pub mod gate;
pub mod metrics;

pub use metrics::{OutputAgreement, accuracy, agreement, top1};
