//! The typed graph: values with ids, nodes in topological order, weights as tensors.

use super::op::{Op, ParseError};
use crate::bail_graph;
use crate::error::{Error, Result};
use crate::onnx::{LoadedModel, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::tensor::{DType, Tensor, tensor_from_proto};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

pub type ValueId = usize;

/// The default-domain opsets this crate interprets.
pub const OPSET_RANGE: std::ops::RangeInclusive<i64> = 7..=25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Sym(String),
    Unknown,
}

#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    /// Declared element type, when the file says.
    pub dtype: Option<DType>,
    /// Declared shape, when the file says.
    pub shape: Option<Vec<Dim>>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    /// The parsed op, or why it cannot be interpreted.
    pub op: Result<Op, ParseError>,
    /// `None` for an omitted optional input/output (empty name).
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<Option<ValueId>>,
    /// The node exactly as read; written back unchanged unless a pass replaces it.
    pub proto: NodeProto,
}

impl Node {
    /// `op_type "name"`, for messages.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("{} node", self.op_type)
        } else {
            format!("{} node {:?}", self.op_type, self.name)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSource {
    /// `graph.initializer[index]`.
    Initializer(usize),
    /// Output of the Constant node at this index of `Graph::nodes`.
    Constant(usize),
}

#[derive(Debug, Clone)]
pub struct Weight {
    pub tensor: Tensor<f32>,
    pub source: WeightSource,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub values: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    /// Runtime inputs (graph inputs that are not initializers), in declaration order.
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub weights: HashMap<ValueId, Weight>,
    pub by_name: HashMap<String, ValueId>,
    /// Default-domain opset version.
    pub opset: i64,
}

fn value_info(v: &ValueInfoProto) -> ValueInfo {
    use crate::onnx::proto::{tensor_shape_proto::dimension, type_proto};
    let tensor = v.r#type.as_ref().and_then(|t| match &t.value {
        Some(type_proto::Value::TensorType(tt)) => Some(tt),
        _ => None,
    });
    let dtype = tensor
        .and_then(|t| t.elem_type)
        .filter(|&c| c != 0)
        .map(DType::from_onnx);
    let shape = tensor.and_then(|t| t.shape.as_ref()).map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
                Some(dimension::Value::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => Dim::Unknown,
            })
            .collect()
    });
    ValueInfo {
        name: v.name().to_string(),
        dtype,
        shape,
    }
}

impl Graph {
    pub fn id(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, id: ValueId) -> &str {
        &self.values[id].name
    }

    /// Nodes that cannot be interpreted, grouped by op type: `op → (count, reasons)`.
    pub fn unsupported(&self) -> BTreeMap<String, (usize, BTreeSet<String>)> {
        let mut out: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
        for n in &self.nodes {
            if let Err(e) = &n.op {
                let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
                    n.op_type.clone()
                } else {
                    format!("{}:{}", n.domain, n.op_type)
                };
                let entry = out.entry(key).or_default();
                entry.0 += 1;
                if let ParseError::Unsupported(r) = e {
                    entry.1.insert(r.clone());
                }
            }
        }
        out
    }

    /// One error listing every unsupported op with its count, or Ok when all are supported.
    pub fn check_supported(&self) -> Result<()> {
        let u = self.unsupported();
        if u.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = u
            .iter()
            .map(|(op, (n, reasons))| {
                let nodes = if *n == 1 { "node" } else { "nodes" };
                if reasons.is_empty() {
                    format!("{op} ({n} {nodes})")
                } else {
                    let r: Vec<&str> = reasons.iter().map(|s| s.as_str()).collect();
                    format!("{op} ({n} {nodes}: {})", r.join("; "))
                }
            })
            .collect();
        Err(Error::Unsupported(list.join(", ")))
    }

    /// Weights holding NaN or ±Inf: `(name, NaN count, Inf count)`. No pass can score or refit
    /// such a model, and onnxruntime would propagate the values silently.
    pub fn non_finite_weights(&self) -> Vec<(String, usize, usize)> {
        let mut out: Vec<(String, usize, usize)> = self
            .weights
            .iter()
            .filter_map(|(&id, w)| {
                let a = w.tensor.as_float()?;
                let nan = a.iter().filter(|v| v.is_nan()).count();
                let inf = a.iter().filter(|v| v.is_infinite()).count();
                (nan + inf > 0).then(|| (self.name(id).to_string(), nan, inf))
            })
            .collect();
        out.sort();
        out
    }

    /// One error naming every weight with NaN/Inf values, or Ok.
    pub fn check_finite(&self) -> Result<()> {
        let bad = self.non_finite_weights();
        let Some((first, ..)) = bad.first() else {
            return Ok(());
        };
        let list: Vec<String> = bad
            .iter()
            .map(|(n, a, b)| non_finite_note(n, *a, *b))
            .collect();
        Err(Error::graph(
            format!("weight {first:?}"),
            format!("non-finite values: {}", list.join(", ")),
        ))
    }

    /// Builds the graph of a loaded model.
    pub fn build(model: &ModelProto, path: &Path) -> Result<Graph> {
        let g = model
            .graph
            .as_ref()
            .ok_or_else(|| Error::bad_model(path, "the model has no graph"))?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
            .map(|o| o.version())
            .ok_or_else(|| Error::bad_model(path, "no opset_import for the default ONNX domain"))?;
        if !OPSET_RANGE.contains(&opset) {
            return Err(Error::bad_model(
                path,
                format!(
                    "opset {opset} is outside the supported range {}..={}",
                    OPSET_RANGE.start(),
                    OPSET_RANGE.end()
                ),
            ));
        }

        let mut b = Builder::default();
        for vi in g.input.iter().chain(&g.output).chain(&g.value_info) {
            let info = value_info(vi);
            let id = b.intern(vi.name());
            let slot = &mut b.values[id];
            slot.dtype = slot.dtype.or(info.dtype);
            if slot.shape.is_none() {
                slot.shape = info.shape;
            }
        }

        let mut weights = HashMap::new();
        for (i, t) in g.initializer.iter().enumerate() {
            let id = b.intern(t.name());
            if weights.contains_key(&id) {
                return Err(Error::graph(
                    format!("initializer {:?}", t.name()),
                    "defined twice",
                ));
            }
            weights.insert(id, decode_weight(t, WeightSource::Initializer(i))?);
        }
        if !g.sparse_initializer.is_empty() {
            let names: Vec<&str> = g
                .sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name()))
                .collect();
            return Err(Error::graph(
                format!("sparse initializer(s) {names:?}"),
                "sparse initializers are not supported by the interpreter",
            ));
        }

        let mut inputs = Vec::new();
        for vi in &g.input {
            let id = b.intern(vi.name());
            if !weights.contains_key(&id) {
                inputs.push(id);
            }
        }

        // Parse nodes in file order, then sort topologically (stable: a sorted file keeps its order).
        let mut parsed: Vec<Node> = Vec::with_capacity(g.node.len());
        for n in &g.node {
            let op = Op::parse(n, opset);
            let ins = n
                .input
                .iter()
                .map(|s| (!s.is_empty()).then(|| b.intern(s)))
                .collect();
            let outs = n
                .output
                .iter()
                .map(|s| (!s.is_empty()).then(|| b.intern(s)))
                .collect();
            parsed.push(Node {
                name: n.name().to_string(),
                op_type: n.op_type().to_string(),
                domain: n.domain().to_string(),
                op,
                inputs: ins,
                outputs: outs,
                proto: n.clone(),
            });
        }
        let nodes = toposort(parsed, &b.values, &weights, &inputs)?;

        for (i, n) in nodes.iter().enumerate() {
            if let Ok(Op::Constant { value }) = &n.op
                && let Some(Some(out)) = n.outputs.first()
            {
                let w = decode_weight(value, WeightSource::Constant(i))
                    .map_err(|e| Error::graph(n.label(), e.to_string()))?;
                weights.insert(*out, w);
            }
        }

        let mut outputs = Vec::new();
        for vi in &g.output {
            outputs.push(b.intern(vi.name()));
        }
        Ok(Graph {
            values: b.values,
            nodes,
            inputs,
            outputs,
            weights,
            by_name: b.by_name,
            opset,
        })
    }
}

fn decode_weight(t: &TensorProto, source: WeightSource) -> Result<Weight> {
    let tensor = tensor_from_proto::<f32>(t)
        .map_err(|e| Error::graph(format!("tensor {:?}", t.name()), e))?;
    Ok(Weight { tensor, source })
}

#[derive(Default)]
struct Builder {
    values: Vec<ValueInfo>,
    by_name: HashMap<String, ValueId>,
}

impl Builder {
    fn intern(&mut self, name: &str) -> ValueId {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.values.len();
        self.values.push(ValueInfo {
            name: name.to_string(),
            dtype: None,
            shape: None,
        });
        self.by_name.insert(name.to_string(), id);
        id
    }
}

/// Kahn's algorithm, always taking the ready node that came first in the file.
fn toposort(
    nodes: Vec<Node>,
    values: &[ValueInfo],
    weights: &HashMap<ValueId, Weight>,
    inputs: &[ValueId],
) -> Result<Vec<Node>> {
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for &o in n.outputs.iter().flatten() {
            if weights.contains_key(&o) || inputs.contains(&o) {
                bail_graph!(
                    n.label(),
                    "output {:?} is also a graph input or initializer",
                    values[o].name
                );
            }
            if let Some(&j) = producer.get(&o) {
                bail_graph!(
                    n.label(),
                    "output {:?} is already produced by {}",
                    values[o].name,
                    nodes[j].label()
                );
            }
            producer.insert(o, i);
        }
    }
    let mut pending = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for &v in n.inputs.iter().flatten() {
            match producer.get(&v) {
                Some(&p) => {
                    pending[i] += 1;
                    users[p].push(i);
                }
                None if weights.contains_key(&v) || inputs.contains(&v) => {}
                None => bail_graph!(
                    n.label(),
                    "input {:?} is not produced by any node, graph input or initializer",
                    values[v].name
                ),
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..nodes.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            pending[u] -= 1;
            if pending[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != nodes.len() {
        let stuck: Vec<String> = (0..nodes.len())
            .filter(|&i| pending[i] > 0)
            .take(5)
            .map(|i| nodes[i].label())
            .collect();
        return Err(Error::graph(
            "graph",
            format!("the graph has a cycle through {}", stuck.join(", ")),
        ));
    }
    let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .map(|i| slots[i].take().expect("once"))
        .collect())
}

/// A model: the file as read plus its typed graph.
#[derive(Debug, Clone)]
pub struct Model {
    pub source: LoadedModel,
    pub graph: Graph,
}

impl Model {
    pub fn load(path: &Path) -> Result<Model> {
        Self::from_loaded(crate::onnx::load_model(path)?)
    }

    pub fn from_loaded(source: LoadedModel) -> Result<Model> {
        let graph = Graph::build(&source.proto, &source.path)?;
        Ok(Model { source, graph })
    }

    /// Writes the graph back into a ModelProto: nodes from their protos (in graph order),
    /// weights in their original form (initializer or Constant node), everything else as read.
    pub fn to_proto(&self) -> ModelProto {
        let mut m = self.source.proto.clone();
        let g = m.graph.as_mut().expect("graph checked at load");
        g.node = self.graph.nodes.iter().map(|n| n.proto.clone()).collect();
        m
    }
}

/// "name: 2 NaN, 1 Inf".
pub fn non_finite_note(name: &str, nan: usize, inf: usize) -> String {
    let mut parts = Vec::new();
    if nan > 0 {
        parts.push(format!("{nan} NaN"));
    }
    if inf > 0 {
        parts.push(format!("{inf} Inf"));
    }
    format!("{name}: {}", parts.join(", "))
}
