//! Sub-graphs: the part of a graph between chosen intermediate values and chosen targets, as a
//! graph of its own whose inputs are those values. Layer-wise and K-ops-ahead objectives run
//! it on cached activations instead of rerunning the whole network.
//!
//! Value ids are shared with the parent graph (the value table is copied whole), so tapes,
//! gradients and weight ids mean the same thing in both.

use super::graph::{Graph, ValueId};
use crate::error::{Error, Result};

impl Graph {
    /// The nodes needed to compute `targets` from `sources` (plus weights, and any graph input
    /// the slice reads that is not a source: it stays an input of the sub-graph), in the
    /// parent's order. The sub-graph's inputs are `sources` followed by those graph inputs,
    /// its outputs `targets`.
    pub fn subgraph(&self, sources: &[ValueId], targets: &[ValueId]) -> Result<Graph> {
        let mut producer = vec![usize::MAX; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &o in n.outputs.iter().flatten() {
                producer[o] = i;
            }
        }
        let is_source = |v: ValueId| sources.contains(&v);
        let mut needed_node = vec![false; self.nodes.len()];
        let mut extra_inputs: Vec<ValueId> = Vec::new();
        let mut stack: Vec<ValueId> = targets.to_vec();
        let mut seen = vec![false; self.values.len()];
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v], true)
                || is_source(v)
                || self.weights.contains_key(&v)
            {
                continue;
            }
            let p = producer[v];
            if p == usize::MAX {
                if self.inputs.contains(&v) {
                    extra_inputs.push(v);
                    continue;
                }
                return Err(Error::graph(
                    format!("value {:?}", self.name(v)),
                    "is not produced by any node, input or weight",
                ));
            }
            if !needed_node[p] {
                needed_node[p] = true;
                stack.extend(self.nodes[p].inputs.iter().flatten().copied());
            }
        }
        // Graph inputs in declaration order, for a stable feed list.
        extra_inputs.sort_by_key(|v| self.inputs.iter().position(|i| i == v));
        let mut inputs = sources.to_vec();
        inputs.extend(extra_inputs);
        // The sources must be inputs of the slice, never computed inside it.
        for &s in sources {
            if self.weights.contains_key(&s) {
                return Err(Error::graph(
                    format!("value {:?}", self.name(s)),
                    "is a weight, not an activation",
                ));
            }
        }
        Ok(Graph {
            values: self.values.clone(),
            nodes: self
                .nodes
                .iter()
                .zip(&needed_node)
                .filter(|(_, k)| **k)
                .map(|(n, _)| n.clone())
                .collect(),
            inputs,
            outputs: targets.to_vec(),
            weights: self.weights.clone(),
            lazy: self.lazy.clone(),
            by_name: self.by_name.clone(),
            opset: self.opset,
            scored_output: self.scored_output.filter(|o| targets.contains(o)),
        })
    }
}
