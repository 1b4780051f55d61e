//! Second-order saliencies of prunable units (ALGORITHMS.md §3, §5).
//!
//! - `hap` (HAP, Yu et al.): S_u = Tr(H_uu)/n_u · ‖w_u‖², the loss increase of removing the
//!   unit under H_uu ≈ (Tr(H_uu)/n_u)·I. Tr(H_uu) is the Hutchinson estimate (Rademacher probes
//!   over all conv/linear weights at once, read per unit), w_u the unit's slices of conv and
//!   linear weights (its filter and its consumers' input slices: the removal takes both).
//! - `fisher` (SOSP-I's pairwise matrix, diagonal): S_u = θ_uᵀ F θ_u with F the Fisher of the
//!   model's predictive distribution (labels sampled from its own softmax; for softmax
//!   cross-entropy this is the Gauss-Newton matrix), estimated as E_b[(g_b·θ_u)²] over
//!   calibration micro-batches; without a classifier output, the Gauss-Newton matrix of a random
//!   projection of the outputs. Only the diagonal Q_uu of SOSP-I's matrix is used: the pairwise
//!   terms would need one JVP per unit.
//! - `sosp-h` (SOSP-H, reconstruction, ALGORITHMS.md §3.2 — unverified against the paper):
//!   λ_u = | −θ_uᵀ g + ½ θ_uᵀ (H θ) | with one HVP along θ (every prunable weight), capturing the
//!   correlations of a unit with all others; switches for the first-order term and for where the
//!   absolute value sits.

use super::criteria::Scores;
use crate::analysis::{Analysis, Slice};
use crate::autodiff::{Curvature, HutchinsonOptions, Objective, OutputKind};
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, Op, ValueId};
use ndarray::{ArrayD, Axis};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Weights of Conv/ConvTranspose/Gemm/MatMul layers (HAP's Hessian is over these only).
fn layer_weights(g: &Graph) -> BTreeSet<ValueId> {
    g.nodes
        .iter()
        .filter(|n| {
            matches!(
                n.op,
                Ok(Op::Conv { .. } | Op::ConvTranspose(_) | Op::Gemm { .. } | Op::MatMul)
            )
        })
        .filter_map(|n| n.inputs.get(1).copied().flatten())
        .filter(|w| g.weights.contains_key(w))
        .collect()
}

fn unit_slices<'a>(
    a: &'a Analysis,
    keep: &'a BTreeSet<ValueId>,
) -> impl Iterator<Item = (usize, usize, &'a Slice)> + 'a {
    a.groups.iter().enumerate().flat_map(move |(gi, grp)| {
        grp.units.iter().enumerate().flat_map(move |(ui, u)| {
            u.slices
                .iter()
                .filter(|s| keep.contains(&s.weight))
                .map(move |s| (gi, ui, s))
        })
    })
}

/// Σ over each (weight, axis, index) slice of f(weight values, other array).
fn slice_sums(
    g: &Graph,
    other: &HashMap<ValueId, ArrayD<f64>>,
    w: ValueId,
    axis: usize,
    f: impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    let t = g.weights[&w].tensor.as_float().expect("float");
    let o = &other[&w];
    t.axis_iter(Axis(axis))
        .zip(o.axis_iter(Axis(axis)))
        .map(|(ws, os)| {
            ws.iter()
                .zip(os.iter())
                .map(|(&x, &y)| f(x as f64, y))
                .sum()
        })
        .collect()
}

/// The label-free objective of the second-order criteria: KL to the dense model's outputs for a
/// classifier (its Hessian at the dense weights is the Gauss-Newton matrix), cross-entropy with
/// labels when given, else ½‖y − y_dense‖² over the float outputs.
pub fn objective(
    g: &Graph,
    feeds: &Feeds<f32>,
    labels: Option<&[i64]>,
) -> Result<(Objective, String)> {
    let y = Engine::<f32>::new(g)?.run(feeds.clone())?;
    let (out, y0) = super::criteria::scored_output(g, &y)?;
    let classifier = y0.ndim() == 2 && y0.shape()[1] > 1;
    if let Some(l) = labels {
        if !classifier {
            return Err(Error::Usage(format!(
                "--labels needs a classifier output [N, classes]; {:?} is {:?}",
                g.name(out),
                y0.shape()
            )));
        }
        return Ok((
            Objective::CrossEntropy {
                value: out,
                labels: l.to_vec(),
                kind: OutputKind::detect(&y0),
                temperature: 1.0,
            },
            "cross-entropy with labels".into(),
        ));
    }
    if classifier {
        return Ok((
            Objective::kl_to(out, &y0),
            "KL divergence to the dense model (label-free)".into(),
        ));
    }
    let terms = g
        .outputs
        .iter()
        .zip(&y)
        .filter_map(|(&o, t)| {
            t.as_float().map(|a| Objective::Mse {
                value: o,
                target: a.mapv(|v| v as f64).into_shared(),
            })
        })
        .collect();
    Ok((
        Objective::Sum(terms),
        "squared error to the dense model's outputs (label-free)".into(),
    ))
}

/// Which curvature HAP's per-unit traces are taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HapCurvature {
    /// The Gauss-Newton matrix Jᵀ·Λ·J, sketched from output-space probes: every unit's trace
    /// estimate is ≥ 0. Equal to the Hessian for the default loss (KL to the dense outputs, at
    /// the dense weights).
    GaussNewton,
    /// HAP's own estimator: z_uᵀ(H·z)_u with one Rademacher z over all weights (one HVP per
    /// probe); at 3 probes a third of the unit traces come out negative on the CNN fixtures.
    Exact,
}

#[allow(clippy::too_many_arguments)]
pub fn hap(
    g: &Graph,
    a: &Analysis,
    feeds: &Feeds<f32>,
    obj: &Objective,
    curvature: HapCurvature,
    probes: usize,
    seed: u64,
    micro_batch: usize,
    on_probe: &mut dyn FnMut(usize, usize),
) -> Result<Scores> {
    let lw = layer_weights(g);
    let used: BTreeSet<ValueId> = unit_slices(a, &lw).map(|(_, _, s)| s.weight).collect();
    let wrt: Vec<ValueId> = used.iter().copied().collect();
    let mut cur = Curvature::<f32>::new(g, micro_batch)?;
    let probes = probes.max(1);
    let diagonals = match curvature {
        HapCurvature::Exact => {
            cur.hutchinson_observed(
                feeds,
                obj,
                &wrt,
                HutchinsonOptions {
                    seed,
                    min_probes: probes,
                    max_probes: probes,
                    tol: 0.0,
                },
                &mut |k| on_probe(k, probes),
            )?
            .diagonals
        }
        HapCurvature::GaussNewton => {
            cur.gauss_newton_diagonal(feeds, obj, &wrt, probes, seed, on_probe)?
        }
    };
    let diag: HashMap<ValueId, ArrayD<f64>> = wrt.iter().copied().zip(diagonals).collect();
    let mut tr: HashMap<(ValueId, usize), Vec<f64>> = HashMap::new();
    let mut w2: HashMap<(ValueId, usize), Vec<f64>> = HashMap::new();
    for (_, _, s) in unit_slices(a, &lw) {
        tr.entry((s.weight, s.axis))
            .or_insert_with(|| slice_sums(g, &diag, s.weight, s.axis, |_, d| d));
        w2.entry((s.weight, s.axis))
            .or_insert_with(|| slice_sums(g, &diag, s.weight, s.axis, |w, _| w * w));
    }
    let mut out: Scores = a
        .groups
        .iter()
        .map(|grp| vec![0.0; grp.units.len()])
        .collect();
    let mut sums: Vec<Vec<(f64, f64, usize)>> = a
        .groups
        .iter()
        .map(|grp| vec![(0.0, 0.0, 0); grp.units.len()])
        .collect();
    for (gi, ui, s) in unit_slices(a, &lw) {
        let shape = g.weights[&s.weight].tensor.shape();
        let n = shape.iter().product::<usize>() / shape[s.axis].max(1);
        let e = &mut sums[gi][ui];
        e.0 += tr[&(s.weight, s.axis)][s.index];
        e.1 += w2[&(s.weight, s.axis)][s.index];
        e.2 += n;
    }
    for (gi, grp) in sums.iter().enumerate() {
        for (ui, &(t, w, n)) in grp.iter().enumerate() {
            out[gi][ui] = if n > 0 { t / n as f64 * w } else { 0.0 };
        }
    }
    Ok(out)
}

/// Fisher (SOSP-I diagonal) scores: E_b[(g_b · θ_u)²] with labels sampled from the model.
pub fn fisher(
    g: &Graph,
    a: &Analysis,
    feeds: &Feeds<f32>,
    seed: u64,
    micro_batch: usize,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Scores> {
    let obj = sampled_label_objective(g, feeds, seed)?;
    super::criteria::taylor(g, a, feeds, &obj, micro_batch, on_batch)
}

/// Cross-entropy against labels drawn from the model's own predictive distribution (its
/// gradients' outer products average to the model's Fisher); models whose first float output
/// is not [N, classes] get the Taylor objective instead.
pub(crate) fn sampled_label_objective(
    g: &Graph,
    feeds: &Feeds<f32>,
    seed: u64,
) -> Result<Objective> {
    let y = Engine::<f32>::new(g)?.run(feeds.clone())?;
    let (out, y0) = super::criteria::scored_output(g, &y)?;
    let mut rng = crate::autodiff::rng::SplitMix64::new(seed ^ 0x00f1_5ee0);
    let obj = if y0.ndim() == 2 && y0.shape()[1] > 1 {
        let kind = OutputKind::detect(&y0);
        let k = y0.shape()[1];
        let rows = y0.as_standard_layout();
        let rows = rows.as_slice().expect("std");
        let sampled: Vec<i64> = rows
            .chunks(k)
            .map(|r| {
                let p: Vec<f64> = match kind {
                    OutputKind::Probabilities => r.to_vec(),
                    OutputKind::Logits => {
                        let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = r.iter().map(|v| (v - m).exp()).collect();
                        let s: f64 = e.iter().sum();
                        e.into_iter().map(|v| v / s).collect()
                    }
                };
                let u = rng.uniform();
                let mut acc = 0.0;
                for (j, pj) in p.iter().enumerate() {
                    acc += pj;
                    if u < acc {
                        return j as i64;
                    }
                }
                (k - 1) as i64
            })
            .collect();
        Objective::CrossEntropy {
            value: out,
            labels: sampled,
            kind,
            temperature: 1.0,
        }
    } else {
        super::criteria::taylor_objective(g, feeds, None, seed)?.0
    };
    Ok(obj)
}

#[derive(Debug, Clone, Copy)]
pub struct SospOptions {
    /// Keep the first-order term −θ_uᵀg.
    pub first_order: bool,
    /// |first + second| (true) or |first| + |second|.
    pub abs_total: bool,
}

impl Default for SospOptions {
    fn default() -> Self {
        SospOptions {
            first_order: true,
            abs_total: true,
        }
    }
}

pub fn sosp_h(
    g: &Graph,
    a: &Analysis,
    feeds: &Feeds<f32>,
    obj: &Objective,
    micro_batch: usize,
    o: SospOptions,
) -> Result<Scores> {
    let all: BTreeSet<ValueId> = a
        .groups
        .iter()
        .flat_map(|grp| {
            grp.units
                .iter()
                .flat_map(|u| u.slices.iter().map(|s| s.weight))
        })
        .collect();
    let wrt: Vec<ValueId> = all
        .iter()
        .copied()
        .filter(|w| g.weights[w].tensor.dtype.is_float())
        .collect();
    let theta: Vec<ArrayD<f32>> = wrt
        .iter()
        .map(|w| g.weights[w].tensor.as_float().expect("float").to_owned())
        .collect();
    let mut cur = Curvature::<f32>::new(g, micro_batch)?;
    let h = cur.hvp(feeds, obj, &wrt, &theta)?;
    let grad: HashMap<ValueId, ArrayD<f64>> = wrt
        .iter()
        .copied()
        .zip(h.gradient.iter().map(|a| a.mapv(|v| v as f64)))
        .collect();
    let hv: HashMap<ValueId, ArrayD<f64>> = wrt
        .iter()
        .copied()
        .zip(h.hv.iter().map(|a| a.mapv(|v| v as f64)))
        .collect();
    let keep: BTreeSet<ValueId> = wrt.iter().copied().collect();
    let mut first: HashMap<(ValueId, usize), Vec<f64>> = HashMap::new();
    let mut second: HashMap<(ValueId, usize), Vec<f64>> = HashMap::new();
    for (_, _, s) in unit_slices(a, &keep) {
        first
            .entry((s.weight, s.axis))
            .or_insert_with(|| slice_sums(g, &grad, s.weight, s.axis, |w, d| -w * d));
        second
            .entry((s.weight, s.axis))
            .or_insert_with(|| slice_sums(g, &hv, s.weight, s.axis, |w, d| 0.5 * w * d));
    }
    let mut f: Vec<Vec<f64>> = a
        .groups
        .iter()
        .map(|grp| vec![0.0; grp.units.len()])
        .collect();
    let mut q = f.clone();
    for (gi, ui, s) in unit_slices(a, &keep) {
        f[gi][ui] += first[&(s.weight, s.axis)][s.index];
        q[gi][ui] += second[&(s.weight, s.axis)][s.index];
    }
    Ok(f.iter()
        .zip(&q)
        .map(|(fg, qg)| {
            fg.iter()
                .zip(qg)
                .map(|(&a, &b)| {
                    let a = if o.first_order { a } else { 0.0 };
                    if o.abs_total {
                        (a + b).abs()
                    } else {
                        a.abs() + b.abs()
                    }
                })
                .collect()
        })
        .collect())
}
