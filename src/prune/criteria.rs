//! Importance of each prunable unit. Higher = more important (removed last).
//!
//! - `magnitude`: group L2 norm, sqrt(Σ over every slice removed with the unit of ‖w‖²)
//!   (Torch-Pruning's group importance, all members).
//! - `taylor`: first-order Taylor estimate of the loss change of removing the unit, squared
//!   and averaged over calibration micro-batches (Molchanov et al. 2019): E_b[(Σ_slices g·w)²].
//!   With labels the loss is the cross-entropy; without, a classifier uses its own top-1 as
//!   pseudo-labels, and other models a random projection of their outputs (Rademacher r, the
//!   loss r·y), so the score is an unbiased estimate of the output energy Σ‖J·w_unit‖² the
//!   removal would change (the label-free KL to the dense model has zero gradient there).

use crate::analysis::{Analysis, Slice};
use crate::autodiff::{Curvature, Objective, OutputKind};
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, ValueId};
use ndarray::{ArrayD, Axis};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    Magnitude,
    Taylor,
    Fisher,
    Hap,
    #[value(name = "sosp-h")]
    #[serde(rename = "sosp-h")]
    SospH,
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Criterion::Magnitude => "magnitude",
            Criterion::Taylor => "taylor",
            Criterion::Fisher => "fisher",
            Criterion::Hap => "hap",
            Criterion::SospH => "sosp-h",
        })
    }
}

/// Scores per group, per unit.
pub type Scores = Vec<Vec<f64>>;

/// For each (weight, axis) used by a slice: Σ over each index's slice of f(w) (or f(w, g)).
fn per_index(
    slices: impl Iterator<Item = Slice>,
    value: impl Fn(ValueId, usize) -> Vec<f64>,
) -> HashMap<(ValueId, usize), Vec<f64>> {
    let keys: BTreeSet<(ValueId, usize)> = slices.map(|s| (s.weight, s.axis)).collect();
    keys.into_iter()
        .map(|(w, a)| ((w, a), value(w, a)))
        .collect()
}

fn sum_over_slices(a: &Analysis, table: &HashMap<(ValueId, usize), Vec<f64>>) -> Scores {
    a.groups
        .iter()
        .map(|grp| {
            grp.units
                .iter()
                .map(|u| {
                    u.slices
                        .iter()
                        .map(|s| table[&(s.weight, s.axis)][s.index])
                        .sum()
                })
                .collect()
        })
        .collect()
}

fn all_slices(a: &Analysis) -> impl Iterator<Item = Slice> + '_ {
    a.groups
        .iter()
        .flat_map(|g| g.units.iter().flat_map(|u| u.slices.iter().copied()))
}

pub fn magnitude(g: &Graph, a: &Analysis) -> Scores {
    let table = per_index(all_slices(a), |w, axis| {
        let t = g.weights[&w].tensor.as_float().expect("float weight");
        t.axis_iter(Axis(axis))
            .map(|s| s.iter().map(|&v| (v as f64) * (v as f64)).sum())
            .collect()
    });
    sum_over_slices(a, &table)
        .into_iter()
        .map(|g| g.into_iter().map(f64::sqrt).collect())
        .collect()
}

/// The objective Taylor scores differentiate, and its name for the report.
pub fn taylor_objective(
    g: &Graph,
    feeds: &Feeds<f32>,
    labels: Option<&[i64]>,
    seed: u64,
) -> Result<(Objective, String)> {
    let y = Engine::<f32>::new(g)?.run(feeds.clone())?;
    let (out, y0) = scored_output(g, &y)?;
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
        let pseudo: Vec<i64> = crate::validate::top1(&y[0])
            .expect("rank 2")
            .into_iter()
            .map(|v| v as i64)
            .collect();
        return Ok((
            Objective::CrossEntropy {
                value: out,
                labels: pseudo,
                kind: OutputKind::detect(&y0),
                temperature: 1.0,
            },
            "cross-entropy with the dense model's top-1 as labels".into(),
        ));
    }
    // r·y as ½‖y − (y − r)‖² at the dense weights: the same gradient, Jᵀr.
    let mut rng = crate::autodiff::rng::SplitMix64::new(seed ^ 0x7a11_0b5e);
    let mut terms = Vec::new();
    for (&o, t) in g.outputs.iter().zip(&y) {
        if let Some(a) = t.as_float() {
            let target = a.mapv(|v| v as f64 - rng.rademacher());
            terms.push(Objective::Mse {
                value: o,
                target: target.into_shared(),
            });
        }
    }
    Ok((
        Objective::Sum(terms),
        "random projection of the outputs (label-free)".into(),
    ))
}

/// Taylor scores over micro-batches of `micro_batch` samples, with the progress callback called
/// after each.
pub fn taylor(
    g: &Graph,
    a: &Analysis,
    feeds: &Feeds<f32>,
    obj: &Objective,
    micro_batch: usize,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<Scores> {
    let weights: Vec<ValueId> = all_slices(a)
        .map(|s| s.weight)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let n = crate::autodiff::curvature::batch_size(feeds)?;
    let mb = micro_batch.max(1);
    let cur = Curvature::<f32>::new(g, mb)?;
    let keys: BTreeSet<(ValueId, usize)> = all_slices(a).map(|s| (s.weight, s.axis)).collect();
    let mut acc: Vec<Vec<f64>> = a.groups.iter().map(|g| vec![0.0; g.units.len()]).collect();
    let batches: Vec<std::ops::Range<usize>> =
        (0..n).step_by(mb).map(|s| s..(s + mb).min(n)).collect();
    for (bi, r) in batches.iter().enumerate() {
        let f = crate::autodiff::curvature::slice_feeds(feeds, r.clone());
        let (_, grads) = cur.gradient(&f, &obj.slice(r.clone()), &weights)?;
        let gmap: BTreeMap<ValueId, &ArrayD<f32>> = weights.iter().copied().zip(&grads).collect();
        let table: HashMap<(ValueId, usize), Vec<f64>> = keys
            .iter()
            .map(|&(w, axis)| {
                let wt = g.weights[&w].tensor.as_float().expect("float weight");
                let gt = gmap[&w];
                let v = wt
                    .axis_iter(Axis(axis))
                    .zip(gt.axis_iter(Axis(axis)))
                    .map(|(ws, gs)| {
                        ws.iter()
                            .zip(gs.iter())
                            .map(|(&x, &y)| x as f64 * y as f64)
                            .sum()
                    })
                    .collect();
                ((w, axis), v)
            })
            .collect();
        let dots = sum_over_slices(a, &table);
        let share = r.len() as f64 / n as f64;
        for (accg, dg) in acc.iter_mut().zip(dots) {
            for (x, d) in accg.iter_mut().zip(dg) {
                *x += share * d * d;
            }
        }
        on_batch(bi + 1, batches.len());
    }
    Ok(acc)
}

/// Scores divided by their group's mean, so that groups of different scale compete fairly in
/// one global ranking (a group of all-zero scores stays zero).
pub fn normalize(scores: &Scores) -> Scores {
    scores
        .iter()
        .map(|g| {
            let mean = g.iter().sum::<f64>() / g.len().max(1) as f64;
            g.iter()
                .map(|&s| if mean > 0.0 { s / mean } else { s })
                .collect()
        })
        .collect()
}

/// The output the objectives score and its values: `Graph::scored_output` (`--score-output`),
/// else the first float output (a model may pass its int64 inputs through as outputs, as
/// MiniLM's export does).
pub(crate) fn scored_output(
    g: &crate::ir::Graph,
    y: &[crate::tensor::Tensor<f32>],
) -> Result<(crate::ir::ValueId, ndarray::ArrayD<f64>)> {
    if let Some(s) = g.scored_output {
        let i = g.outputs.iter().position(|&o| o == s).ok_or_else(|| {
            Error::graph(format!("output {:?}", g.name(s)), "is not a graph output")
        })?;
        let a = y.get(i).and_then(|t| t.as_float()).ok_or_else(|| {
            Error::graph(format!("output {:?}", g.name(s)), "is not a float output")
        })?;
        return Ok((s, a.mapv(|v| v as f64)));
    }
    g.outputs
        .iter()
        .zip(y)
        .find_map(|(&o, t)| t.as_float().map(|a| (o, a.mapv(|v| v as f64))))
        .ok_or_else(|| Error::graph("graph", "has no float output to score against"))
}
