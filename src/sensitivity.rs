//! The curvature report of `onnx-prune inspect --sensitivity`: per prunable layer, the gradient
//! norm, the Hutchinson estimate of the Hessian trace (total and per parameter, with its
//! standard error) and the spread of HAP's per-channel sensitivity Tr(H_cc)/|c|·‖w_c‖².

use crate::autodiff::{Curvature, Estimate, HutchinsonOptions, Objective, OutputKind};
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::Real;
use ndarray::{ArrayD, Axis};
use serde::Serialize;

#[derive(Debug, Clone, Copy)]
pub struct SensitivityOptions {
    pub seed: u64,
    /// Calibration samples used (the first ones).
    pub samples: usize,
    pub micro_batch: usize,
    pub max_probes: usize,
    pub min_probes: usize,
    pub tol: f64,
}

impl Default for SensitivityOptions {
    fn default() -> Self {
        SensitivityOptions {
            seed: 0,
            samples: 256,
            micro_batch: 32,
            max_probes: 32,
            min_probes: 8,
            tol: 1e-2,
        }
    }
}

/// A weight-bearing layer whose output channels can be pruned, and which axis of its weight
/// holds them.
#[derive(Debug, Clone)]
pub struct Prunable {
    pub node: usize,
    pub weight: ValueId,
    pub channel_axis: usize,
}

/// Conv, Gemm and MatMul nodes whose weight is a constant tensor.
pub fn prunable_layers(g: &Graph) -> Vec<Prunable> {
    g.nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let w = n.inputs.get(1).copied().flatten()?;
            let t = &g.weights.get(&w)?.tensor;
            if !t.dtype.is_float() || t.shape().len() < 2 {
                return None;
            }
            let channel_axis = match n.op.as_ref().ok()? {
                Op::Conv { .. } => 0,
                Op::Gemm { trans_b: true, .. } => 0,
                Op::Gemm { .. } | Op::MatMul if t.shape().len() == 2 => 1,
                _ => return None,
            };
            Some(Prunable {
                node: i,
                weight: w,
                channel_axis,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerSensitivity {
    pub layer: String,
    pub op: String,
    pub weight: String,
    pub params: usize,
    pub grad_norm: f64,
    pub trace: Estimate,
    /// Tr(H)/params and its standard error.
    pub trace_per_param: f64,
    pub trace_per_param_stderr: f64,
    pub channels: usize,
    /// HAP channel sensitivity Tr(H_cc)/|c|·‖w_c‖²: min, median, max over output channels.
    pub hap_min: f64,
    pub hap_median: f64,
    pub hap_max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SensitivityReport {
    pub objective: String,
    pub samples: usize,
    pub seed: u64,
    pub probes: usize,
    pub total_trace: Estimate,
    pub layers: Vec<LayerSensitivity>,
    pub peak_tape_bytes: usize,
}

/// The objective: cross-entropy with labels, else KL (classifier outputs) or squared error
/// (other outputs) to the model's own outputs on the same data. At the dense weights the
/// label-free objectives have zero gradient and their Hessian is the Gauss-Newton (Fisher)
/// matrix, which is what the sensitivity of a removal is measured by.
fn objective<S: Real>(
    cur: &Curvature<'_, S>,
    feeds: &Feeds<S>,
    labels: Option<&[i64]>,
) -> Result<(Objective, String)> {
    let g = cur.graph;
    let out = *g
        .outputs
        .first()
        .ok_or_else(|| Error::graph("graph", "has no outputs"))?;
    let y = cur
        .forward(feeds.clone())?
        .float(g, out)?
        .mapv(|v| v.to_f64());
    let classifier = y.ndim() == 2;
    Ok(match labels {
        Some(l) => {
            if !classifier {
                return Err(Error::Usage(format!(
                    "--labels needs a classifier output [N, classes]; {:?} is {:?}",
                    g.name(out),
                    y.shape()
                )));
            }
            (
                Objective::CrossEntropy {
                    value: out,
                    labels: l.to_vec(),
                    kind: OutputKind::detect(&y),
                    temperature: 1.0,
                },
                "cross-entropy".into(),
            )
        }
        None if classifier => (Objective::kl_to(out, &y), "KL to the dense model".into()),
        None => (
            Objective::Mse {
                value: out,
                target: y.into_shared(),
            },
            "squared error to the dense model".into(),
        ),
    })
}

pub fn sensitivity<S: Real>(
    g: &Graph,
    feeds: &Feeds<S>,
    labels: Option<&[i64]>,
    opts: SensitivityOptions,
    on_probe: &mut dyn FnMut(usize),
) -> Result<SensitivityReport> {
    let n = crate::autodiff::curvature::batch_size(feeds)?;
    let take = opts.samples.min(n).max(1);
    let feeds = crate::autodiff::curvature::slice_feeds(feeds, 0..take);
    let labels = labels.map(|l| &l[..take.min(l.len())]);
    if let Some(l) = labels
        && l.len() != take
    {
        return Err(Error::Data(format!(
            "{} labels for {take} samples",
            l.len()
        )));
    }
    let layers = prunable_layers(g);
    if layers.is_empty() {
        return Err(Error::Usage(
            "the model has no Conv, Gemm or MatMul layer with a constant weight".into(),
        ));
    }
    let mut cur = Curvature::<S>::new(g, opts.micro_batch)?;
    let (obj, obj_name) = objective(&cur, &feeds, labels)?;
    let wrt: Vec<ValueId> = layers.iter().map(|l| l.weight).collect();
    // A weight shared by two layers is one block.
    let mut unique = wrt.clone();
    unique.sort_unstable();
    unique.dedup();
    let (_, grads) = cur.gradient(&feeds, &obj, &unique)?;
    let h = cur.hutchinson_observed(
        &feeds,
        &obj,
        &unique,
        HutchinsonOptions {
            seed: opts.seed,
            min_probes: opts.min_probes,
            max_probes: opts.max_probes,
            tol: opts.tol,
        },
        on_probe,
    )?;
    let mut out = Vec::with_capacity(layers.len());
    for l in &layers {
        let b = unique.binary_search(&l.weight).expect("in unique");
        let w = g.weights[&l.weight]
            .tensor
            .as_float()
            .expect("float weight")
            .mapv(|v| v as f64);
        let params = w.len();
        let gn = grads[b]
            .iter()
            .map(|v| v.to_f64().powi(2))
            .sum::<f64>()
            .sqrt();
        let tr = h.traces[b];
        let hap = channel_scores(&h.diagonals[b], &w, l.channel_axis);
        let mut sorted = hap.clone();
        sorted.sort_by(f64::total_cmp);
        let node = &g.nodes[l.node];
        out.push(LayerSensitivity {
            layer: if node.name.is_empty() {
                g.name(node.outputs[0].expect("output")).to_string()
            } else {
                node.name.clone()
            },
            op: node.op_type.clone(),
            weight: g.name(l.weight).to_string(),
            params,
            grad_norm: gn,
            trace: tr,
            trace_per_param: tr.mean / params as f64,
            trace_per_param_stderr: tr.stderr / params as f64,
            channels: hap.len(),
            hap_min: sorted.first().copied().unwrap_or(0.0),
            hap_median: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
            hap_max: sorted.last().copied().unwrap_or(0.0),
        });
    }
    Ok(SensitivityReport {
        objective: obj_name,
        samples: take,
        seed: opts.seed,
        probes: h.total.probes,
        total_trace: h.total,
        layers: out,
        peak_tape_bytes: cur.stats().peak_tape_bytes,
    })
}

/// HAP's channel sensitivity: mean Hessian diagonal over the channel's weights times their
/// squared norm.
pub fn channel_scores(diag: &ArrayD<f64>, w: &ArrayD<f64>, axis: usize) -> Vec<f64> {
    diag.axis_iter(Axis(axis))
        .zip(w.axis_iter(Axis(axis)))
        .map(|(d, wc)| {
            let k = d.len().max(1) as f64;
            d.sum() / k * wc.iter().map(|v| v * v).sum::<f64>()
        })
        .collect()
}

impl SensitivityReport {
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "objective {}   samples {}   Hutchinson probes {} (seed {})   total Tr(H) {:.4e} ± {:.1e}   peak tape {:.1} MB",
            self.objective,
            self.samples,
            self.probes,
            self.seed,
            self.total_trace.mean,
            self.total_trace.stderr,
            self.peak_tape_bytes as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "{:<36} {:<7} {:>8} {:>10} {:>11} {:>9} {:>11} {:>31}",
            "layer",
            "op",
            "params",
            "|grad|",
            "Tr(H)",
            "±",
            "Tr(H)/param",
            "HAP channel min / median / max"
        );
        for l in &self.layers {
            let _ = writeln!(
                o,
                "{:<36} {:<7} {:>8} {:>10.3e} {:>11.4e} {:>9.1e} {:>11.3e} {:>9.2e} / {:>9.2e} / {:>9.2e}",
                l.layer,
                l.op,
                l.params,
                l.grad_norm,
                l.trace.mean,
                l.trace.stderr,
                l.trace_per_param,
                l.hap_min,
                l.hap_median,
                l.hap_max
            );
        }
        o
    }
}
