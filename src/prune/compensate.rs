//! Training-free compensation after structured removal.
//!
//! The pruned network is represented at its original shapes with the removed units' consumer
//! slices zeroed (exactly what the removal computes, see `rewrite::zero_consumers`). In
//! topological order:
//! - every **consumer layer** (Conv with group 1, Gemm, MatMul with a constant weight) of removed
//!   units gets its remaining input weights and bias refit to reproduce its dense output on
//!   calibration data: min ‖W·X_dense + b − (W'·X_pruned + b')‖² over the kept inputs, closed
//!   form with the layer Gram X Xᵀ (conv inputs unfolded as im2col columns), relative damping,
//!   dead inputs dropped, and more damping when the Cholesky factorisation fails. A layer
//!   without a bias of its own shifts the BatchNormalization after it (running mean), or goes
//!   without the bias term.
//! - every **BatchNormalization** downstream of a change has its statistics re-estimated so that
//!   its output matches the dense network's per-channel mean and variance.
//!
//! Each step sees the network as the previous steps left it, so errors do not accumulate.

use crate::analysis::{Analysis, Role};
use crate::autodiff::curvature::{batch_size, slice_feeds};
use crate::error::{Error, Result};
use crate::interp::ops::conv::{conv_shape, im2col};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, Op, ValueId};
use crate::rewrite::Edit;
use crate::tensor::{Data, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, Copy)]
pub struct CompensateOptions {
    /// Least-squares refit of the consumer layers.
    pub refit: bool,
    /// BatchNormalization statistics re-estimated to match the dense outputs.
    pub bn_recalibrate: bool,
    /// Relative damping: λ = damp · mean(diag(X Xᵀ)).
    pub damp: f64,
    /// Columns (conv output positions × samples) used per layer, sampled evenly.
    pub max_columns: usize,
    /// Calibration samples used (the first ones).
    pub max_samples: usize,
    pub micro_batch: usize,
    /// `--refit snows`: after its least-squares refit, each consumer's kept weights are fit to
    /// the dense outputs of the next `horizon` operations (Newton-CG, `sparse::snows`).
    pub snows: Option<crate::sparse::snows::SnowsOptions>,
}

impl Default for CompensateOptions {
    fn default() -> Self {
        CompensateOptions {
            refit: true,
            bn_recalibrate: true,
            damp: 1e-3,
            max_columns: 1 << 16,
            max_samples: 128,
            micro_batch: 32,
            snows: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RefitRow {
    pub layer: String,
    pub kind: String,
    pub inputs_kept: usize,
    pub inputs: usize,
    /// ‖dense − pruned‖ / ‖dense‖ of the layer output on the calibration columns, before and
    /// after the refit.
    pub error_before: f64,
    pub error_after: f64,
    pub damping: f64,
    pub retries: usize,
    pub dead_inputs: usize,
    pub bias: String,
    pub columns: usize,
    /// Why the layer was left as pruned (too few calibration columns for its inputs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The damping of a refit is chosen on held-out calibration columns (the last quarter of every
/// micro-batch's rows) among `damp · 10^j`, j < DAMPING_STEPS, and the refit is dropped when no
/// choice beats the pruned weights there: with few samples the least-squares solution fits the
/// calibration set's noise (MiniLM at R = 0.5 with 32 sentences: the refit raised the cosine on
/// the calibration sentences from 0.84 to 0.91 and lowered it on held-out ones from 0.85 to
/// 0.69).
const DAMPING_STEPS: i32 = 8;

/// Ridge least squares pulled toward `w0` instead of zero: (G + λI) wᵀ = (C + λ w0)ᵀ with
/// λ = damp · mean diag G, so heavy damping returns the pruned weights, never worse.
fn solve_toward(
    gram: &[f64],
    cross: &[f64],
    w0: &[f64],
    k: usize,
    rows: usize,
    damp: f64,
) -> Result<(Vec<f64>, f64, usize)> {
    let mean_diag = (0..k).map(|i| gram[i * k + i]).sum::<f64>() / k.max(1) as f64;
    let lambda = damp * mean_diag.max(1e-12);
    let pulled: Vec<f64> = cross.iter().zip(w0).map(|(c, w)| c + lambda * w).collect();
    solve_spd(gram, k, &pulled, rows, damp)
}

/// ‖y‖² − 2 wᵀc + wᵀGw summed over the rows of `w` (rows × k): the squared error of w on the
/// columns whose statistics G, C, ‖y‖² are given. W·G goes through the GEMM kernel: scalar
/// loops took minutes per call on VGG-19's fc6 (4096 rows × 12544 kept inputs).
fn quadratic_error(w: &[f64], gram: &[f64], cross: &[f64], ynorm: f64, k: usize) -> f64 {
    use crate::tensor::{MatRef, Real};
    let rows = w.len() / k.max(1);
    if rows == 0 {
        return ynorm;
    }
    let mut wg = vec![0.0f64; rows * k];
    <f64 as Real>::gemm(
        rows,
        k,
        k,
        MatRef::row_major(w, k, false),
        MatRef::row_major(gram, k, false),
        &mut wg,
        k,
        false,
        1.0,
        true,
    );
    let quad: f64 = wg.iter().zip(w).map(|(a, b)| a * b).sum();
    let lin: f64 = w.iter().zip(cross).map(|(a, b)| a * b).sum();
    ynorm + quad - 2.0 * lin
}

#[derive(Debug, Clone, Serialize)]
pub struct ImplantRow {
    pub layer: String,
    /// "1×1 conv", or "rank r" for a linear layer's factor.
    pub kind: String,
    pub channels: usize,
    pub inputs: usize,
    /// Parameters of the implant and of the rows (k×k filters, linear rows) it replaces.
    pub params: usize,
    pub params_replaced: usize,
    /// ‖dense − implant‖ / ‖dense‖ of the implanted channels' outputs on the calibration columns.
    pub error: f64,
}

/// One consumer's SNOWS step (`--refit snows`).
#[derive(Debug, Clone, Serialize)]
pub struct SnowsRefitRow {
    pub layer: String,
    /// The reconstructed outputs (the horizon).
    pub horizon: Vec<String>,
    /// Horizon loss on the samples it was fit on, before and after.
    pub loss_before: f64,
    pub loss_after: f64,
    /// The same on held-out calibration samples (the last quarter), which decide.
    pub heldout_before: f64,
    pub heldout_after: f64,
    /// Whether the new weights were kept (they must lower the held-out loss).
    pub kept: bool,
    pub newton_steps: usize,
    pub cg_iterations: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CompensationReport {
    pub refits: Vec<RefitRow>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snows: Vec<SnowsRefitRow>,
    pub implants: Vec<ImplantRow>,
    pub batchnorms_recalibrated: usize,
    pub columns: usize,
}

/// The consumer side of one layer: which inputs it loses.
struct Consumer {
    node: usize,
    weight: ValueId,
    /// Axis of the weight that indexes the layer's inputs.
    axis: usize,
    removed: BTreeSet<usize>,
}

fn consumers(g: &Graph, a: &Analysis, edit: &Edit) -> Vec<Consumer> {
    let mut removed: BTreeMap<(ValueId, usize), BTreeSet<usize>> = BTreeMap::new();
    for (gi, grp) in a.groups.iter().enumerate() {
        for (ui, u) in grp.units.iter().enumerate() {
            if edit.is_removed((gi, ui)) {
                for s in u.slices.iter().filter(|s| s.role == Role::In) {
                    removed
                        .entry((s.weight, s.axis))
                        .or_default()
                        .insert(s.index);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let Some(wv) = n.inputs.get(1).copied().flatten() else {
            continue;
        };
        let (axis, ok) = match &n.op {
            Ok(Op::Conv { group, .. }) => (1, *group == 1),
            Ok(Op::Gemm {
                trans_a: false,
                trans_b,
                ..
            }) => (if *trans_b { 1 } else { 0 }, true),
            Ok(Op::MatMul) => (
                0,
                g.weights
                    .get(&wv)
                    .is_some_and(|w| w.tensor.shape().len() == 2),
            ),
            _ => continue,
        };
        if !ok || !g.weights.contains_key(&wv) {
            continue;
        }
        if let Some(r) = removed.get(&(wv, axis)) {
            out.push(Consumer {
                node: i,
                weight: wv,
                axis,
                removed: r.clone(),
            });
        }
    }
    out
}

/// Where a layer's bias lives.
pub(crate) enum Bias {
    /// A weight input of the node (Conv B, Gemm C of shape [N] or [1, N]).
    Own(ValueId),
    /// A constant added right after (MatMul + Add(b)).
    AddAfter(ValueId),
    /// No bias, but a BatchNormalization right after: its running mean absorbs a shift.
    BnMean(ValueId),
    None,
}

fn users(g: &Graph, v: ValueId) -> Vec<usize> {
    g.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.inputs.contains(&Some(v)))
        .map(|(i, _)| i)
        .collect()
}

pub(crate) fn bias_of(g: &Graph, node: usize, cout: usize) -> Bias {
    let n = &g.nodes[node];
    let vec_weight = |v: ValueId| {
        g.weights
            .get(&v)
            .is_some_and(|w| w.tensor.len() == cout && w.tensor.shape().last() == Some(&cout))
    };
    match &n.op {
        Ok(Op::Conv { .. }) | Ok(Op::Gemm { .. }) => {
            if let Some(b) = n.inputs.get(2).copied().flatten() {
                return if vec_weight(b) {
                    Bias::Own(b)
                } else {
                    Bias::None
                };
            }
        }
        _ => {}
    }
    let Some(out) = n.outputs.first().copied().flatten() else {
        return Bias::None;
    };
    let us = users(g, out);
    if us.len() != 1 {
        return Bias::None;
    }
    let u = &g.nodes[us[0]];
    match &u.op {
        Ok(Op::Binary(crate::ir::op::Binary::Add)) => {
            let other = u.inputs.iter().flatten().copied().find(|&v| v != out);
            match other {
                Some(b) if vec_weight(b) && g.weights[&b].tensor.shape().len() == 1 => {
                    Bias::AddAfter(b)
                }
                _ => Bias::None,
            }
        }
        Ok(Op::BatchNorm { .. }) if u.inputs.first() == Some(&Some(out)) => {
            match u.inputs.get(3).copied().flatten() {
                Some(m) if g.weights.contains_key(&m) => Bias::BnMean(m),
                _ => Bias::None,
            }
        }
        _ => Bias::None,
    }
}

/// The current weights of the pruned network (original shapes), starting from the zeroed
/// consumer slices.
pub(crate) struct Network<'g> {
    pub(crate) g: &'g Graph,
    pub(crate) weights: HashMap<ValueId, Tensor<f32>>,
}

impl<'g> Network<'g> {
    /// `g` with no weight replaced.
    pub(crate) fn dense(g: &'g Graph) -> Self {
        Network {
            g,
            weights: HashMap::new(),
        }
    }

    /// `sub` (a graph or sub-graph of `g`) with this network's replaced weights.
    pub(crate) fn apply_to(&self, mut sub: Graph) -> Graph {
        for (id, t) in &self.weights {
            if let Some(w) = sub.weights.get_mut(id) {
                w.tensor = t.clone();
            }
        }
        sub
    }

    pub(crate) fn get(&self, id: ValueId) -> Tensor<f32> {
        self.weights
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.g.weights[&id].tensor.clone())
    }
}

/// Evenly spaced picks of `k` out of `n`.
pub(crate) fn picks(n: usize, k: usize) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    (0..k).map(|i| i * n / k).collect()
}

/// The input columns of a layer (rows: one input vector each, im2col for convs) and the
/// matching dense outputs, for a micro-batch: (columns, k) with `k` the vector length.
pub(crate) fn columns(
    op: &Op,
    x: &ArrayD<f32>,
    w_shape: &[usize],
    budget: usize,
) -> Result<(Vec<f64>, usize, usize)> {
    let x64 = x.mapv(|v| v as f64);
    let x = x64.as_standard_layout();
    let xs = x.as_slice().expect("std");
    match op {
        Op::Conv { window, group } => {
            let sh = conv_shape(x.shape(), w_shape, window, *group).map_err(Error::Data)?;
            let k = sh.c * sh.g.kh * sh.g.kw;
            let ohw = sh.g.out_len();
            let per_img = budget.div_ceil(sh.n.max(1)).clamp(1, ohw);
            let take = picks(ohw, per_img);
            let mut col = vec![0.0f64; k * ohw];
            let hw = sh.g.h * sh.g.w;
            let mut out = Vec::with_capacity(sh.n * take.len() * k);
            for img in 0..sh.n {
                im2col(
                    &xs[img * sh.c * hw..(img + 1) * sh.c * hw],
                    sh.c,
                    &sh.g,
                    &mut col,
                );
                for &p in &take {
                    out.extend((0..k).map(|r| col[r * ohw + p]));
                }
            }
            Ok((out, k, sh.n * take.len()))
        }
        _ => {
            let k = *x.shape().last().unwrap_or(&1);
            let rows = xs.len() / k.max(1);
            let take = picks(rows, budget.max(1));
            let mut out = Vec::with_capacity(take.len() * k);
            for &r in &take {
                out.extend_from_slice(&xs[r * k..(r + 1) * k]);
            }
            Ok((out, k, take.len()))
        }
    }
}

/// Solves (G + λI) Xᵀ = Cᵀ for X (rows × k) by Cholesky, raising λ tenfold on failure.
pub(crate) fn solve_spd(
    gram: &[f64],
    k: usize,
    cross: &[f64],
    rows: usize,
    damp: f64,
) -> Result<(Vec<f64>, f64, usize)> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::cholesky::llt;
    let mean_diag = (0..k).map(|i| gram[i * k + i]).sum::<f64>() / k.max(1) as f64;
    let mut lambda = damp * mean_diag.max(1e-12);
    // Added to the diagonal after four failed retries, so it cannot collapse when the first
    // damping was negligible.
    let mut floor = 0.0;
    let par = faer::get_global_parallelism();
    for retry in 0..8 {
        // Factored in place: one k×k copy besides the caller's G (VGG-19's fc6 Gram is 3.7 GB;
        // faer's `Llt::new` would hold a second copy while factoring).
        let mut a = faer::Mat::<f64>::from_fn(k, k, |i, j| {
            gram[i * k + j] + if i == j { lambda + floor } else { 0.0 }
        });
        let mut mem = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<f64>(
            k,
            par,
            Default::default(),
        ));
        let factored = llt::factor::cholesky_in_place(
            a.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut mem),
            Default::default(),
        )
        .is_ok();
        if factored {
            let mut rhs = faer::Mat::<f64>::from_fn(k, rows, |i, j| cross[j * k + i]);
            let mut mem = MemBuffer::new(llt::solve::solve_in_place_scratch::<f64>(k, rows, par));
            llt::solve::solve_in_place_with_conj(
                a.as_ref(),
                faer::Conj::No,
                rhs.as_mut(),
                par,
                MemStack::new(&mut mem),
            );
            let x: Vec<f64> = (0..rows)
                .flat_map(|r| (0..k).map(move |c| (r, c)))
                .map(|(r, c)| rhs[(c, r)])
                .collect();
            if x.iter().all(|v| v.is_finite()) {
                return Ok((x, lambda, retry));
            }
        }
        lambda *= 10.0;
        if retry == 3 {
            floor += mean_diag.max(1e-12) * 1e-2;
        }
    }
    Err(Error::Runtime(
        "the least-squares refit did not factorise even with heavy damping".into(),
    ))
}

/// One step of the sequential pass.
enum Step<'c> {
    Refit(&'c Consumer),
    /// An implant's producer: (implant, the producer's weight, its removed inputs).
    Implant(&'c crate::prune::implant::Implant, ValueId, BTreeSet<usize>),
    Bn(usize),
}

/// What the dense network gives each step, gathered in one pass: the sampled dense outputs of a
/// consumer (per micro-batch, columns × outputs) or the dense input statistics of a BN.
enum DenseSide {
    Outputs(Vec<Vec<f32>>),
    Moments(Vec<f64>, Vec<f64>),
}

/// The layer's weight as rows [outputs × inputs·taps] matching `columns`, and its geometry.
pub(crate) struct Layer {
    pub(crate) op: Op,
    pub(crate) w_shape: Vec<usize>,
    pub(crate) cout: usize,
    pub(crate) kfull: usize,
    pub(crate) taps: usize,
}

impl Layer {
    pub(crate) fn of(g: &Graph, node: usize, weight: ValueId) -> Layer {
        let op = g.nodes[node].op.clone().expect("supported");
        let w_shape = g.weights[&weight].tensor.shape().to_vec();
        let (cout, kfull) = match &op {
            Op::Conv { .. } => (w_shape[0], w_shape[1..].iter().product::<usize>()),
            Op::Gemm { trans_b: true, .. } => (w_shape[0], w_shape[1]),
            _ => (w_shape[1], w_shape[0]),
        };
        let taps = match &op {
            Op::Conv { .. } => w_shape[2..].iter().product::<usize>(),
            _ => 1,
        };
        Layer {
            op,
            w_shape,
            cout,
            kfull,
            taps,
        }
    }

    pub(crate) fn rows(&self, w: &Tensor<f32>) -> Vec<f64> {
        let a = w.as_float().expect("float");
        match &self.op {
            Op::Conv { .. } | Op::Gemm { trans_b: true, .. } => {
                a.iter().map(|&v| v as f64).collect()
            }
            _ => a.t().iter().map(|&v| v as f64).collect(),
        }
    }
}

/// Per-channel Σx, Σx² and the count per channel.
pub(crate) type Sums = (Vec<f64>, Vec<f64>, f64);

pub(crate) fn stats_of(a: &ArrayD<f32>) -> Sums {
    let c = a.shape()[1];
    let (mut s, mut s2) = (vec![0.0; c], vec![0.0; c]);
    // Contiguous per-(sample, channel) planes in memory order, each channel's sums taken in
    // the same order as along its lane (sample, then position): a strided lane walk through
    // an NCHW array was a tenth of a SNOWS run on PP-LCNet.
    let a = a.as_standard_layout();
    let plane = a.len() / (a.shape()[0] * c).max(1);
    if let Some(values) = a.as_slice()
        && plane > 0
    {
        for (i, block) in values.chunks(plane).enumerate() {
            let ch = i % c;
            let (mut t, mut t2) = (s[ch], s2[ch]);
            for &v in block {
                let v = v as f64;
                t += v;
                t2 += v * v;
            }
            s[ch] = t;
            s2[ch] = t2;
        }
    }
    (s, s2, (a.len() / c.max(1)) as f64)
}

pub(crate) fn moments(parts: impl Iterator<Item = Sums>) -> (Vec<f64>, Vec<f64>) {
    let (mut s, mut s2, mut n) = (Vec::new(), Vec::new(), 0.0);
    for (a, b, k) in parts {
        if s.is_empty() {
            s = vec![0.0; a.len()];
            s2 = vec![0.0; a.len()];
        }
        for i in 0..a.len() {
            s[i] += a[i];
            s2[i] += b[i];
        }
        n += k;
    }
    let m: Vec<f64> = s.iter().map(|v| v / n.max(1.0)).collect();
    let var = s2
        .iter()
        .zip(&m)
        .map(|(q, m)| (q / n.max(1.0) - m * m).max(0.0))
        .collect();
    (m, var)
}

pub fn compensate(
    g: &Graph,
    a: &Analysis,
    edit: &Edit,
    calib: &Feeds<f32>,
    o: &CompensateOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(HashMap<ValueId, Tensor<f32>>, CompensationReport)> {
    let mut report = CompensationReport::default();
    // The network as the removal leaves it: consumer slices zeroed.
    let mut net = Network {
        g,
        weights: HashMap::new(),
    };
    let cons = consumers(g, a, edit);
    for c in &cons {
        let mut t = net.get(c.weight);
        if let Data::Float(arr) = &mut t.data {
            for &i in &c.removed {
                arr.index_axis_mut(Axis(c.axis), i).fill(0.0);
            }
        }
        net.weights.insert(c.weight, t);
    }
    if !(o.refit || o.bn_recalibrate) || (cons.is_empty() && edit.implants.is_empty()) {
        return Ok((net.weights, report));
    }
    let n = batch_size(calib)?.min(o.max_samples.max(1));
    let mb = o.micro_batch.max(1);
    let batches: Vec<Feeds<f32>> = (0..n)
        .step_by(mb)
        .map(|s| slice_feeds(calib, s..(s + mb).min(n)))
        .collect();
    let budget = (o.max_columns / batches.len().max(1)).max(1);

    // Steps in graph order: consumers to refit, BatchNorms downstream of a change.
    let cons_at: BTreeMap<usize, &Consumer> = cons.iter().map(|c| (c.node, c)).collect();
    // BatchNorms before the first change see the dense network.
    let first = cons_at
        .keys()
        .chain(edit.implants.iter().map(|i| &i.producer))
        .min()
        .copied()
        .unwrap_or(0);
    let mut steps: Vec<(usize, Step)> = Vec::new();
    for (i, nd) in g.nodes.iter().enumerate() {
        if o.refit
            && let Some(c) = cons_at.get(&i)
        {
            steps.push((i, Step::Refit(c)));
        }
        if let Some(imp) = edit.implants.iter().find(|imp| imp.producer == i) {
            let w = nd.inputs[1].expect("producer weight");
            let gone = cons_at
                .get(&i)
                .map(|c| c.removed.clone())
                .unwrap_or_default();
            steps.push((i, Step::Implant(imp, w, gone)));
        } else if o.bn_recalibrate && i > first && matches!(nd.op, Ok(Op::BatchNorm { .. })) {
            steps.push((i, Step::Bn(i)));
        }
    }
    // One dense pass: every step's dense side.
    let mut layers: HashMap<usize, Layer> = cons
        .iter()
        .map(|c| (c.node, Layer::of(g, c.node, c.weight)))
        .collect();
    for imp in &edit.implants {
        let w = g.nodes[imp.producer].inputs[1].expect("producer weight");
        layers
            .entry(imp.producer)
            .or_insert_with(|| Layer::of(g, imp.producer, w));
    }
    let mut dense_side: Vec<DenseSide> = steps
        .iter()
        .map(|(_, s)| match s {
            Step::Refit(_) | Step::Implant(..) => DenseSide::Outputs(Vec::new()),
            Step::Bn(_) => DenseSide::Moments(Vec::new(), Vec::new()),
        })
        .collect();
    // The inference plan (BatchNorm folded, fused activations) on the sub-graph that ends at
    // the steps' inputs: only those values are kept.
    let inputs: Vec<ValueId> = steps
        .iter()
        .map(|(node, _)| g.nodes[*node].inputs[0].expect("input"))
        .collect();
    let mut uniq = inputs.clone();
    uniq.sort_unstable();
    uniq.dedup();
    let dense_graph = g.subgraph(&[], &uniq)?;
    let dense = Engine::<f32>::new(&dense_graph)?;
    let mut bn_parts: Vec<Vec<Sums>> = vec![Vec::new(); steps.len()];
    for f in &batches {
        let outs = dense.run(f.clone())?;
        for (k, (_, s)) in steps.iter().enumerate() {
            let at = uniq.binary_search(&inputs[k]).expect("listed");
            let xv = outs[at]
                .as_float()
                .ok_or_else(|| {
                    Error::graph(format!("value {:?}", g.name(inputs[k])), "is not float")
                })?
                .to_owned();
            match s {
                Step::Refit(_) | Step::Implant(..) => {
                    let (node, weight) = match s {
                        Step::Refit(c) => (c.node, c.weight),
                        Step::Implant(imp, w, _) => (imp.producer, *w),
                        Step::Bn(_) => unreachable!("matched above"),
                    };
                    let l = &layers[&node];
                    let (cols, _, rows) = columns(&l.op, &xv, &l.w_shape, budget)?;
                    let w = l.rows(&g.weights[&weight].tensor);
                    let b = bias_values(g, node, l.cout);
                    let mut y = matmul_t(&cols, rows, l.kfull, &w, l.cout);
                    for row in y.chunks_mut(l.cout) {
                        for (v, bo) in row.iter_mut().zip(&b) {
                            *v += bo;
                        }
                    }
                    if let DenseSide::Outputs(v) = &mut dense_side[k] {
                        v.push(y.into_iter().map(|v| v as f32).collect());
                    }
                }
                Step::Bn(_) => bn_parts[k].push(stats_of(&xv)),
            }
        }
    }
    for (k, parts) in bn_parts.into_iter().enumerate() {
        if let DenseSide::Moments(m, v) = &mut dense_side[k] {
            (*m, *v) = moments(parts.into_iter());
        }
    }
    // The sequential pass: each step sees the network as the previous steps left it.
    for (k, (node, s)) in steps.iter().enumerate() {
        let x = g.nodes[*node].inputs[0].expect("input");
        let prefix = net.apply_to(g.subgraph(&[], &[x])?);
        let e = Engine::<f32>::new(&prefix)?;
        match (s, &dense_side[k]) {
            (Step::Refit(c), DenseSide::Outputs(ys)) => {
                let row = refit_layer(
                    g,
                    &e,
                    &batches,
                    ys,
                    c,
                    &layers[&c.node],
                    &mut net,
                    o,
                    budget,
                )?;
                report.columns += row.columns;
                report.refits.push(row);
            }
            (Step::Implant(imp, w, gone), DenseSide::Outputs(ys)) => {
                // A rank-r factor for linear producers, a 1×1 conv for k×k ones.
                let fit = if imp.rank.is_some() {
                    super::implant_linear::fit
                } else {
                    fit_implant
                };
                let row = fit(
                    g,
                    &e,
                    &batches,
                    ys,
                    imp,
                    *w,
                    gone,
                    &layers[&imp.producer],
                    &mut net,
                    o,
                    budget,
                )?;
                report.implants.push(row);
            }
            (Step::Bn(bn), DenseSide::Moments(md, vd)) => {
                let mut parts = Vec::new();
                for f in &batches {
                    parts.push(stats_of(
                        &e.run(f.clone())?
                            .remove(0)
                            .as_float()
                            .expect("float")
                            .to_owned(),
                    ));
                }
                let (mp, vp) = moments(parts.into_iter());
                recalibrate_bn(g, *bn, md, vd, &mp, &vp, &mut net);
                report.batchnorms_recalibrated += 1;
            }
            _ => unreachable!("steps and their dense sides align"),
        }
        progress(k + 1, steps.len());
    }
    // SNOWS as a second sweep, through the BatchNorms as re-estimated: fitting through
    // statistics that a later re-estimation replaces undid its gains (MobileNet fixture).
    if let Some(so) = &o.snows
        && o.refit
    {
        // Fit on the first three quarters, check on the last (with fewer than 4 samples there
        // is nothing to hold out and the fit loss decides).
        let held = if n >= 4 { n / 4 } else { 0 };
        let fit = slice_feeds(calib, 0..n - held);
        let mut check = None;
        if held > 0 {
            let feeds = slice_feeds(calib, n - held..n);
            let dense = Engine::<f32>::new(g)?.run(feeds.clone())?;
            let mut h = HeldOut {
                feeds,
                dense,
                error_now: 0.0,
            };
            h.error_now = output_error(g, &net, &h)?;
            check = Some(h);
        }
        let mut sorted: Vec<&Consumer> = cons.iter().collect();
        sorted.sort_by_key(|c| c.node);
        for (k, c) in sorted.iter().enumerate() {
            let row = snows_refit(g, c, &mut net, &fit, check.as_mut(), so)?;
            report.snows.push(row);
            progress(steps.len() + k + 1, steps.len() + sorted.len());
        }
    }
    Ok((net.weights, report))
}

/// The held-out samples of the SNOWS sweep: inputs, the dense outputs, and the network's
/// current squared distance to them (updated as steps are kept).
pub(crate) struct HeldOut {
    pub(crate) feeds: Feeds<f32>,
    pub(crate) dense: Vec<Tensor<f32>>,
    pub(crate) error_now: f64,
}

/// Squared distance of the network's outputs on the held-out samples to the dense ones
/// (float outputs).
pub(crate) fn output_error(g: &Graph, net: &Network, h: &HeldOut) -> Result<f64> {
    let ys = Engine::<f32>::new(&net.apply_to(g.clone()))?.run(h.feeds.clone())?;
    Ok(ys
        .iter()
        .zip(&h.dense)
        .filter_map(|(y, d)| Some(squared_distance(y.as_float()?, d.as_float()?)))
        .sum())
}

/// Σ (y − d)² over two f32 arrays of one shape, in f64.
pub(crate) fn squared_distance(y: &crate::tensor::Arr<f32>, d: &crate::tensor::Arr<f32>) -> f64 {
    y.iter().zip(d).map(|(a, b)| ((a - b) as f64).powi(2)).sum()
}

/// SNOWS on a consumer, from its least-squares weights with the removed inputs held at zero
/// (`guarded_snows`).
fn snows_refit(
    g: &Graph,
    c: &Consumer,
    net: &mut Network,
    fit: &Feeds<f32>,
    check: Option<&mut HeldOut>,
    so: &crate::sparse::snows::SnowsOptions,
) -> Result<SnowsRefitRow> {
    let start = net.get(c.weight);
    let start = start.as_float().expect("float weight").to_owned();
    let mut keep = ArrayD::<f32>::ones(start.raw_dim());
    for &i in &c.removed {
        keep.index_axis_mut(Axis(c.axis), i).fill(0.0);
    }
    let (row, kept) = guarded_snows(g, net, c.node, c.weight, &start, &keep, fit, check, so)?;
    let (heldout_before, heldout_after) = row.heldout.unwrap_or((row.loss_before, row.loss_after));
    Ok(SnowsRefitRow {
        layer: g.nodes[c.node].name.clone(),
        horizon: row.horizon,
        loss_before: row.loss_before,
        loss_after: row.loss_after,
        heldout_before,
        heldout_after,
        kept,
        newton_steps: row.newton_steps,
        cg_iterations: row.cg_iterations,
    })
}

/// One guarded SNOWS refit of `weight` (`--refit snows` and `--method snows`): Newton-CG from
/// `start` under `keep`, fit on `fit`; kept only when, on the held-out samples, the horizon
/// loss drops and, where their dense outputs are known, so does the network outputs' distance
/// to them (a horizon can improve while the outputs get worse; `check.error_now` carries that
/// distance from step to step). Without held-out samples the fit loss decides. `net` is left
/// with the new weights or as it was; the row gets `heldout`, `output_error` and, with
/// held-out samples, `kept`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn guarded_snows(
    g: &Graph,
    net: &mut Network,
    node: usize,
    weight: ValueId,
    start: &ArrayD<f32>,
    keep: &ArrayD<f32>,
    fit: &Feeds<f32>,
    mut check: Option<&mut HeldOut>,
    so: &crate::sparse::snows::SnowsOptions,
) -> Result<(crate::sparse::snows::SnowsRow, bool)> {
    use crate::sparse::snows;
    let current = net.apply_to(g.clone());
    let (w, mut row) = snows::refit(g, &current, node, weight, start, keep, fit, so)?;
    let mut kept = row.newton_steps > 0;
    match check.as_deref() {
        Some(h) if kept => {
            let (before, after) = snows::losses(g, &current, node, weight, &w, &h.feeds, so)?;
            row.heldout = Some((before, after));
            kept = after < before;
        }
        _ => kept &= row.loss_after < row.loss_before,
    }
    if kept {
        let dtype = g.weights[&weight].tensor.dtype;
        let old = net.weights.insert(weight, Tensor::float(dtype, w));
        if let Some(h) = check.as_deref_mut().filter(|h| !h.dense.is_empty()) {
            let after = output_error(g, net, h)?;
            row.output_error = Some((h.error_now, after));
            if after < h.error_now {
                h.error_now = after;
            } else {
                kept = false;
                match old {
                    Some(t) => net.weights.insert(weight, t),
                    None => net.weights.remove(&weight),
                };
            }
        }
    }
    row.kept = check.is_some().then_some(kept);
    Ok((row, kept))
}

/// The dense bias a layer adds (zeros if none).
pub(crate) fn bias_values(g: &Graph, node: usize, cout: usize) -> Vec<f64> {
    match bias_of(g, node, cout) {
        Bias::Own(b) | Bias::AddAfter(b) => g.weights[&b].tensor.to_f64_vec(),
        _ => vec![0.0; cout],
    }
}

#[allow(clippy::too_many_arguments)]
fn refit_layer(
    g: &Graph,
    current: &Engine<f32>,
    batches: &[Feeds<f32>],
    dense_y: &[Vec<f32>],
    c: &Consumer,
    l: &Layer,
    net: &mut Network,
    o: &CompensateOptions,
    budget: usize,
) -> Result<RefitRow> {
    let nd = &g.nodes[c.node];
    let (cout, kfull, taps) = (l.cout, l.kfull, l.taps);
    let cin = kfull / taps;
    let kept_in: Vec<usize> = (0..cin).filter(|i| !c.removed.contains(i)).collect();
    let kept_cols: Vec<usize> = kept_in
        .iter()
        .flat_map(|&i| (0..taps).map(move |t| i * taps + t))
        .collect();
    let bias = bias_of(g, c.node, cout);
    let use_bias = !matches!(bias, Bias::None);
    let k = kept_cols.len() + usize::from(use_bias);
    let dense_bias = bias_values(g, c.node, cout);
    let wcur = l.rows(&net.get(c.weight));
    let mut gram = vec![0.0f64; k * k];
    let mut cross = vec![0.0f64; cout * k];
    // The held-out quarter's share of the statistics (for the damping choice), allocated only
    // when some micro-batch has a held-out quarter.
    let (mut gram_v, mut cross_v, mut ynorm_v) = (Vec::new(), Vec::new(), 0.0);
    let (mut err0, mut norm) = (0.0f64, 0.0f64);
    let (mut samples, mut most_per_batch) = (0usize, 0usize);
    for (bi, (f, ys)) in batches.iter().zip(dense_y).enumerate() {
        let xv = current
            .run(f.clone())?
            .remove(0)
            .as_float()
            .expect("float")
            .to_owned();
        let (cp, _, np) = columns(&l.op, &xv, &l.w_shape, budget)?;
        samples += np;
        most_per_batch = most_per_batch.max(np);
        let mut xk = vec![0.0f64; np * k];
        for r in 0..np {
            for (j, &col) in kept_cols.iter().enumerate() {
                xk[r * k + j] = cp[r * kfull + col];
            }
            if use_bias {
                xk[r * k + k - 1] = 1.0;
            }
        }
        let y: Vec<f64> = ys.iter().map(|&v| v as f64).collect();
        let yp = matmul_t(&cp, np, kfull, &wcur, cout);
        for (r, (yr, pr)) in y.chunks(cout).zip(yp.chunks(cout)).enumerate() {
            let _ = r;
            for ((a, b), bo) in yr.iter().zip(pr).zip(&dense_bias) {
                err0 += (a - b - bo).powi(2);
                norm += a * a;
            }
        }
        // C += Yᵀ·X, G += Xᵀ·X; the last quarter of the rows also into the held-out share.
        let accumulate =
            |y: &[f64], xk: &[f64], rows: usize, cross: &mut [f64], gram: &mut [f64]| {
                if rows > 0 {
                    use crate::tensor::{MatRef, Real};
                    <f64 as Real>::gemm(
                        cout,
                        k,
                        rows,
                        MatRef::row_major(y, cout, true),
                        MatRef::row_major(xk, k, false),
                        cross,
                        k,
                        true,
                        1.0,
                        true,
                    );
                }
                f64::gemm_xtx(xk, rows, k, gram);
            };
        accumulate(&y, &xk, np, &mut cross, &mut gram);
        // The last quarter of each micro-batch; micro-batches of under 4 columns (a Gemm on a
        // model with a fixed batch of 1) are held out whole, every fourth one.
        let held = match np {
            0..4 if bi % 4 == 3 => np,
            0..4 => 0,
            _ => np / 4,
        };
        let from = np - held;
        if held > 0 && gram_v.is_empty() {
            gram_v = vec![0.0f64; k * k];
            cross_v = vec![0.0f64; cout * k];
        }
        accumulate(
            &y[from * cout..],
            &xk[from * k..],
            held,
            &mut cross_v,
            &mut gram_v,
        );
        ynorm_v += y[from * cout..].iter().map(|v| v * v).sum::<f64>();
    }
    let mut dead = 0;
    for i in 0..k {
        if gram[i * k + i] == 0.0 {
            gram[i * k + i] = 1.0;
            dead += 1;
        }
    }
    // The damping, fitted on three quarters and scored on the held-out quarter; the pruned
    // weights (kept columns and current bias) are the baseline to beat.
    let damp;
    let bias_now: Vec<f64> = match &bias {
        Bias::Own(b) | Bias::AddAfter(b) => net.get(*b).to_f64_vec(),
        _ => vec![0.0; cout],
    };
    let mut w0 = vec![0.0f64; cout * k];
    for o_ in 0..cout {
        for (j, &col) in kept_cols.iter().enumerate() {
            w0[o_ * k + j] = wcur[o_ * kfull + col];
        }
        if use_bias {
            w0[o_ * k + k - 1] = bias_now[o_];
        }
    }
    let kept_as_is = |reason: String| {
        let before = (err0 / norm.max(1e-30)).sqrt();
        RefitRow {
            layer: crate::analysis::groups::node_name(g, c.node),
            kind: nd.op_type.clone(),
            inputs_kept: kept_in.len(),
            inputs: cin,
            error_before: before,
            error_after: before,
            damping: 0.0,
            retries: 0,
            dead_inputs: dead,
            bias: "kept".into(),
            columns: samples,
            skipped: Some(reason),
        }
    };
    // A refit that cannot be checked on held-out columns is not applied: with one calibration
    // sample a Gemm has one column for thousands of inputs, and the fit only memorises it
    // (VGG-19 fc6: 1 column, 21560 inputs, minutes of Cholesky).
    if !gram_v.iter().any(|v| *v != 0.0) {
        return Ok(kept_as_is(format!(
            "no held-out calibration columns to check a refit on ({samples} columns, at most {most_per_batch} per micro-batch; the last quarter of each is held out, or every fourth micro-batch of under 4): more --calib samples would help"
        )));
    }
    {
        // G minus the held-out share, in place (the Gram can be gigabytes: VGG-19's fc6 is
        // 21561² doubles), restored before the final solve.
        for (a, b) in gram.iter_mut().zip(&gram_v) {
            *a -= b;
        }
        let cross_t: Vec<f64> = cross.iter().zip(&cross_v).map(|(a, b)| a - b).collect();
        let base = quadratic_error(&w0, &gram_v, &cross_v, ynorm_v, k);
        let mut best: Option<(f64, f64)> = None;
        for j in 0..DAMPING_STEPS {
            let d = o.damp.max(1e-8) * 10f64.powi(j);
            let (w, _, _) = solve_toward(&gram, &cross_t, &w0, k, cout, d)?;
            let e = quadratic_error(&w, &gram_v, &cross_v, ynorm_v, k);
            if best.is_none_or(|(be, _)| e < be) {
                best = Some((e, d));
            }
        }
        for (a, b) in gram.iter_mut().zip(&gram_v) {
            *a += b;
        }
        let (e, d) = best.expect("at least one damping");
        if e >= base {
            return Ok(kept_as_is(format!(
                "no damping made the refit better than the pruned weights on held-out calibration columns ({:.3} vs {:.3} relative error; {samples} columns for {} inputs): more --calib samples would help",
                (e.max(0.0) / ynorm_v.max(1e-30)).sqrt(),
                (base.max(0.0) / ynorm_v.max(1e-30)).sqrt(),
                k - dead
            )));
        }
        damp = d;
    }
    drop((gram_v, cross_v));
    let (sol, lambda, retries) = solve_toward(&gram, &cross, &w0, k, cout, damp)?;
    // Error after, on the undamped G.
    let err1 = quadratic_error(&sol, &gram, &cross, norm, k);
    // Write back at the original shape: kept columns refit, removed ones zero.
    let mut new_mat = vec![0.0f64; cout * kfull];
    for o_ in 0..cout {
        for (j, &col) in kept_cols.iter().enumerate() {
            new_mat[o_ * kfull + col] = sol[o_ * k + j];
        }
    }
    let new_w = match &l.op {
        Op::Conv { .. } | Op::Gemm { trans_b: true, .. } => {
            ArrayD::from_shape_vec(IxDyn(&l.w_shape), new_mat).expect("sized")
        }
        _ => ArrayD::from_shape_vec(IxDyn(&[cout, kfull]), new_mat)
            .expect("sized")
            .t()
            .as_standard_layout()
            .into_owned(),
    };
    let dtype = g.weights[&c.weight].tensor.dtype;
    net.weights
        .insert(c.weight, Tensor::float(dtype, new_w.mapv(|v| v as f32)));
    let new_bias: Vec<f64> = if use_bias {
        (0..cout).map(|o_| sol[o_ * k + k - 1]).collect()
    } else {
        Vec::new()
    };
    let bias_note = match &bias {
        Bias::Own(b) | Bias::AddAfter(b) => {
            let t = &g.weights[b].tensor;
            let v = ArrayD::from_shape_vec(
                IxDyn(t.shape()),
                new_bias.iter().map(|&v| v as f32).collect(),
            )
            .expect("sized");
            net.weights.insert(*b, Tensor::float(t.dtype, v));
            format!("refit {:?}", g.name(*b))
        }
        Bias::BnMean(m) => {
            // BN(y + δ) is BN with mean μ − δ.
            let t = net.get(*m);
            let mu = t.to_f64_vec();
            let v = ArrayD::from_shape_vec(
                IxDyn(t.shape()),
                mu.iter()
                    .zip(&new_bias)
                    .map(|(m, d)| (m - d) as f32)
                    .collect(),
            )
            .expect("sized");
            net.weights.insert(*m, Tensor::float(t.dtype, v));
            format!("shift folded into {:?}", g.name(*m))
        }
        Bias::None => "none".into(),
    };
    Ok(RefitRow {
        layer: crate::analysis::groups::node_name(g, c.node),
        kind: nd.op_type.clone(),
        inputs_kept: kept_in.len(),
        inputs: cin,
        error_before: (err0 / norm.max(1e-30)).sqrt(),
        error_after: (err1.max(0.0) / norm.max(1e-30)).sqrt(),
        damping: lambda,
        retries,
        dead_inputs: dead,
        bias: bias_note,
        columns: samples,
        skipped: None,
    })
}

/// Fits an implant: the implanted channels' dense outputs from the centre taps of the producer's
/// current input (kept input channels, plus a bias where one can go), ridge least squares; the
/// result is written as centre-tap-only rows of the producer's filter.
#[allow(clippy::too_many_arguments)]
fn fit_implant(
    g: &Graph,
    current: &Engine<f32>,
    batches: &[Feeds<f32>],
    dense_y: &[Vec<f32>],
    imp: &crate::prune::implant::Implant,
    weight: ValueId,
    gone: &BTreeSet<usize>,
    l: &Layer,
    net: &mut Network,
    o: &CompensateOptions,
    budget: usize,
) -> Result<ImplantRow> {
    let (cout, kfull, taps) = (l.cout, l.kfull, l.taps);
    let cin = kfull / taps;
    let spatial = l.w_shape.len() - 2;
    let mut center = 0;
    for d in 0..spatial {
        center += (l.w_shape[2 + d] / 2) * l.w_shape[3 + d..].iter().product::<usize>();
    }
    let kept_in: Vec<usize> = (0..cin).filter(|i| !gone.contains(i)).collect();
    let bias = bias_of(g, imp.producer, cout);
    let use_bias = !matches!(bias, Bias::None);
    let k = kept_in.len() + usize::from(use_bias);
    let s = &imp.units;
    let mut gram = vec![0.0f64; k * k];
    let mut cross = vec![0.0f64; s.len() * k];
    let mut norm = 0.0f64;
    let mut ysel_all: Vec<f64> = Vec::new();
    let mut xk_all: Vec<f64> = Vec::new();
    for (f, ys) in batches.iter().zip(dense_y) {
        let xv = current
            .run(f.clone())?
            .remove(0)
            .as_float()
            .expect("float")
            .to_owned();
        let (cp, _, np) = columns(&l.op, &xv, &l.w_shape, budget)?;
        let mut xk = vec![0.0f64; np * k];
        for r in 0..np {
            for (j, &i) in kept_in.iter().enumerate() {
                xk[r * k + j] = cp[r * kfull + i * taps + center];
            }
            if use_bias {
                xk[r * k + k - 1] = 1.0;
            }
        }
        let mut ysel = vec![0.0f64; np * s.len()];
        for r in 0..np {
            for (j, &c) in s.iter().enumerate() {
                let y = ys[r * cout + c] as f64;
                ysel[r * s.len() + j] = y;
                norm += y * y;
            }
        }
        if np > 0 {
            use crate::tensor::{MatRef, Real};
            <f64 as Real>::gemm(
                s.len(),
                k,
                np,
                MatRef::row_major(&ysel, s.len(), true),
                MatRef::row_major(&xk, k, false),
                &mut cross,
                k,
                true,
                1.0,
                true,
            );
        }
        f64::gemm_xtx(&xk, np, k, &mut gram);
        ysel_all.extend(ysel);
        xk_all.extend(xk);
    }
    for i in 0..k {
        if gram[i * k + i] == 0.0 {
            gram[i * k + i] = 1.0;
        }
    }
    let (sol, _, _) = solve_spd(&gram, k, &cross, s.len(), o.damp)?;
    // Error of the fit on the same columns.
    let rows = xk_all.len() / k.max(1);
    let pred = matmul_t(&xk_all, rows, k, &sol, s.len());
    let err: f64 = pred
        .iter()
        .zip(&ysel_all)
        .map(|(a, b)| (a - b).powi(2))
        .sum();
    // Centre-tap-only rows in the producer's filter.
    let mut wt = net.get(weight);
    if let Data::Float(arr) = &mut wt.data {
        let flat = arr.as_slice_mut().expect("standard layout weights");
        for (j, &c) in s.iter().enumerate() {
            let row = &mut flat[c * kfull..(c + 1) * kfull];
            row.fill(0.0);
            for (t, &i) in kept_in.iter().enumerate() {
                row[i * taps + center] = sol[j * k + t] as f32;
            }
        }
    }
    net.weights.insert(weight, wt);
    if use_bias {
        let target = match &bias {
            Bias::Own(b) => Some((*b, false)),
            Bias::BnMean(m) => Some((*m, true)),
            _ => None,
        };
        if let Some((id, is_mean)) = target {
            let mut t = net.get(id);
            if let Data::Float(arr) = &mut t.data {
                for (j, &c) in s.iter().enumerate() {
                    let b = sol[j * k + k - 1] as f32;
                    // BN(y + b) is BN with mean μ − b.
                    arr[[c]] = if is_mean {
                        g.weights[&id].tensor.as_float().expect("float")[[c]] - b
                    } else {
                        b
                    };
                }
            }
            net.weights.insert(id, t);
        }
    }
    Ok(ImplantRow {
        layer: crate::analysis::groups::node_name(g, imp.producer),
        kind: "1×1 conv".into(),
        channels: s.len(),
        inputs: kept_in.len(),
        params: s.len() * (kept_in.len() + usize::from(matches!(bias, Bias::Own(_)))),
        params_replaced: s.len() * (cin * taps + usize::from(matches!(bias, Bias::Own(_)))),
        error: (err / norm.max(1e-30)).sqrt(),
    })
}

/// Sets a BatchNormalization's mean and variance so that its output on the current network
/// (input moments mp, vp) has the dense network's per-channel mean and standard deviation
/// (dense input moments md, vd).
pub(crate) fn recalibrate_bn(
    g: &Graph,
    node: usize,
    md: &[f64],
    vd: &[f64],
    mp: &[f64],
    vp: &[f64],
    net: &mut Network,
) {
    let nd = &g.nodes[node];
    let Ok(Op::BatchNorm { epsilon }) = &nd.op else {
        return;
    };
    let eps = *epsilon as f64;
    let (Some(mean_id), Some(var_id)) = (
        nd.inputs.get(3).copied().flatten(),
        nd.inputs.get(4).copied().flatten(),
    ) else {
        return;
    };
    if !g.weights.contains_key(&mean_id) || !g.weights.contains_key(&var_id) {
        return;
    }
    // The target is the dense BN's output, computed with the dense statistics (a refit may have
    // shifted the current mean already; the new statistics replace it).
    let mu = g.weights[&mean_id].tensor.to_f64_vec();
    let var = g.weights[&var_id].tensor.to_f64_vec();
    let mut new_mu = net.get(mean_id).to_f64_vec();
    let mut new_var = net.get(var_id).to_f64_vec();
    for ch in 0..mu.len().min(md.len()).min(mp.len()) {
        let (sd, sp) = (vd[ch].sqrt(), vp[ch].sqrt());
        if sd < 1e-8 || sp < 1e-8 {
            continue;
        }
        let sigma = (var[ch] + eps).sqrt();
        let sigma_new = sigma * sp / sd;
        new_mu[ch] = mp[ch] - sigma_new * (md[ch] - mu[ch]) / sigma;
        new_var[ch] = (sigma_new * sigma_new - eps).max(0.0);
    }
    for (id, vals) in [(mean_id, new_mu), (var_id, new_var)] {
        let t = &g.weights[&id].tensor;
        let v = ArrayD::from_shape_vec(IxDyn(t.shape()), vals.iter().map(|&v| v as f32).collect())
            .expect("sized");
        net.weights.insert(id, Tensor::float(t.dtype, v));
    }
}

/// X (rows × k, row-major) · Wᵀ with W (n × k, row-major): rows × n.
pub(crate) fn matmul_t(x: &[f64], rows: usize, k: usize, w: &[f64], n: usize) -> Vec<f64> {
    use crate::tensor::{MatRef, Real};
    let mut out = vec![0.0f64; rows * n];
    if rows > 0 && n > 0 && k > 0 {
        <f64 as Real>::gemm(
            rows,
            n,
            k,
            MatRef::row_major(x, k, false),
            MatRef::row_major(w, k, true),
            &mut out,
            n,
            false,
            1.0,
            true,
        );
    }
    out
}

/// XᵀX accumulation for the Gram matrix (row-major X: rows × k).
pub(crate) trait Xtx {
    fn gemm_xtx(x: &[f64], rows: usize, k: usize, gram: &mut [f64]);
}

impl Xtx for f64 {
    fn gemm_xtx(x: &[f64], rows: usize, k: usize, gram: &mut [f64]) {
        use crate::tensor::{MatRef, Real};
        if rows == 0 {
            return;
        }
        <f64 as Real>::gemm(
            k,
            k,
            rows,
            MatRef::row_major(x, k, true),
            MatRef::row_major(x, k, false),
            gram,
            k,
            true,
            1.0,
            true,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{quadratic_error, stats_of};
    use ndarray::{ArrayD, Axis, IxDyn};

    /// Per-channel sums equal a walk along each channel's lane, bit for bit, for NCHW, 2-D
    /// and non-standard (transposed) layouts.
    #[test]
    fn channel_statistics_equal_the_lane_sums() {
        let lane_sums = |a: &ArrayD<f32>| {
            let mut out = (Vec::new(), Vec::new());
            for lane in a.axis_iter(Axis(1)) {
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for &v in lane.iter() {
                    s += v as f64;
                    s2 += v as f64 * v as f64;
                }
                out.0.push(s);
                out.1.push(s2);
            }
            out
        };
        let filled = |shape: &[usize]| {
            let n: usize = shape.iter().product();
            ArrayD::from_shape_vec(
                IxDyn(shape),
                (0..n).map(|i| ((i as f32) * 0.37).sin() * 10.0).collect(),
            )
            .unwrap()
        };
        let mut transposed = filled(&[3, 5, 4, 2]);
        transposed.swap_axes(2, 3);
        for a in [filled(&[3, 5, 4, 2]), filled(&[7, 6]), transposed] {
            let (s, s2, n) = stats_of(&a);
            let (t, t2) = lane_sums(&a);
            assert_eq!((s, s2), (t, t2), "{:?}", a.shape());
            assert_eq!(n, (a.len() / a.shape()[1]) as f64);
        }
    }

    /// ‖Y − W·X‖² computed directly equals the statistics form ‖Y‖² − 2⟨W, C⟩ + tr(W G Wᵀ).
    #[test]
    fn quadratic_error_equals_the_direct_squared_error() {
        let (rows, k, n) = (5, 7, 11);
        let val = |i: usize, s: f64| ((i as f64 * s).sin() * 3.0).round() / 2.0;
        let w: Vec<f64> = (0..rows * k).map(|i| val(i, 0.7)).collect();
        let x: Vec<f64> = (0..n * k).map(|i| val(i, 1.3)).collect();
        let y: Vec<f64> = (0..n * rows).map(|i| val(i, 0.37)).collect();
        let (mut gram, mut cross, mut direct) = (vec![0.0; k * k], vec![0.0; rows * k], 0.0);
        for s in 0..n {
            let xs = &x[s * k..(s + 1) * k];
            for i in 0..k {
                for j in 0..k {
                    gram[i * k + j] += xs[i] * xs[j];
                }
            }
            for r in 0..rows {
                let pred: f64 = (0..k).map(|i| w[r * k + i] * xs[i]).sum();
                direct += (y[s * rows + r] - pred).powi(2);
                for i in 0..k {
                    cross[r * k + i] += y[s * rows + r] * xs[i];
                }
            }
        }
        let ynorm: f64 = y.iter().map(|v| v * v).sum();
        let e = quadratic_error(&w, &gram, &cross, ynorm, k);
        assert!(
            (e - direct).abs() <= 1e-9 * direct.max(1.0),
            "{e} vs {direct}"
        );
    }
}
