//! Reverse mode over a recorded forward pass.

use super::vjp::{self, differentiable};
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::{Data, Real, Tensor};
use ndarray::{ArrayD, ArrayViewD};

/// Every value of one forward pass (by value id), weights included.
pub struct Tape<S> {
    pub values: Vec<Option<Tensor<S>>>,
}

impl<S: Real> Tape<S> {
    pub fn get(&self, id: ValueId) -> Option<&Tensor<S>> {
        self.values.get(id).and_then(|v| v.as_ref())
    }

    /// A float value as an array.
    pub fn float(&self, g: &Graph, id: ValueId) -> Result<ArrayD<S>> {
        self.float_view(g, id).map(|a| a.to_owned())
    }

    /// A float value, viewed in place (objectives read the horizon's outputs on every HVP
    /// pass; copying them was a tenth of a SNOWS run on PP-LCNet).
    pub fn float_view(&self, g: &Graph, id: ValueId) -> Result<ArrayViewD<'_, S>> {
        match self.get(id).map(|t| &t.data) {
            Some(Data::Float(a)) => Ok(a.view()),
            Some(_) => Err(Error::graph(
                format!("value {:?}", g.name(id)),
                "is not a float tensor",
            )),
            None => Err(Error::graph(
                format!("value {:?}", g.name(id)),
                "was not computed",
            )),
        }
    }

    /// Bytes held by the tape (its peak memory, less the gradients).
    pub fn bytes(&self) -> usize {
        self.values
            .iter()
            .flatten()
            .map(|t| {
                t.len()
                    * match t.data {
                        Data::Float(_) => std::mem::size_of::<S>(),
                        Data::Int(_) => 8,
                        Data::Bool(_) => 1,
                    }
            })
            .sum()
    }
}

/// A graph prepared for differentiation: the node-by-node plan, whose weights can be replaced
/// (perturbed, or dual numbers carrying a direction).
pub struct Diff<'g, S: Real> {
    pub graph: &'g Graph,
    engine: Engine<'g, S>,
}

impl<'g, S: Real> Diff<'g, S> {
    pub fn new(graph: &'g Graph) -> Result<Self> {
        Ok(Diff {
            graph,
            engine: Engine::exact(graph)?,
        })
    }

    /// Replaces a weight's value for the following passes.
    pub fn set_weight(&mut self, id: ValueId, t: Tensor<S>) -> Result<()> {
        if !self.graph.weights.contains_key(&id) {
            return Err(Error::graph(
                format!("value {:?}", self.graph.name(id)),
                "is not a weight",
            ));
        }
        self.engine.set_const(id, t);
        Ok(())
    }

    /// The current value of a weight.
    pub fn weight(&self, id: ValueId) -> Option<&Tensor<S>> {
        self.engine.constant(id)
    }

    pub fn forward(&self, feeds: Feeds<S>) -> Result<Tape<S>> {
        Ok(Tape {
            values: self.engine.run_all(feeds)?,
        })
    }

    /// Values that depend on any of `wrt` through differentiable nodes.
    fn depends(&self, wrt: &[ValueId]) -> Vec<bool> {
        let mut dep = vec![false; self.graph.values.len()];
        for &w in wrt {
            dep[w] = true;
        }
        for n in &self.graph.nodes {
            let Ok(op) = &n.op else { continue };
            let flows = vjp::differentiable_inputs(op, n.inputs.len());
            if n.inputs
                .iter()
                .zip(flows)
                .any(|(v, f)| f && v.is_some_and(|v| dep[v]))
            {
                for &o in n.outputs.iter().flatten() {
                    dep[o] = true;
                }
            }
        }
        dep
    }

    /// Reverse sweep: `seeds` are gradients of chosen values (usually outputs) of a scalar
    /// objective; returns d objective / d `wrt[i]` (zeros where the objective does not depend
    /// on it).
    pub fn backward(
        &self,
        tape: &Tape<S>,
        seeds: Vec<(ValueId, ArrayD<S>)>,
        wrt: &[ValueId],
    ) -> Result<Vec<ArrayD<S>>> {
        let g = self.graph;
        let dep = self.depends(wrt);
        let mut grads: Vec<Option<ArrayD<S>>> = vec![None; g.values.len()];
        for (id, s) in seeds {
            accumulate(&mut grads[id], s)
                .map_err(|m| Error::graph(format!("value {:?}", g.name(id)), m))?;
        }
        for node in g.nodes.iter().rev() {
            let Ok(op) = &node.op else { continue };
            if matches!(op, Op::Constant { .. }) || !differentiable(op) {
                continue;
            }
            if !node.outputs.iter().flatten().any(|&o| grads[o].is_some()) {
                continue;
            }
            let flows = vjp::differentiable_inputs(op, node.inputs.len());
            let need: Vec<bool> = node
                .inputs
                .iter()
                .zip(&flows)
                .map(|(v, &f)| f && v.is_some_and(|v| dep[v]))
                .collect();
            if !need.iter().any(|&n| n) {
                continue;
            }
            let inputs: Vec<Option<&Tensor<S>>> = node
                .inputs
                .iter()
                .map(|v| v.and_then(|v| tape.get(v)))
                .collect();
            let outputs: Vec<Option<&Tensor<S>>> = node
                .outputs
                .iter()
                .map(|v| v.and_then(|v| tape.get(v)))
                .collect();
            let gy: Vec<Option<&ArrayD<S>>> = node
                .outputs
                .iter()
                .map(|v| v.and_then(|v| grads[v].as_ref()))
                .collect();
            let gx = vjp::vjp(op, &inputs, &outputs, &gy, &need)
                .map_err(|m| Error::graph(node.label(), format!("gradient: {m}")))?;
            // Output gradients are no longer needed: each value has one producer.
            for &o in node.outputs.iter().flatten() {
                if !wrt.contains(&o) {
                    grads[o] = None;
                }
            }
            for (v, gi) in node.inputs.iter().zip(gx) {
                if let (Some(v), Some(gi)) = (v, gi)
                    && dep[*v]
                {
                    accumulate(&mut grads[*v], gi).map_err(|m| Error::graph(node.label(), m))?;
                }
            }
        }
        wrt.iter()
            .map(|&w| {
                Ok(grads[w].take().unwrap_or_else(|| {
                    let shape = tape.get(w).map(|t| t.shape().to_vec()).unwrap_or_default();
                    ArrayD::from_elem(ndarray::IxDyn(&shape), S::zero())
                }))
            })
            .collect()
    }
}

fn accumulate<S: Real>(
    slot: &mut Option<ArrayD<S>>,
    g: ArrayD<S>,
) -> std::result::Result<(), String> {
    match slot {
        Some(acc) if acc.shape() == g.shape() => {
            *acc += &g;
            Ok(())
        }
        Some(acc) => Err(format!(
            "gradient shapes differ: {:?} and {:?}",
            acc.shape(),
            g.shape()
        )),
        None => {
            *slot = Some(g);
            Ok(())
        }
    }
}
