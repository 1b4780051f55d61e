//! The probe from onnxruntime, for graphs the interpreter cannot run (partial support): every
//! intermediate value is made a graph output for one run, so shapes and shape-logic integers
//! come from the runtime that will execute the result.

use super::probe::Probe;
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::ir::Model;
use crate::onnx::ValueInfoProto;
use crate::tensor::Tensor;
use prost::Message;
use std::collections::HashSet;

/// Every value onnxruntime computes on `feeds`, by value id (weights and inputs included).
pub fn values(model: &Model, feeds: &Feeds<f32>) -> Result<Vec<Option<Tensor<f32>>>> {
    let g = &model.graph;
    let mut proto = model.source.proto.clone();
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::Runtime("the model has no graph".into()))?;
    let mut declared: HashSet<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    declared.extend(graph.input.iter().map(|i| i.name().to_string()));
    declared.extend(graph.initializer.iter().map(|i| i.name().to_string()));
    for n in &g.nodes {
        for &o in n.outputs.iter().flatten() {
            let name = g.name(o);
            if declared.insert(name.to_string()) {
                // Name only: onnxruntime infers the type, as it does for any untyped output.
                graph.output.push(ValueInfoProto {
                    name: Some(name.to_string()),
                    ..Default::default()
                });
            }
        }
    }
    // Nothing can be computed: the list of what the interpreter lacks, with the runtime's
    // reason.
    let neither = |e: Error| {
        let list = match g.check_supported() {
            Err(Error::Unsupported(s)) => s,
            _ => "none".into(),
        };
        Error::Unsupported(format!(
            "{list}; onnxruntime cannot run the model either ({e})"
        ))
    };
    let bytes = proto.encode_to_vec();
    let mut s = crate::runtime::OrtSession::new(
        &bytes,
        model.source.path.parent(),
        crate::runtime::Device::Cpu,
        0,
    )
    .map_err(neither)?;
    let out = s.run_lenient(feeds).map_err(neither)?;
    let mut values: Vec<Option<Tensor<f32>>> = vec![None; g.values.len()];
    for (id, w) in &g.weights {
        values[*id] = Some(w.tensor.clone());
    }
    for (name, t) in feeds {
        if let Some(id) = g.id(name) {
            values[id] = Some(t.clone());
        }
    }
    for (name, t) in out {
        if let Some(id) = g.id(&name) {
            values[id] = t;
        }
    }
    Ok(values)
}

/// The analysis probe from one onnxruntime run.
pub fn probe(model: &Model, feeds: &Feeds<f32>) -> Result<Probe> {
    let batch = feeds
        .first()
        .and_then(|(_, t)| t.shape().first().copied())
        .unwrap_or(1);
    Ok(Probe::from_values(&values(model, feeds)?, batch))
}
