//! A network's activations evaluated up to a node, per calibration batch. The layer-wise pass
//! and the BatchNorm re-estimation visit layers in graph order, each needing its input in the
//! network as modified so far; running the whole prefix again for every layer made them
//! quadratic in depth (PP-OCRv4 rec, 45 layers: 158 s of a 187 s run went to prefixes).
//! Advancing evaluates only the nodes since the last stop, from the values that cross the cut,
//! so a pass costs one forward per network instead of one per layer.

use super::layerwise::LayerInput;
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, ValueId};
use crate::prune::compensate::Network;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Above this many bytes of live activations a frontier gives up and the caller reruns
/// prefixes instead: the quadratic pass needs one batch at a time, the frontier all of them.
pub(crate) const MAX_LIVE_BYTES: usize = 4 << 30;

#[derive(Clone)]
pub(crate) struct Frontier {
    /// Nodes `0..at` have been evaluated.
    at: usize,
    /// Per batch: the computed values that a node at or after `at` (or the graph's output)
    /// still reads.
    live: Vec<HashMap<ValueId, Tensor<f32>>>,
    /// Per value: the last node reading it (`usize::MAX` for graph outputs).
    last_read: Vec<usize>,
}

impl Frontier {
    /// Nothing evaluated yet: the batches' graph inputs are the live values.
    pub(crate) fn new(g: &Graph, batches: &[Feeds<f32>]) -> Self {
        let mut last_read = vec![0usize; g.values.len()];
        for (i, n) in g.nodes.iter().enumerate() {
            for &v in n.inputs.iter().flatten() {
                last_read[v] = i;
            }
        }
        for &o in &g.outputs {
            last_read[o] = usize::MAX;
        }
        let live = batches
            .iter()
            .map(|f| {
                g.inputs
                    .iter()
                    .filter_map(|&id| {
                        f.iter()
                            .find(|(n, _)| n == g.name(id))
                            .map(|(_, t)| (id, t.clone()))
                    })
                    .collect()
            })
            .collect();
        Frontier {
            at: 0,
            live,
            last_read,
        }
    }

    /// Evaluates nodes `at..to` of `net`'s weights. The caller must not change a weight of
    /// those nodes afterwards: they are never evaluated again.
    pub(crate) fn advance(&mut self, net: &Network, to: usize) -> Result<()> {
        let g = net.g;
        let to = to.min(g.nodes.len());
        if to <= self.at {
            return Ok(());
        }
        let mut targets: Vec<ValueId> = g.nodes[self.at..to]
            .iter()
            .flat_map(|n| n.outputs.iter().flatten().copied())
            // Constant-node weights (PP-OCR) come with every sub-graph: never carried over.
            .filter(|&v| self.last_read[v] >= to && !g.weights.contains_key(&v))
            .collect();
        targets.sort_unstable();
        targets.dedup();
        if !targets.is_empty() {
            let mut sources: Vec<ValueId> = self
                .live
                .first()
                .map(|m| m.keys().copied().collect())
                .unwrap_or_default();
            sources.sort_unstable();
            let sub = net.apply_to(g.subgraph(&sources, &targets)?);
            let engine = Engine::<f32>::new(&sub)?;
            for live in &mut self.live {
                let feeds: Feeds<f32> = sub
                    .inputs
                    .iter()
                    .filter_map(|&v| live.get(&v).map(|t| (g.name(v).to_string(), t.clone())))
                    .collect();
                let outs = engine.run(feeds)?;
                live.extend(targets.iter().copied().zip(outs));
            }
        }
        let last_read = &self.last_read;
        for live in &mut self.live {
            live.retain(|v, _| last_read[*v] >= to);
        }
        self.at = to;
        Ok(())
    }

    /// Bytes held by the live values of every batch.
    pub(crate) fn bytes(&self) -> usize {
        self.live
            .iter()
            .flat_map(|m| m.values())
            .map(|t| t.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// Value `v` of every batch, as a layer input.
    /// Micro-batch `batch`'s value `v`, when it is live.
    pub(crate) fn get(&self, batch: usize, v: ValueId) -> Option<&Tensor<f32>> {
        self.live.get(batch)?.get(&v)
    }

    pub(crate) fn batches(&self) -> usize {
        self.live.len()
    }

    pub(crate) fn input(&self, v: ValueId) -> At<'_> {
        At { f: self, v }
    }
}

/// One value of a frontier, read per batch.
pub(crate) struct At<'a> {
    f: &'a Frontier,
    v: ValueId,
}

impl LayerInput for At<'_> {
    fn input(&self, batch: usize, _: &Feeds<f32>) -> Result<ndarray::ArrayD<f32>> {
        self.f
            .live
            .get(batch)
            .and_then(|m| m.get(&self.v))
            .and_then(|t| t.as_float())
            .map(|a| a.to_owned())
            .ok_or_else(|| {
                Error::Runtime(format!(
                    "value {} of batch {batch} is not a live float activation",
                    self.v
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Model;
    use std::path::Path;

    // Stopping before every Conv, Gemm, MatMul and BatchNorm in turn, with the stop's weight
    // replaced once its input is read, the frontier's values equal the prefix sub-graph's:
    // residual adds (values read across many stops), Conv+BN pairs split by a stop, SE blocks,
    // attention, and weights held by Constant nodes included.
    #[test]
    fn frontier_values_equal_prefix_runs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let feeds = crate::data::read_npz(&root.join("fixtures/mnist_calib_small.npz")).unwrap();
        let mnist = vec![
            crate::calib::head(&feeds, 3).unwrap(),
            crate::calib::head(&feeds, 5).unwrap(),
        ];
        let synthetic = |n: usize| -> Feeds<f32> {
            let x = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[n, 3, 8, 8]), |i| {
                ((i[0] * 7 + i[1] * 5 + i[2] * 3 + i[3]) % 11) as f32 / 11.0 - 0.4
            });
            vec![("x".to_string(), Tensor::f32(x))]
        };
        for name in ["resnet", "mobilenet", "vit", "coupling/constants_as_nodes"] {
            let batches = if name.starts_with("coupling") {
                vec![synthetic(2), synthetic(3)]
            } else {
                mnist.clone()
            };
            let model = Model::load(&root.join(format!("fixtures/{name}.onnx"))).unwrap();
            let g = &model.graph;
            let mut net = Network::dense(g);
            let mut frontier = Frontier::new(g, &batches);
            let stops: Vec<usize> = (0..g.nodes.len())
                .filter(|&i| {
                    matches!(
                        g.nodes[i].op_type.as_str(),
                        "Conv" | "Gemm" | "MatMul" | "BatchNormalization"
                    )
                })
                .collect();
            assert!(stops.len() > 3, "{name}: {} stops", stops.len());
            for &i in &stops {
                let x = g.nodes[i].inputs[0].unwrap();
                if g.weights.contains_key(&x) {
                    continue;
                }
                frontier.advance(&net, i).unwrap();
                let prefix = net.apply_to(g.subgraph(&[], &[x]).unwrap());
                let engine = Engine::<f32>::new(&prefix).unwrap();
                for (b, f) in batches.iter().enumerate() {
                    let ours = frontier.input(x).input(b, f).unwrap();
                    let want = engine.input(b, f).unwrap();
                    assert_eq!(ours.shape(), want.shape());
                    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                    let err = ours
                        .iter()
                        .zip(&want)
                        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(
                        err <= 1e-4 * scale,
                        "{name} node {i}: max |Δ| {err} at scale {scale}"
                    );
                }
                // The stop's own weight changes after its input was read, as in the pass.
                if let Some(w) = g.nodes[i].inputs.get(1).copied().flatten()
                    && let Some(t) = g.weights.get(&w)
                    && let Some(a) = t.tensor.as_float()
                {
                    net.weights
                        .insert(w, Tensor::float(t.tensor.dtype, a.mapv(|v| 0.5 * v)));
                }
            }
            // Live after the last stop: exactly the activations made before it (or fed) that
            // a node from it on still reads, or the graph outputs: dead ones were freed.
            let at = frontier.at;
            let mut want: Vec<ValueId> = (0..g.values.len())
                .filter(|&v| !g.weights.contains_key(&v))
                .filter(|&v| {
                    g.inputs.contains(&v)
                        || g.nodes[..at].iter().any(|n| n.outputs.contains(&Some(v)))
                })
                .filter(|&v| {
                    g.outputs.contains(&v)
                        || g.nodes[at..].iter().any(|n| n.inputs.contains(&Some(v)))
                })
                .collect();
            want.sort_unstable();
            for live in &frontier.live {
                let mut got: Vec<ValueId> = live.keys().copied().collect();
                got.sort_unstable();
                assert_eq!(got, want, "{name}: live values after node {at}");
            }
        }
    }
}
