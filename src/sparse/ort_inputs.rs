//! Layer inputs from onnxruntime, for graphs the interpreter cannot run (partial support): the
//! whole model, with the weights pruned so far, runs with the wanted value made a graph output.
//! The layer-wise statistics (OBS masks, the least-squares update, BatchNorm re-estimation) need
//! nothing else, so they work on any model onnxruntime runs.

use super::layerwise::LayerInput;
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::ir::{Model, ValueId};
use crate::onnx::{NodeProto, ValueInfoProto};
use crate::prune::compensate::Network;
use crate::runtime::{Device, OrtSession};
use prost::Message;
use std::cell::RefCell;

pub(crate) struct OrtInput {
    session: RefCell<OrtSession>,
    name: String,
}

impl OrtInput {
    /// A session computing `value` with `net`'s replaced weights (none: the dense model).
    pub(crate) fn new(
        model: &Model,
        net: &Network,
        value: ValueId,
        threads: usize,
    ) -> Result<Self> {
        let g = &model.graph;
        let mut m = model.source.proto.clone();
        let mut nodes: Vec<NodeProto> = g.nodes.iter().map(|n| n.proto.clone()).collect();
        let mut changed: Vec<_> = net.weights.iter().collect();
        changed.sort_by_key(|(id, _)| **id);
        for (id, t) in changed {
            crate::rewrite::tensors::set_weight(&mut m, g, &mut nodes, *id, t);
        }
        let graph = m
            .graph
            .as_mut()
            .ok_or_else(|| Error::Runtime("the model has no graph".into()))?;
        graph.node = nodes;
        let name = g.name(value).to_string();
        if !graph.output.iter().any(|o| o.name() == name) {
            // Name only: onnxruntime infers the type, as for any untyped output.
            graph.output.push(ValueInfoProto {
                name: Some(name.clone()),
                ..Default::default()
            });
        }
        let session = OrtSession::new(
            &m.encode_to_vec(),
            model.source.path.parent(),
            Device::Cpu,
            threads,
        )?;
        Ok(OrtInput {
            session: RefCell::new(session),
            name,
        })
    }
}

impl LayerInput for OrtInput {
    fn input(&self, _: usize, f: &Feeds<f32>) -> Result<ndarray::ArrayD<f32>> {
        let out = self.session.borrow_mut().run_lenient(f)?;
        out.into_iter()
            .find(|(n, _)| *n == self.name)
            .and_then(|(_, t)| t)
            .and_then(|t| t.as_float().map(|a| a.to_owned()))
            .ok_or_else(|| {
                Error::Runtime(format!(
                    "onnxruntime gave no float value for {:?}",
                    self.name
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::Engine;
    use crate::tensor::Tensor;
    use std::collections::HashMap;
    use std::path::Path;

    // The value onnxruntime computes equals the interpreter's prefix sub-graph, dense and with
    // an earlier weight replaced: the partial-support statistics see the same inputs.
    #[test]
    fn onnxruntime_layer_inputs_match_the_interpreter() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let model = Model::load(&root.join("fixtures/resnet.onnx")).unwrap();
        let g = &model.graph;
        let feeds = crate::calib::head(
            &crate::data::read_npz(&root.join("fixtures/mnist_calib_small.npz")).unwrap(),
            4,
        )
        .unwrap();
        let convs: Vec<_> = g.nodes.iter().filter(|n| n.op_type == "Conv").collect();
        let first_w = convs[0].inputs[1].unwrap();
        let x = convs.last().unwrap().inputs[0].unwrap();
        let halved = g.weights[&first_w]
            .tensor
            .as_float()
            .unwrap()
            .mapv(|v| 0.5 * v);
        let nets = [
            Network::dense(g),
            Network {
                g,
                weights: HashMap::from([(first_w, Tensor::f32(halved))]),
            },
        ];
        let mut outs = Vec::new();
        for net in &nets {
            let ort = OrtInput::new(&model, net, x, 1)
                .unwrap()
                .input(0, &feeds)
                .unwrap();
            let prefix = net.apply_to(g.subgraph(&[], &[x]).unwrap());
            let ours = Engine::<f32>::new(&prefix)
                .unwrap()
                .input(0, &feeds)
                .unwrap();
            assert_eq!(ort.shape(), ours.shape());
            let scale = ours.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = ort
                .iter()
                .zip(&ours)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= 1e-4 * scale, "max |Δ| {err} at scale {scale}");
            outs.push(ort);
        }
        assert_ne!(
            outs[0], outs[1],
            "the replaced weight reaches the layer input"
        );
    }
}
