//! The intermediate representation: a typed, topologically sorted graph over named values,
//! with weights (initializers and Constant outputs) decoded into tensors.

pub mod attr;
pub mod graph;
pub mod op;
pub mod subgraph;

pub use graph::{Dim, Graph, Model, Node, OPSET_RANGE, ValueId, ValueInfo, Weight, WeightSource};
pub use op::{Op, ParseError};
