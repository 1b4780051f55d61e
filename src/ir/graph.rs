//! The typed graph: values with ids, nodes in topological order, weights as tensors.

use super::op::{Op, ParseError};
use crate::bail_graph;
use crate::error::{Error, Result};
use crate::onnx::mapped::Mapped;
use crate::onnx::{LoadedModel, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::tensor::{DType, Real, Tensor, tensor_from_proto};
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

/// A large float weight left undecoded (`Graph::build_lazy`): its shape is known, its values
/// are decoded on demand from the (memory-mapped) `raw_data` and dropped after use.
#[derive(Debug, Clone)]
pub struct LazyWeight {
    pub proto: TensorProto,
    pub source: WeightSource,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The map `raw_data` lies in, whose pages are released after each decode.
    map: Option<Mapped>,
}

impl LazyWeight {
    /// The values, decoded now; the file pages they were read from are handed back (for
    /// f32, chunk by chunk as they are converted, so the file's copy and ours never coexist).
    pub fn decode<S: Real>(&self) -> Result<Tensor<S>> {
        if let (Some(m), Some(raw), DType::F32) = (&self.map, &self.proto.raw_data, self.dtype) {
            const CHUNK: usize = 4 << 20;
            let mut v: Vec<S> = Vec::with_capacity(raw.len() / 4);
            for c in raw.chunks(CHUNK) {
                v.extend(
                    c.chunks_exact(4)
                        .map(|b| S::from_f64(f32::from_le_bytes(b.try_into().expect("4")) as f64)),
                );
                m.release(c);
            }
            let a =
                ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&self.shape), v).map_err(|e| {
                    Error::graph(format!("tensor {:?}", self.proto.name()), e.to_string())
                })?;
            return Ok(Tensor::float(DType::F32, a));
        }
        let t = tensor_from_proto::<S>(&self.proto)
            .map_err(|e| Error::graph(format!("tensor {:?}", self.proto.name()), e))?;
        if let (Some(m), Some(raw)) = (&self.map, &self.proto.raw_data) {
            m.release(raw);
        }
        Ok(t)
    }
}

/// Float weights of at least this many bytes are left lazy by `Graph::build_lazy`; smaller
/// ones (biases, norms, shape constants) are decoded as usual.
const LAZY_MIN_BYTES: usize = 64 << 10;

#[derive(Debug, Clone)]
pub struct Graph {
    pub values: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    /// Runtime inputs (graph inputs that are not initializers), in declaration order.
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub weights: HashMap<ValueId, Weight>,
    /// Weights not decoded yet: empty except for graphs from `build_lazy` (`inspect`), which
    /// only shape inference, parameter counts and the finiteness check read.
    pub lazy: HashMap<ValueId, LazyWeight>,
    pub by_name: HashMap<String, ValueId>,
    /// Default-domain opset version.
    pub opset: i64,
    /// The output that criteria, objectives and the validation gate score (`--score-output`,
    /// set by `set_scored_output`); None: the first float output.
    pub scored_output: Option<ValueId>,
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

    /// Makes the graph output `name` the one that criteria, objectives and the gate score
    /// (`--score-output`): it must be an output, and a float one where the file declares a type.
    pub fn set_scored_output(&mut self, name: &str) -> Result<()> {
        let all = || {
            self.outputs
                .iter()
                .map(|&o| self.name(o).to_string())
                .collect::<Vec<_>>()
        };
        let id = self
            .id(name)
            .filter(|i| self.outputs.contains(i))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--score-output {name:?} is not an output of the model (outputs: {:?})",
                    all()
                ))
            })?;
        if let Some(t) = self.values[id].dtype
            && !t.is_float()
        {
            return Err(Error::Usage(format!(
                "--score-output {name:?} is a {t:?} output; the score needs a float one"
            )));
        }
        self.scored_output = Some(id);
        Ok(())
    }

    /// The name of the `--score-output` choice, for the validation options and the report.
    pub fn scored_output_name(&self) -> Option<String> {
        self.scored_output.map(|v| self.name(v).to_string())
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
    /// Lazy weights are decoded one at a time for this (an undecodable one counts as clean:
    /// building the graph checked its byte count).
    pub fn non_finite_weights(&self) -> Vec<(String, usize, usize)> {
        let count = |id: ValueId, t: &Tensor<f32>| {
            let a = t.as_float()?;
            let nan = a.iter().filter(|v| v.is_nan()).count();
            let inf = a.iter().filter(|v| v.is_infinite()).count();
            (nan + inf > 0).then(|| (self.name(id).to_string(), nan, inf))
        };
        let mut out: Vec<(String, usize, usize)> = self
            .weights
            .iter()
            .filter_map(|(&id, w)| count(id, &w.tensor))
            .collect();
        for (&id, l) in &self.lazy {
            if let Ok(t) = l.decode::<f32>()
                && let Some(row) = count(id, &t)
            {
                out.push(row);
            }
        }
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
        Self::build_impl(model, path, None)
    }

    /// Builds the graph leaving large float weights undecoded (`Graph::lazy`); `maps` are the
    /// memory maps their bytes lie in (`LoadedModel::maps`), released after each decode.
    pub fn build_lazy(model: &ModelProto, path: &Path, maps: &[Mapped]) -> Result<Graph> {
        Self::build_impl(model, path, Some(maps))
    }

    /// Element count of a weight (decoded or lazy) of a float type, else `None`.
    pub fn float_params(&self, id: ValueId) -> Option<usize> {
        if let Some(w) = self.weights.get(&id) {
            return w.tensor.as_float().map(|a| a.len());
        }
        self.lazy.get(&id).map(|l| l.shape.iter().product())
    }

    /// Whether `id` is a weight (decoded or lazy).
    pub fn is_weight(&self, id: ValueId) -> bool {
        self.weights.contains_key(&id) || self.lazy.contains_key(&id)
    }

    fn build_impl(model: &ModelProto, path: &Path, lazy: Option<&[Mapped]>) -> Result<Graph> {
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
        let mut lazy_weights = HashMap::new();
        for (i, t) in g.initializer.iter().enumerate() {
            let id = b.intern(t.name());
            if weights.contains_key(&id) || lazy_weights.contains_key(&id) {
                return Err(Error::graph(
                    format!("initializer {:?}", t.name()),
                    "defined twice",
                ));
            }
            let source = WeightSource::Initializer(i);
            match lazy.and_then(|maps| lazy_weight(t, source, maps)) {
                Some(l) => lazy_weights.insert(id, l).map(|_| ()),
                None => weights.insert(id, decode_weight(t, source)?).map(|_| ()),
            };
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
            if !weights.contains_key(&id) && !lazy_weights.contains_key(&id) {
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
        let known: std::collections::HashSet<ValueId> =
            weights.keys().chain(lazy_weights.keys()).copied().collect();
        let nodes = toposort(parsed, &b.values, &known, &inputs)?;

        for (i, n) in nodes.iter().enumerate() {
            if let Ok(Op::Constant { value }) = &n.op
                && let Some(Some(out)) = n.outputs.first()
            {
                let source = WeightSource::Constant(i);
                if let Some(l) = lazy.and_then(|maps| lazy_weight(value, source, maps)) {
                    lazy_weights.insert(*out, l);
                    continue;
                }
                let w = decode_weight(value, source)
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
            lazy: lazy_weights,
            by_name: b.by_name,
            opset,
            scored_output: None,
        })
    }
}

/// A lazy weight for `t` when it is a large float tensor in `raw_data` whose byte count fits
/// its shape; anything else is decoded at once (and gets the decoder's errors).
fn lazy_weight(t: &TensorProto, source: WeightSource, maps: &[Mapped]) -> Option<LazyWeight> {
    let dtype = DType::from_onnx(t.data_type.unwrap_or(0));
    let raw = t.raw_data.as_ref()?;
    let n = crate::tensor::proto::element_count(&t.dims).ok()?;
    let fits = dtype.storage() == crate::tensor::Storage::Float
        && t.segment.is_none()
        && raw.len() >= LAZY_MIN_BYTES
        && n.checked_mul(dtype.size()) == Some(raw.len());
    fits.then(|| LazyWeight {
        proto: t.clone(),
        source,
        dtype,
        shape: t.dims.iter().map(|&d| d as usize).collect(),
        map: maps.iter().find(|m| m.contains(raw)).cloned(),
    })
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
    weights: &std::collections::HashSet<ValueId>,
    inputs: &[ValueId],
) -> Result<Vec<Node>> {
    let mut producer: HashMap<ValueId, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for &o in n.outputs.iter().flatten() {
            if weights.contains(&o) || inputs.contains(&o) {
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
                None if weights.contains(&v) || inputs.contains(&v) => {}
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

    /// The model memory-mapped, with large weights left lazy (`Graph::build_lazy`): what
    /// `inspect` needs, at a resident size near the largest tensor. Passes use `load`.
    pub fn load_mapped(path: &Path) -> Result<Model> {
        let source = crate::onnx::load_model_mapped(path)?;
        let graph = Graph::build_lazy(&source.proto, &source.path, &source.maps)?;
        Ok(Model { source, graph })
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
