//! Shape constants: integer entries of a Reshape target, Split sizes, Slice bounds, Resize sizes
//! or Expand shape that must change with the pruned sizes. An entry is traced back to the
//! constant that holds it, through the Concat/Unsqueeze/Cast chains exporters build shapes
//! with; entries computed at run time (from `Shape`) follow the new sizes by themselves.

use crate::analysis::Probe;
use crate::error::{Error, Result};
use crate::ir::{Graph, Op, ValueId, WeightSource};
use crate::onnx::{ModelProto, NodeProto};
use crate::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use std::collections::{BTreeMap, BTreeSet};

/// The constant and flat index holding entry `k` of the 1-D integer value `v`, if one does.
pub fn resolve(
    g: &Graph,
    producer: &[Option<usize>],
    probe: &Probe,
    v: ValueId,
    k: usize,
) -> Option<(ValueId, usize)> {
    if g.weights.contains_key(&v) {
        return Some((v, k));
    }
    let n = &g.nodes[producer[v]?];
    match n.op.as_ref().ok()? {
        Op::Concat { .. } => {
            let mut at = 0;
            for inp in n.inputs.iter().flatten() {
                let len = probe.int(*inp)?.len();
                if k < at + len {
                    return resolve(g, producer, probe, *inp, k - at);
                }
                at += len;
            }
            None
        }
        Op::Unsqueeze { .. }
        | Op::Squeeze { .. }
        | Op::Identity
        | Op::Cast { .. }
        | Op::Reshape { .. } => {
            resolve(g, producer, probe, n.inputs.first().copied().flatten()?, k)
        }
        _ => None,
    }
}

/// Entry edits requested by the nodes being fixed, applied together at the end.
#[derive(Default)]
pub struct IntEdits {
    /// constant → requesting node → (flat index → new value).
    by_const: BTreeMap<ValueId, BTreeMap<usize, BTreeMap<usize, i64>>>,
}

impl IntEdits {
    pub fn request(&mut self, constant: ValueId, node: usize, index: usize, value: i64) {
        self.by_const
            .entry(constant)
            .or_default()
            .entry(node)
            .or_default()
            .insert(index, value);
    }

    /// Writes the edits. A constant whose every final use asks for the same change is edited
    /// in place; one that also feeds other nodes is cloned for the node that reads it
    /// directly. Returns the nodes to insert (Constant-node clones) as (before index, node).
    pub fn apply(
        &self,
        m: &mut ModelProto,
        g: &Graph,
        nodes: &mut [NodeProto],
    ) -> Result<Vec<(usize, NodeProto)>> {
        let mut inserts = Vec::new();
        let mut taken: BTreeSet<String> = g.values.iter().map(|v| v.name.clone()).collect();
        for (&c, per_node) in &self.by_const {
            let name = g.name(c).to_string();
            let orig = g.weights[&c].tensor.clone();
            let users = final_users(g, c);
            let edits: Vec<&BTreeMap<usize, i64>> = per_node.values().collect();
            let same = edits.windows(2).all(|w| w[0] == w[1]);
            let requesters: BTreeSet<usize> = per_node.keys().copied().collect();
            if same && users.iter().all(|u| requesters.contains(u)) {
                let t = edited(&orig, edits[0])
                    .map_err(|m| Error::graph(format!("constant {name:?}"), m))?;
                super::tensors::set_weight(m, g, nodes, c, &t);
                continue;
            }
            for (&node, e) in per_node {
                let direct = nodes[node].input.iter().position(|i| *i == name);
                let Some(slot) = direct else {
                    return Err(Error::graph(
                        format!("shape constant {name:?}"),
                        format!(
                            "is shared by nodes that need different values after pruning (through {})",
                            g.nodes[node].label()
                        ),
                    ));
                };
                let t =
                    edited(&orig, e).map_err(|m| Error::graph(format!("constant {name:?}"), m))?;
                let mut k = 1;
                let new_name = loop {
                    let n = format!("{name}_pruned{k}");
                    if taken.insert(n.clone()) {
                        break n;
                    }
                    k += 1;
                };
                match g.weights[&c].source {
                    WeightSource::Initializer(i) => {
                        let gp = m.graph.as_mut().expect("graph");
                        let mut p = super::tensors::with_data(&gp.initializer[i], &t);
                        p.name = Some(new_name.clone());
                        gp.initializer.push(p);
                    }
                    WeightSource::Constant(i) => {
                        let orig_t = nodes[i]
                            .attribute
                            .iter()
                            .find(|a| a.name() == "value")
                            .and_then(|a| a.t.clone())
                            .unwrap_or_default();
                        let mut cn = super::tensors::constant_node_with(&nodes[i], &orig_t, &t);
                        cn.output = vec![new_name.clone()];
                        if let Some(n) = &cn.name {
                            cn.name = Some(format!("{n}_pruned{k}"));
                        }
                        inserts.push((node, cn));
                    }
                }
                nodes[node].input[slot] = new_name;
            }
        }
        Ok(inserts)
    }
}

/// The nodes that finally read constant `c` (looking through shape-building chains).
fn final_users(g: &Graph, c: ValueId) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut stack = vec![c];
    let mut seen = BTreeSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        for (i, n) in g.nodes.iter().enumerate() {
            if !n.inputs.contains(&Some(v)) {
                continue;
            }
            let chain = matches!(
                n.op,
                Ok(Op::Concat { .. }
                    | Op::Unsqueeze { .. }
                    | Op::Squeeze { .. }
                    | Op::Identity
                    | Op::Cast { .. })
            ) || (matches!(n.op, Ok(Op::Reshape { .. }))
                && n.inputs.first() == Some(&Some(v)));
            if chain {
                stack.extend(n.outputs.iter().flatten().copied());
            } else {
                out.insert(i);
            }
        }
    }
    out
}

fn edited(
    orig: &Tensor<f32>,
    e: &BTreeMap<usize, i64>,
) -> std::result::Result<Tensor<f32>, String> {
    let Some(a) = orig.as_int() else {
        return Err("is not an integer tensor".into());
    };
    let mut v: Vec<i64> = a.iter().copied().collect();
    for (&i, &x) in e {
        *v.get_mut(i).ok_or("index out of range")? = x;
    }
    Ok(Tensor::int(
        orig.dtype,
        ArrayD::from_shape_vec(IxDyn(a.shape()), v).map_err(|e| e.to_string())?,
    ))
}
