//! Dependency analysis for structured pruning: which channels, attention heads and MLP units
//! of a graph can be removed, and which tensor slices, attributes and shape constants go with
//! each.
//!
//! - [`probe`]: one node-by-node forward on a small batch gives every value's concrete shape
//!   and every integer (shape-logic) value.
//! - [`groups`]: a pass in topological order that follows each producer's channels through
//!   the graph and couples whatever must be removed together.

pub mod groups;
pub mod probe;
pub mod probe_ort;
pub mod report;
mod rules;
mod union_find;

pub use groups::{
    Analysis, Fix, Group, GroupKind, Options, Role, Slice, Track, Unit, UnitRef, analyze,
};
pub use probe::Probe;
