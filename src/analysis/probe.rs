//! Concrete shapes and integer values of one forward pass.

use crate::error::Result;
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, ValueId};
use crate::tensor::{Data, Tensor};

/// What one node-by-node run on a small batch tells about every value.
pub struct Probe {
    /// Shape of every computed value (weights included), by value id.
    pub shapes: Vec<Option<Vec<usize>>>,
    /// Integer values (shape logic: Reshape targets, Slice bounds, Split sizes), by value id.
    pub ints: Vec<Option<Vec<i64>>>,
    /// Samples in the probe batch.
    pub batch: usize,
}

impl Probe {
    pub fn run(g: &Graph, feeds: Feeds<f32>) -> Result<Probe> {
        let batch = feeds
            .first()
            .and_then(|(_, t)| t.shape().first().copied())
            .unwrap_or(1);
        let values = Engine::<f32>::exact(g)?.run_all(feeds)?;
        Ok(Self::from_values(&values, batch))
    }

    /// The interpreter's probe, or onnxruntime's when the graph has nodes the interpreter
    /// cannot run (partial support).
    pub fn of_model(m: &crate::ir::Model, feeds: Feeds<f32>) -> Result<Probe> {
        if m.graph.unsupported().is_empty() {
            Self::run(&m.graph, feeds)
        } else {
            super::probe_ort::probe(m, &feeds)
        }
    }

    pub fn from_values(values: &[Option<Tensor<f32>>], batch: usize) -> Probe {
        let shapes = values
            .iter()
            .map(|v| v.as_ref().map(|t| t.shape().to_vec()))
            .collect();
        let ints = values
            .iter()
            .map(|v| match v.as_ref().map(|t| &t.data) {
                Some(Data::Int(a)) if a.len() <= 1 << 16 => Some(a.iter().copied().collect()),
                _ => None,
            })
            .collect();
        Probe {
            shapes,
            ints,
            batch,
        }
    }

    pub fn shape(&self, v: ValueId) -> Option<&[usize]> {
        self.shapes.get(v).and_then(|s| s.as_deref())
    }

    pub fn int(&self, v: ValueId) -> Option<&[i64]> {
        self.ints.get(v).and_then(|s| s.as_deref())
    }
}
