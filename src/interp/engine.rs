//! Runs a graph: feeds checked against the declared inputs, nodes evaluated in order, each
//! intermediate value dropped after its last use unless the caller asks to keep everything.

use super::ops;
use crate::error::{Error, Result};
use crate::ir::{Dim, Graph, Op, ValueId};
use crate::tensor::{DType, Real, Storage, Tensor};

/// Graph inputs by name.
pub type Feeds<S> = Vec<(String, Tensor<S>)>;

pub struct Engine<'g, S: Real> {
    pub graph: &'g Graph,
    /// Weights (initializers and Constant outputs) converted to the compute type, by value id.
    consts: Vec<Option<Tensor<S>>>,
    /// Index of the last node reading each value (`usize::MAX`: a graph output, never freed).
    last_use: Vec<usize>,
}

impl<'g, S: Real> Engine<'g, S> {
    /// Prepares a graph for execution; fails with the full list of unsupported ops.
    pub fn new(graph: &'g Graph) -> Result<Self> {
        graph.check_supported()?;
        let mut consts: Vec<Option<Tensor<S>>> = vec![None; graph.values.len()];
        for (&id, w) in &graph.weights {
            consts[id] = Some(w.tensor.convert());
        }
        let mut last_use = vec![0usize; graph.values.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            for &v in n.inputs.iter().flatten() {
                last_use[v] = i;
            }
        }
        for &o in &graph.outputs {
            last_use[o] = usize::MAX;
        }
        Ok(Engine { graph, consts, last_use })
    }

    /// Replaces the weights with ones computed elsewhere (e.g. decoded in f64 from the file).
    pub fn set_const(&mut self, id: ValueId, t: Tensor<S>) {
        self.consts[id] = Some(t);
    }

    /// Checks feeds against the graph's inputs: every input given once, storage and declared
    /// fixed dimensions respected. Returns them in value-id slots.
    pub fn check_feeds(&self, feeds: Feeds<S>) -> Result<Vec<Option<Tensor<S>>>> {
        let g = self.graph;
        let mut slots: Vec<Option<Tensor<S>>> = vec![None; g.values.len()];
        for (name, t) in feeds {
            let id = g
                .id(&name)
                .filter(|id| g.inputs.contains(id))
                .ok_or_else(|| {
                    let names: Vec<&str> = g.inputs.iter().map(|&i| g.name(i)).collect();
                    Error::Data(format!("{name:?} is not an input of the model (inputs: {names:?})"))
                })?;
            let info = &g.values[id];
            if let Some(dt) = info.dtype
                && dt.storage() != t.dtype.storage()
            {
                return Err(Error::Data(format!("input {name:?} must be {dt}, got {}", t.dtype)));
            }
            if let Some(shape) = &info.shape {
                let got = t.shape();
                let fits = shape.len() == got.len()
                    && shape.iter().zip(got).all(|(d, &g)| !matches!(d, Dim::Fixed(f) if *f != g));
                if !fits {
                    return Err(Error::Data(format!(
                        "input {name:?} must have shape {}, got {got:?}",
                        fmt_shape(shape)
                    )));
                }
            }
            // Declared non-f32 floats keep their tag so outputs report the model's dtype.
            let t = match info.dtype {
                Some(dt) if dt.storage() == Storage::Float && dt != t.dtype => Tensor { dtype: dt, data: t.data },
                _ => t,
            };
            if slots[id].replace(t).is_some() {
                return Err(Error::Data(format!("input {name:?} given twice")));
            }
        }
        if let Some(&missing) = g.inputs.iter().find(|&&i| slots[i].is_none()) {
            return Err(Error::Data(format!("input {:?} is missing", g.name(missing))));
        }
        Ok(slots)
    }

    /// Runs the graph and returns its outputs in declaration order.
    pub fn run(&self, feeds: Feeds<S>) -> Result<Vec<Tensor<S>>> {
        let mut values = self.execute(feeds, false)?;
        self.graph
            .outputs
            .iter()
            .map(|&o| {
                values[o]
                    .take()
                    .or_else(|| self.consts[o].clone())
                    .ok_or_else(|| Error::graph(format!("output {:?}", self.graph.name(o)), "was not computed"))
            })
            .collect()
    }

    /// Runs the graph keeping every value (indexed by value id); weights included.
    pub fn run_all(&self, feeds: Feeds<S>) -> Result<Vec<Option<Tensor<S>>>> {
        let mut values = self.execute(feeds, true)?;
        for (slot, c) in values.iter_mut().zip(&self.consts) {
            if slot.is_none() {
                slot.clone_from(c);
            }
        }
        Ok(values)
    }

    fn execute(&self, feeds: Feeds<S>, keep: bool) -> Result<Vec<Option<Tensor<S>>>> {
        let mut values = self.check_feeds(feeds)?;
        for (i, node) in self.graph.nodes.iter().enumerate() {
            let op = node.op.as_ref().expect("checked at Engine::new");
            if matches!(op, Op::Constant { .. }) {
                continue;
            }
            let outs = {
                let inputs: Vec<Option<&Tensor<S>>> = node
                    .inputs
                    .iter()
                    .map(|v| v.and_then(|v| values[v].as_ref().or(self.consts[v].as_ref())))
                    .collect();
                if let Some(k) = node.inputs.iter().position(|v| v.is_some_and(|v| values[v].is_none() && self.consts[v].is_none())) {
                    return Err(Error::graph(
                        node.label(),
                        format!("input {:?} has no value", self.graph.name(node.inputs[k].expect("some"))),
                    ));
                }
                ops::eval(op, &inputs, node.outputs.len()).map_err(|m| Error::graph(node.label(), m))?
            };
            for (k, slot) in node.outputs.iter().enumerate() {
                let Some(id) = slot else { continue };
                let t = outs.get(k).cloned().ok_or_else(|| {
                    Error::graph(node.label(), format!("output {k} is not produced by this implementation"))
                })?;
                values[*id] = Some(t);
            }
            if !keep {
                for &v in node.inputs.iter().flatten() {
                    if self.last_use[v] == i {
                        values[v] = None;
                    }
                }
            }
        }
        Ok(values)
    }
}

pub fn fmt_shape(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => v.to_string(),
            Dim::Sym(s) => s.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The storage a declared input needs for zero-filled probes.
pub fn zero_tensor<S: Real>(dtype: DType, shape: &[usize]) -> Tensor<S> {
    use ndarray::{ArrayD, IxDyn};
    match dtype.storage() {
        Storage::Int => Tensor::int(dtype, ArrayD::from_elem(IxDyn(shape), 0)),
        Storage::Bool => Tensor::bool(ArrayD::from_elem(IxDyn(shape), false)),
        _ => Tensor::float(if dtype.is_float() { dtype } else { DType::F32 }, ArrayD::from_elem(IxDyn(shape), S::zero())),
    }
}
