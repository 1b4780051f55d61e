//! Pruning at initialisation (`--at-init CRITERION`): masks for a freshly initialised model that
//! its user then trains, from the cheap per-weight criteria of ALGORITHMS.md §6 (Gollini
//! Navarrete et al., CPAL 2026, and the baselines they compare), after re-estimating the
//! BatchNorm statistics on calibration data: at initialisation they are (0, 1), so inference-mode
//! activations are mis-scaled and data-dependent scores empty whole layers.

use super::layers::Target;
use super::mask::{Allocation, Pattern};
use super::saliency::to_rows;
use crate::autodiff::curvature::slice_feeds;
use crate::autodiff::{Curvature, HutchinsonOptions, Objective};
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, Op, ValueId};
use crate::prune::compensate::{Network, moments, stats_of};
use crate::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InitCriterion {
    /// |θ|.
    Magnitude,
    /// GN: |ḡ|, the mean gradient's magnitude.
    GradNorm,
    /// SNIP: |θ·ḡ|.
    Snip,
    /// GraSP: −θ·(H ḡ); the weights with the largest scores go (they least reduce the gradient
    /// flow), logits at the temperature.
    Grasp,
    /// SynFlow: θ·∂R/∂θ with R = Σ outputs of the network with |θ| on an all-ones input,
    /// data-free, iterated with an exponential sparsity schedule.
    Synflow,
    /// FD: F_ii = mean over samples of g_i².
    FisherDiag,
    /// FP: ½ θ_i² F_ii (OBD with the Fisher diagonal).
    FisherPruner,
    /// FTS: |θ_i ḡ_i + ½ θ_i² F_ii|.
    Fts,
    /// HD: the Hutchinson estimate of H_ii (logits at the temperature).
    HutchDiag,
    /// HP: ½ θ_i² Ĥ_ii.
    HutchPruning,
    /// HTS: |θ_i ḡ_i + ½ θ_i² Ĥ_ii|.
    Hts,
}

impl std::fmt::Display for InitCriterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = clap::ValueEnum::to_possible_value(self).expect("named");
        f.write_str(v.get_name())
    }
}

impl InitCriterion {
    /// The criteria whose published code divides the logits by a temperature.
    fn tempered(self) -> bool {
        matches!(
            self,
            InitCriterion::Grasp
                | InitCriterion::HutchDiag
                | InitCriterion::HutchPruning
                | InitCriterion::Hts
        )
    }
}

#[derive(Debug, Clone)]
pub struct AtInitOptions {
    pub criterion: InitCriterion,
    /// Logit temperature of GraSP and the Hutchinson criteria (the reference code's 200).
    pub temperature: f64,
    /// Re-estimate BatchNorm statistics on the calibration data before scoring.
    pub bn_warmup: bool,
    /// Calibration samples scored (per-sample gradients for the Fisher criteria).
    pub samples: usize,
    /// Rademacher probes of the Hutchinson criteria.
    pub probes: usize,
    /// SynFlow's pruning rounds.
    pub synflow_rounds: usize,
}

impl Default for AtInitOptions {
    fn default() -> Self {
        AtInitOptions {
            criterion: InitCriterion::Snip,
            temperature: 200.0,
            bn_warmup: true,
            samples: 128,
            probes: 10,
            synflow_rounds: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AtInitReport {
    pub criterion: String,
    /// What the gradients are of (None for data-free criteria).
    pub objective: Option<String>,
    pub temperature: Option<f64>,
    /// BatchNormalization nodes whose statistics were re-estimated before scoring.
    pub bn_warmed_up: usize,
    pub samples: usize,
    pub probes: Option<usize>,
    pub synflow_rounds: Option<usize>,
}

/// Sets every BatchNormalization's mean and variance to the statistics of its input on `calib`,
/// in graph order (each on the network with the earlier ones already set), as a train-mode pass
/// over the data would. Returns the graph with the new statistics and how many were set.
pub fn warm_up_bn(g: &Graph, calib: &Feeds<f32>, micro_batch: usize) -> Result<(Graph, usize)> {
    let n = crate::autodiff::curvature::batch_size(calib)?;
    let mb = micro_batch.max(1);
    let batches: Vec<Feeds<f32>> = (0..n)
        .step_by(mb)
        .map(|s| slice_feeds(calib, s..(s + mb).min(n)))
        .collect();
    let mut net = Network {
        g,
        weights: HashMap::new(),
    };
    let mut count = 0;
    for nd in &g.nodes {
        if !matches!(nd.op, Ok(Op::BatchNorm { .. })) {
            continue;
        }
        let (Some(x), Some(mean), Some(var)) = (
            nd.inputs.first().copied().flatten(),
            nd.inputs.get(3).copied().flatten(),
            nd.inputs.get(4).copied().flatten(),
        ) else {
            continue;
        };
        if !g.weights.contains_key(&mean) || !g.weights.contains_key(&var) {
            continue;
        }
        let prefix = net.apply_to(g.subgraph(&[], &[x])?);
        let e = Engine::<f32>::new(&prefix)?;
        let mut parts = Vec::new();
        for f in super::only_inputs(&prefix, &batches) {
            let y = e.run(f)?.remove(0);
            let y = y
                .as_float()
                .ok_or_else(|| Error::graph(nd.label(), "input is not a float tensor"))?;
            if y.ndim() < 2 {
                return Err(Error::graph(nd.label(), "input has no channel axis"));
            }
            parts.push(stats_of(&y.to_owned()));
        }
        let (m, v) = moments(parts.into_iter());
        for (id, vals) in [(mean, m), (var, v)] {
            let t = &g.weights[&id].tensor;
            if t.len() != vals.len() {
                return Err(Error::graph(
                    nd.label(),
                    format!("{} statistics for {} channels", t.len(), vals.len()),
                ));
            }
            let a =
                ArrayD::from_shape_vec(IxDyn(t.shape()), vals.iter().map(|&v| v as f32).collect())
                    .expect("sized");
            net.weights.insert(id, Tensor::float(t.dtype, a));
        }
        count += 1;
    }
    Ok((net.apply_to(g.clone()), count))
}

/// The keep-masks (rows layout, as `mask::select`) of every target.
#[allow(clippy::too_many_arguments)]
pub fn masks(
    g: &Graph,
    targets: &[Target],
    o: &AtInitOptions,
    calib: &Feeds<f32>,
    labels: Option<&[i64]>,
    pattern: Pattern,
    alloc: Allocation,
    max_layer: f64,
    seed: u64,
    micro_batch: usize,
    warnings: &mut Vec<String>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(Vec<Vec<bool>>, AtInitReport)> {
    let (gs, warmed) = if o.bn_warmup {
        progress("batchnorm warm-up", 0, 1);
        let r = warm_up_bn(g, calib, micro_batch)?;
        progress("batchnorm warm-up", 1, 1);
        r
    } else {
        (g.clone(), 0)
    };
    let mut report = AtInitReport {
        criterion: o.criterion.to_string(),
        objective: None,
        temperature: None,
        bn_warmed_up: warmed,
        samples: 0,
        probes: None,
        synflow_rounds: None,
    };
    let wrt: Vec<ValueId> = targets.iter().map(|t| t.weight).collect();
    let theta: Vec<ArrayD<f64>> = targets
        .iter()
        .map(|t| {
            gs.weights[&t.weight]
                .tensor
                .as_float()
                .expect("float weight")
                .mapv(|v| v as f64)
        })
        .collect();
    let select = |scores: &[ArrayD<f64>], pattern: Pattern| {
        let rows: Vec<Vec<f64>> = targets
            .iter()
            .zip(scores)
            .map(|(t, s)| to_rows(t, s))
            .collect();
        // `check` refuses --allocation sensitivity with --at-init (nothing to measure yet).
        let split = match alloc {
            Allocation::Global => super::mask::Split::Global { max_layer },
            Allocation::Uniform | Allocation::Sensitivity => super::mask::Split::Uniform,
        };
        super::mask::select(&rows, targets, pattern, split)
    };
    let zip = |a: &[ArrayD<f64>], b: &[ArrayD<f64>], f: &dyn Fn(f64, f64) -> f64| {
        a.iter()
            .zip(b)
            .map(|(x, y)| ndarray::Zip::from(x).and(y).map_collect(|&x, &y| f(x, y)))
            .collect::<Vec<_>>()
    };
    if o.criterion == InitCriterion::Magnitude {
        let s: Vec<ArrayD<f64>> = theta.iter().map(|t| t.mapv(f64::abs)).collect();
        return Ok((select(&s, pattern), report));
    }
    if o.criterion == InitCriterion::Synflow {
        report.synflow_rounds = Some(o.synflow_rounds.max(1));
        let m = synflow(
            &gs,
            targets,
            calib,
            o.synflow_rounds.max(1),
            pattern,
            &select,
            progress,
        )?;
        return Ok((m, report));
    }

    let n = crate::autodiff::curvature::batch_size(calib)?.min(o.samples.max(1));
    let feeds = crate::calib::head(calib, n)?;
    report.samples = n;
    let (mut obj, what) = match labels {
        Some(l) => {
            let y = Engine::<f32>::new(&gs)?.run(feeds.clone())?;
            let (value, y0) = crate::prune::criteria::scored_output(&gs, &y)?;
            if y0.ndim() != 2 {
                return Err(Error::Usage(format!(
                    "--at-init {} needs a classifier's [N, classes] output; {:?} is {:?}",
                    o.criterion,
                    gs.name(value),
                    y0.shape()
                )));
            }
            (
                Objective::CrossEntropy {
                    value,
                    labels: l[..n.min(l.len())].to_vec(),
                    kind: crate::autodiff::OutputKind::detect(&y0),
                    temperature: 1.0,
                },
                "cross-entropy with the labels",
            )
        }
        None => {
            warnings.push(format!(
                "--at-init {} without --labels: gradients of the cross-entropy with labels sampled from the untrained model, which carry little information; give the training labels",
                o.criterion
            ));
            (
                crate::prune::second_order::sampled_label_objective(&gs, &feeds, seed)?,
                "cross-entropy with labels sampled from the model",
            )
        }
    };
    if o.criterion.tempered() {
        match &mut obj {
            Objective::CrossEntropy {
                kind: crate::autodiff::OutputKind::Logits,
                temperature,
                ..
            } => {
                *temperature = o.temperature;
                report.temperature = Some(o.temperature);
            }
            _ => warnings.push(format!(
                "--at-init {}: the output is not logits, so no temperature is applied",
                o.criterion
            )),
        }
    }
    report.objective = Some(format!("{what}, {n} samples"));
    let mut cur = Curvature::<f32>::new(&gs, micro_batch)?;
    progress("gradients", 0, 1);
    let grad: Vec<ArrayD<f64>> = cur
        .gradient(&feeds, &obj, &wrt)?
        .1
        .into_iter()
        .map(|a| a.mapv(|v| v as f64))
        .collect();
    progress("gradients", 1, 1);
    let fisher = |cur: &Curvature<f32>, progress: &mut dyn FnMut(&str, usize, usize)| {
        let mut f: Vec<ArrayD<f64>> = theta.iter().map(|t| ArrayD::zeros(t.raw_dim())).collect();
        for s in 0..n {
            progress("per-sample gradients", s, n);
            let gs_ = cur
                .gradient(&slice_feeds(&feeds, s..s + 1), &obj.slice(s..s + 1), &wrt)?
                .1;
            for (acc, g1) in f.iter_mut().zip(gs_) {
                ndarray::Zip::from(acc).and(&g1).for_each(|a, &g| {
                    let g = g as f64;
                    *a += g * g / n as f64;
                });
            }
        }
        progress("per-sample gradients", n, n);
        Ok::<_, Error>(f)
    };
    let mut hutch = |cur: &mut Curvature<f32>, progress: &mut dyn FnMut(&str, usize, usize)| {
        let p = o.probes.max(1);
        report.probes = Some(p);
        let h = cur.hutchinson_observed(
            &feeds,
            &obj,
            &wrt,
            HutchinsonOptions {
                seed,
                min_probes: p,
                max_probes: p,
                tol: 0.0,
            },
            &mut |k| progress("hessian probes", k, p),
        )?;
        Ok::<_, Error>(h.diagonals)
    };
    let scores: Vec<ArrayD<f64>> = match o.criterion {
        InitCriterion::GradNorm => grad.iter().map(|g| g.mapv(f64::abs)).collect(),
        InitCriterion::Snip => zip(&theta, &grad, &|w, g| (w * g).abs()),
        InitCriterion::Grasp => {
            progress("hessian-gradient product", 0, 1);
            let v: Vec<ArrayD<f32>> = grad.iter().map(|g| g.mapv(|x| x as f32)).collect();
            let hg: Vec<ArrayD<f64>> = cur
                .hvp(&feeds, &obj, &wrt, &v)?
                .hv
                .into_iter()
                .map(|a| a.mapv(|x| x as f64))
                .collect();
            progress("hessian-gradient product", 1, 1);
            // Kept: the smallest −θ·Hg, i.e. the largest θ·Hg.
            zip(&theta, &hg, &|w, h| w * h)
        }
        InitCriterion::FisherDiag => fisher(&cur, progress)?,
        InitCriterion::FisherPruner => {
            let f = fisher(&cur, progress)?;
            zip(&theta, &f, &|w, f| 0.5 * w * w * f)
        }
        InitCriterion::Fts => {
            let f = fisher(&cur, progress)?;
            let wg = zip(&theta, &grad, &|w, g| w * g);
            let half = zip(&theta, &f, &|w, f| 0.5 * w * w * f);
            zip(&wg, &half, &|a, b| (a + b).abs())
        }
        InitCriterion::HutchDiag => hutch(&mut cur, progress)?,
        InitCriterion::HutchPruning => {
            let h = hutch(&mut cur, progress)?;
            zip(&theta, &h, &|w, h| 0.5 * w * w * h)
        }
        InitCriterion::Hts => {
            let h = hutch(&mut cur, progress)?;
            let wg = zip(&theta, &grad, &|w, g| w * g);
            let half = zip(&theta, &h, &|w, h| 0.5 * w * w * h);
            zip(&wg, &half, &|a, b| (a + b).abs())
        }
        InitCriterion::Magnitude | InitCriterion::Synflow => unreachable!("handled above"),
    };
    Ok((select(&scores, pattern), report))
}

/// Keep-masks from per-layer scores under a pattern (the run's allocation and guards).
type Select<'a> = &'a dyn Fn(&[ArrayD<f64>], Pattern) -> Vec<Vec<bool>>;

/// SynFlow (Tanaka et al., 2020): with every weight of the layers and norms replaced by its
/// absolute value and an all-ones input, the score of θ is θ·∂R/∂θ, R = Σ outputs; masked
/// weights stay masked, and the kept density shrinks as d^(k/rounds) over the rounds. f64:
/// R is a product over the depth and overflows f32 on deep nets.
fn synflow(
    g: &Graph,
    targets: &[Target],
    calib: &Feeds<f32>,
    rounds: usize,
    pattern: Pattern,
    select: Select<'_>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<Vec<bool>>> {
    let mut ga = g.clone();
    for nd in &g.nodes {
        let idx: &[usize] = match nd.op {
            Ok(Op::Conv { .. } | Op::ConvTranspose(_) | Op::Gemm { .. } | Op::MatMul) => &[0, 1, 2],
            Ok(Op::BatchNorm { .. }) => &[1, 2],
            _ => &[],
        };
        for &k in idx {
            if let Some(Some(id)) = nd.inputs.get(k)
                && let Some(w) = ga.weights.get_mut(id)
                && let Some(a) = w.tensor.as_float()
            {
                w.tensor = Tensor::float(w.tensor.dtype, a.mapv(f32::abs));
            }
        }
    }
    let ones: Feeds<f64> = crate::calib::head(calib, 1)?
        .into_iter()
        .map(|(n, t)| {
            let s = t.shape().to_vec();
            (n, Tensor::f32(ArrayD::from_elem(IxDyn(&s), 1.0f64)))
        })
        .collect();
    let wrt: Vec<ValueId> = targets.iter().map(|t| t.weight).collect();
    let abs: Vec<ArrayD<f64>> = targets
        .iter()
        .map(|t| {
            ga.weights[&t.weight]
                .tensor
                .as_float()
                .expect("float weight")
                .mapv(|v| v as f64)
        })
        .collect();
    let mut cur = Curvature::<f64>::new(&ga, 1)?;
    let value = {
        let ones32: Feeds<f32> = ones.iter().map(|(n, t)| (n.clone(), t.convert())).collect();
        let y = Engine::<f32>::new(&ga)?.run(ones32)?;
        crate::prune::criteria::scored_output(&ga, &y)?.0
    };
    let (final_density, steps) = match pattern {
        Pattern::Sparsity(s) => (1.0 - s, rounds),
        // An N:M pattern is one selection, not a schedule.
        Pattern::NM(..) => (1.0, 1),
    };
    let mut keep: Vec<ArrayD<f64>> = abs.iter().map(|a| ArrayD::ones(a.raw_dim())).collect();
    let mut result = Vec::new();
    for k in 1..=steps {
        progress("synflow rounds", k - 1, steps);
        let theta: Vec<ArrayD<f64>> = abs.iter().zip(&keep).map(|(a, m)| a * m).collect();
        for ((&id, th), t) in wrt.iter().zip(&theta).zip(targets) {
            let dtype = g.weights[&t.weight].tensor.dtype;
            cur.set_weight(id, Tensor::float(dtype, th.clone()))?;
        }
        let y = cur.forward(ones.clone())?.float(&ga, value)?;
        if y.iter().any(|v| !v.is_finite()) {
            return Err(Error::Runtime(format!(
                "SynFlow: the network's output on the all-ones input overflows even in f64 (round {k}); use another --at-init criterion"
            )));
        }
        // ½‖y − (y − 1)‖² has gradient 1 in every output element here: ∂R/∂θ for R = Σ y.
        let obj = Objective::Mse {
            value,
            target: y.mapv(|v| v - 1.0).into_shared(),
        };
        let grads = cur.gradient(&ones, &obj, &wrt)?.1;
        let scores: Vec<ArrayD<f64>> = theta
            .iter()
            .zip(&grads)
            .zip(&keep)
            .map(|((th, gr), m)| {
                ndarray::Zip::from(th)
                    .and(gr)
                    .and(m)
                    .map_collect(|&t, &g, &m| if m > 0.0 { t * g } else { f64::NEG_INFINITY })
            })
            .collect();
        let p = match pattern {
            Pattern::Sparsity(_) => {
                Pattern::Sparsity(1.0 - final_density.powf(k as f64 / steps as f64))
            }
            nm => nm,
        };
        result = select(&scores, p);
        for ((m, t), rows) in keep.iter_mut().zip(targets).zip(&result) {
            let ones_rows: Vec<f64> = rows.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
            *m = super::saliency::from_rows(t, m.shape(), &ones_rows).mapv(|v| v as f64);
        }
    }
    progress("synflow rounds", steps, steps);
    Ok(result)
}
