//! Writing new weight values back in the form they came in: an initializer keeps its name and
//! metadata with new dims and data; a Constant node gets a new `value` attribute.

use crate::ir::{Graph, ValueId, WeightSource};
use crate::onnx::proto::{AttributeProto, attribute_proto::AttributeType};
use crate::onnx::{ModelProto, NodeProto, TensorProto};
use crate::tensor::{Data, Tensor, tensor_to_proto};
use ndarray::Axis;
use std::collections::BTreeMap;

/// `t` with each listed axis reduced to (and reordered as) `orders[axis]`.
pub fn select(t: &Tensor<f32>, orders: &BTreeMap<usize, Vec<usize>>) -> Tensor<f32> {
    let mut data = t.data.clone();
    for (&axis, keep) in orders {
        data = match data {
            Data::Float(a) => Data::Float(a.select(Axis(axis), keep).into_shared()),
            Data::Int(a) => Data::Int(a.select(Axis(axis), keep).into_shared()),
            Data::Bool(a) => Data::Bool(a.select(Axis(axis), keep).into_shared()),
        };
    }
    Tensor {
        dtype: t.dtype,
        data,
    }
}

/// The original TensorProto with its data replaced by `t` (same name, doc string, dtype).
pub fn with_data(orig: &TensorProto, t: &Tensor<f32>) -> TensorProto {
    let fresh = tensor_to_proto(t, orig.name());
    TensorProto {
        dims: fresh.dims,
        data_type: orig.data_type,
        raw_data: fresh.raw_data,
        float_data: Vec::new(),
        int32_data: Vec::new(),
        int64_data: Vec::new(),
        double_data: Vec::new(),
        uint64_data: Vec::new(),
        string_data: Vec::new(),
        external_data: Vec::new(),
        data_location: None,
        ..orig.clone()
    }
}

/// A Constant node with `value` = `t`.
pub fn constant_node_with(node: &NodeProto, orig: &TensorProto, t: &Tensor<f32>) -> NodeProto {
    let mut n = node.clone();
    n.attribute = vec![AttributeProto {
        name: Some("value".into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(with_data(orig, t)),
        ..Default::default()
    }];
    n
}

/// The TensorProto a weight was decoded from.
pub fn original_proto<'a>(
    m: &'a ModelProto,
    g: &Graph,
    nodes: &'a [NodeProto],
    id: ValueId,
) -> Option<&'a TensorProto> {
    match g.weights.get(&id)?.source {
        WeightSource::Initializer(i) => m.graph.as_ref()?.initializer.get(i),
        WeightSource::Constant(i) => {
            let n = nodes.get(i)?;
            n.attribute
                .iter()
                .find(|a| a.name() == "value")
                .and_then(|a| a.t.as_ref())
        }
    }
}

/// Writes `t` as weight `id`, in its own form. `nodes` are the graph's nodes in IR order.
pub fn set_weight(
    m: &mut ModelProto,
    g: &Graph,
    nodes: &mut [NodeProto],
    id: ValueId,
    t: &Tensor<f32>,
) {
    let source = g.weights[&id].source;
    match source {
        WeightSource::Initializer(i) => {
            let gp = m.graph.as_mut().expect("graph");
            let new = with_data(&gp.initializer[i], t);
            gp.initializer[i] = new;
        }
        WeightSource::Constant(i) => {
            let orig = nodes[i]
                .attribute
                .iter()
                .find(|a| a.name() == "value")
                .and_then(|a| a.t.clone())
                .unwrap_or_else(|| TensorProto {
                    name: Some(g.name(id).to_string()),
                    data_type: Some(t.dtype.onnx()),
                    ..Default::default()
                });
            nodes[i] = constant_node_with(&nodes[i], &orig, t);
        }
    }
}
