//! `--allocation sensitivity`: how much of the sparsity target each layer takes, from measured
//! effects. Each layer is pruned alone (with the run's mask and update, from the dense network's
//! inputs) at a grid of sparsities, and the squared distance of the network's outputs to the
//! dense ones on calibration samples is recorded; a knapsack over the grid then picks the
//! per-layer sparsities with the least summed distance that reach the requested total
//! (OBC's and SPDY's layer-wise profiles, scored at the output). On the MobileNet fixture at
//! 70 % the same sparsity in every layer leaves 3 of 9 taps in each depthwise kernel and loses
//! 22 points with the OBS update, while its squeeze-excitation layers barely matter.

use super::layerwise::LayerInput;
use super::mask::{self, Pattern};
use super::woodfisher::{FisherOptions, LayerGradients};
use super::{
    Method, Update, adaptive_mask, column_order, frontier, gather_parts, micro_batches, update_rows,
};
use crate::autodiff::curvature::{batch_size, slice_feeds};
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, Op, ValueId};
use crate::prune::compensate::{
    Layer, Network, moments, recalibrate_bn, squared_distance, stats_of,
};
use crate::tensor::Tensor;
use serde::Serialize;
use std::collections::HashMap;

/// The sparsities every layer is measured at (0 costs nothing and is not run).
const GRID: [f64; 10] = [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98];

/// Buckets of the knapsack over pruned counts: a total of AlexNet's 58 M weights is resolved
/// to 1/8192 of itself, and the remainder placed exactly afterwards.
const BUCKETS: usize = 8192;

/// What the profile needs from the run.
pub(crate) struct Probe<'a> {
    pub g: &'a Graph,
    pub targets: &'a [super::layers::Target],
    /// Per-layer saliencies (rows layout) of a mask chosen before the pass; `None`: the OBS
    /// mask, chosen by the layer's own OBS pass at each level.
    pub saliencies: Option<&'a [Vec<f64>]>,
    pub pattern: Pattern,
    pub method: Method,
    pub grads: Option<&'a [LayerGradients]>,
    pub fisher: &'a FisherOptions,
    pub damp: f64,
    pub max_layer: f64,
    pub calib: &'a Feeds<f32>,
    /// Calibration samples the outputs are compared on.
    pub samples: usize,
    pub micro_batch: usize,
    pub max_columns: usize,
    /// Re-estimate the BatchNorms after the layer, as the pass does after its last layer.
    pub bn_recalibrate: bool,
}

/// One layer's profile, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SensitivityRow {
    pub layer: String,
    pub params: usize,
    pub levels: Vec<f64>,
    /// ‖y − y_dense‖² / ‖y_dense‖² over the compared samples with only this layer pruned at
    /// each level.
    pub errors: Vec<f64>,
    /// The sparsity the knapsack gave it.
    pub chosen: f64,
}

/// The grid capped at `max_layer`, with the target itself and the cap as levels.
pub fn levels(target: f64, max_layer: f64) -> Vec<f64> {
    let mut v: Vec<f64> = GRID
        .iter()
        .copied()
        .chain([target, max_layer])
        .filter(|&s| (0.0..=max_layer).contains(&s))
        .collect();
    v.sort_by(f64::total_cmp);
    v.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    v
}

/// Measures every layer at `levels(target, max_layer)` and splits the target: (per-layer pruned
/// counts summing to round(target · Σ params), the profile).
pub(crate) fn allocate(
    p: &Probe,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(Vec<usize>, Vec<SensitivityRow>)> {
    let Pattern::Sparsity(target) = p.pattern else {
        return Err(Error::Usage(
            "--allocation sensitivity splits an --unstructured target; N:M fixes every layer's density".into(),
        ));
    };
    if target > p.max_layer {
        return Err(Error::Usage(format!(
            "--unstructured {target} is above --max-layer-sparsity {}: no split reaches it",
            p.max_layer
        )));
    }
    let grid = levels(target, p.max_layer);
    let n = batch_size(p.calib)?.min(p.samples.max(1));
    let feeds = slice_feeds(p.calib, 0..n);
    let (batches, budget) = micro_batches(&feeds, n, p.micro_batch, p.max_columns);
    let dense_net = Network::dense(p.g);
    let bns = if p.bn_recalibrate {
        batchnorms(p.g)
    } else {
        Vec::new()
    };
    // One dense pass: the BatchNorms' input moments and the outputs, per micro-batch.
    let mut whole = frontier::Frontier::new(p.g, &batches);
    let mut dense_moments = Vec::with_capacity(bns.len());
    for &(i, x) in &bns {
        whole.advance(&dense_net, i)?;
        dense_moments.push(batch_moments(p.g, &whole, i, x)?);
    }
    whole.advance(&dense_net, p.g.nodes.len())?;
    let dense: Vec<Vec<Option<Tensor<f32>>>> = (0..whole.batches())
        .map(|b| {
            p.g.outputs
                .iter()
                .map(|&o| whole.get(b, o).cloned())
                .collect()
        })
        .collect();
    drop(whole);
    let energy: f64 = dense
        .iter()
        .flatten()
        .filter_map(|y| y.as_ref()?.as_float())
        .map(|y| y.iter().map(|v| (*v as f64).powi(2)).sum::<f64>())
        .sum::<f64>()
        .max(1e-30);
    let after = After {
        bns: &bns,
        moments: &dense_moments,
        dense: &dense,
    };
    let mut front = Some(frontier::Frontier::new(p.g, &batches));
    let steps = p.targets.len() * (grid.len() - 1);
    let mut rows = Vec::with_capacity(p.targets.len());
    let mut counts = Vec::with_capacity(p.targets.len());
    for (li, t) in p.targets.iter().enumerate() {
        let layer = Layer::of(p.g, t.node, t.weight);
        let w_dense = layer.rows(&p.g.weights[&t.weight].tensor);
        let x = p.g.nodes[t.node].inputs[0]
            .ok_or_else(|| Error::graph(p.g.nodes[t.node].label(), "has no input"))?;
        let parts = match front.as_mut() {
            Some(f) => {
                f.advance(&dense_net, t.node)?;
                let at = f.input(x);
                let parts = gather_parts(t, &layer, &w_dense, &at, &at, &batches, budget)?;
                if f.bytes() > frontier::MAX_LIVE_BYTES {
                    front = None;
                }
                parts
            }
            None => {
                let prefix = p.g.subgraph(&[], &[x])?;
                let e = Engine::<f32>::new(&prefix)?;
                let e: &dyn LayerInput = &e;
                gather_parts(t, &layer, &w_dense, e, e, &batches, budget)?
            }
        };
        let (order, nm_start) = column_order(p.pattern, t);
        let params = t.rows * t.cols;
        let shape = p.g.weights[&t.weight].tensor.shape().to_vec();
        let mut errors = Vec::with_capacity(grid.len());
        let mut paths = Vec::new();
        let mut layer_counts = Vec::with_capacity(grid.len());
        for (j, &s) in grid.iter().enumerate() {
            let c = mask::count(params, s);
            layer_counts.push(c);
            if c == 0 {
                errors.push(0.0);
                continue;
            }
            progress("sensitivity", li * (grid.len() - 1) + j - 1, steps.max(1));
            let keep = match p.saliencies {
                Some(sal) => mask::prune_lowest(&sal[li], c),
                None => {
                    let sp = Pattern::Sparsity(c as f64 / params.max(1) as f64);
                    adaptive_mask(&parts, sp, &order, &nm_start, p.damp, &mut paths)?.0
                }
            };
            let (new_rows, _, _) = update_rows(&Update {
                method: p.method,
                parts: &parts,
                keep: &keep,
                w_dense: &w_dense,
                order: &order,
                nm_start: &nm_start,
                damp: p.damp,
                grads: p.grads.map(|g| &g[li]),
                fisher: p.fisher,
                layer: &t.name,
            })?;
            let arr = super::saliency::from_rows(t, &shape, &new_rows);
            let mut net = Network {
                g: p.g,
                weights: HashMap::from([(
                    t.weight,
                    Tensor::float(p.g.weights[&t.weight].tensor.dtype, arr),
                )]),
            };
            let start = match front.as_ref() {
                Some(f) => f.clone(),
                None => frontier::Frontier::new(p.g, &batches),
            };
            errors.push(after.error(&mut net, start, t.node)? / energy);
        }
        counts.push(layer_counts);
        rows.push(SensitivityRow {
            layer: t.name.clone(),
            params,
            levels: grid.clone(),
            errors,
            chosen: 0.0,
        });
    }
    progress("sensitivity", steps, steps.max(1));
    let total: usize = p.targets.iter().map(|t| t.rows * t.cols).sum();
    let costs: Vec<Vec<f64>> = rows.iter().map(|r| r.errors.clone()).collect();
    let split = solve(&counts, &costs, mask::count(total, target));
    for (r, &c) in rows.iter_mut().zip(&split) {
        r.chosen = c as f64 / r.params.max(1) as f64;
    }
    Ok((split, rows))
}

/// The BatchNormalizations whose statistics the pass re-estimates: (node, input).
fn batchnorms(g: &Graph) -> Vec<(usize, ValueId)> {
    g.nodes
        .iter()
        .enumerate()
        .filter(|(_, nd)| matches!(nd.op, Ok(Op::BatchNorm { .. })))
        .filter_map(|(i, nd)| {
            let x = nd.inputs.first().copied().flatten()?;
            let stats = [3, 4].map(|k| nd.inputs.get(k).copied().flatten());
            (!g.weights.contains_key(&x)
                && stats
                    .iter()
                    .all(|s| s.is_some_and(|s| g.weights.contains_key(&s))))
            .then_some((i, x))
        })
        .collect()
}

/// Per-channel mean and variance of value `x` over the frontier's micro-batches.
fn batch_moments(
    g: &Graph,
    f: &frontier::Frontier,
    node: usize,
    x: ValueId,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut parts = Vec::with_capacity(f.batches());
    for b in 0..f.batches() {
        let y = f
            .get(b, x)
            .and_then(|t| t.as_float())
            .filter(|y| y.ndim() >= 2)
            .ok_or_else(|| {
                Error::graph(
                    g.nodes[node].label(),
                    "input is not a float tensor with a channel axis",
                )
            })?;
        parts.push(stats_of(&y.to_owned()));
    }
    Ok(moments(parts.into_iter()))
}

/// The network after one layer's change, measured as the pass would leave it.
struct After<'a> {
    bns: &'a [(usize, ValueId)],
    /// The dense network's input moments of each of `bns`.
    moments: &'a [(Vec<f64>, Vec<f64>)],
    /// The dense outputs per micro-batch.
    dense: &'a [Vec<Option<Tensor<f32>>>],
}

impl After<'_> {
    /// Squared distance of the outputs to the dense ones, running `net` on from `f` (the
    /// dense activations before node `changed`, or the inputs) with every BatchNorm after
    /// the change re-estimated on the way, as the pass does once all layers are pruned: a
    /// layer whose output scale moves looks as costly as its error is without this, though
    /// the next BatchNorm would take the shift out.
    fn error(&self, net: &mut Network, mut f: frontier::Frontier, changed: usize) -> Result<f64> {
        let g = net.g;
        for (&(i, x), (md, vd)) in self.bns.iter().zip(self.moments) {
            if i <= changed {
                continue;
            }
            f.advance(net, i)?;
            let (mp, vp) = batch_moments(g, &f, i, x)?;
            recalibrate_bn(g, i, md, vd, &mp, &vp, net);
        }
        f.advance(net, g.nodes.len())?;
        let mut sum = 0.0;
        for (b, dense) in self.dense.iter().enumerate() {
            for (&o, d) in g.outputs.iter().zip(dense) {
                let (Some(y), Some(d)) = (
                    f.get(b, o).and_then(|t| t.as_float()),
                    d.as_ref().and_then(|t| t.as_float()),
                ) else {
                    continue;
                };
                sum += squared_distance(y, d);
            }
        }
        Ok(sum)
    }
}

/// Per-layer pruned counts that sum to exactly `goal` (at most the last level's count of each
/// layer): the knapsack's choice of one level per layer with the least summed cost and a
/// total ≥ `goal`, then the surplus (or, after bucketing, a shortfall) moved along the cost
/// curves, linear between levels, where it costs the least. `counts[l]` ascends from 0.
pub fn solve(counts: &[Vec<usize>], cost: &[Vec<f64>], goal: usize) -> Vec<usize> {
    let most: usize = counts.iter().map(|c| c.last().copied().unwrap_or(0)).sum();
    let unit = most.div_ceil(BUCKETS).max(1);
    let levels = choose(counts, cost, goal, unit);
    let mut at: Vec<usize> = levels.iter().zip(counts).map(|(&j, c)| c[j]).collect();
    let goal = goal.min(most);
    // The cost slope of the segment of layer l just below (down) or above (up) a count.
    let segment = |l: usize, n: usize, down: bool| -> Option<(usize, usize, f64)> {
        let c = &counts[l];
        let j = if down {
            c.iter().rposition(|&x| x < n)?
        } else {
            c.iter().position(|&x| x > n)?.checked_sub(1)?
        };
        let (lo, hi) = (c[j], c[j + 1]);
        let slope = (cost[l][j + 1] - cost[l][j]) / (hi - lo).max(1) as f64;
        Some((lo, hi, slope))
    };
    loop {
        let sum: usize = at.iter().sum();
        if sum == goal {
            break;
        }
        let down = sum > goal;
        // Down: give back where the last weights cost the most; up: take where the next cost
        // the least. Ties to the lower layer index, so the split is deterministic.
        let pick = (0..at.len())
            .filter_map(|l| segment(l, at[l], down).map(|s| (l, s)))
            .min_by(|(la, a), (lb, b)| {
                let (x, y) = if down { (b.2, a.2) } else { (a.2, b.2) };
                x.total_cmp(&y).then(la.cmp(lb))
            });
        let Some((l, (lo, hi, _))) = pick else { break };
        if down {
            at[l] -= (sum - goal).min(at[l] - lo);
        } else {
            at[l] += (goal - sum).min(hi - at[l]);
        }
    }
    at
}

/// One level per layer: the least summed cost whose pruned total reaches `goal` (dynamic
/// programming over totals in buckets of `unit`; within a bucket the cheaper partial choice
/// wins, ties to the larger total). Falls back to the largest total when bucketing lost every
/// choice that reaches `goal`.
fn choose(counts: &[Vec<usize>], cost: &[Vec<f64>], goal: usize, unit: usize) -> Vec<usize> {
    let most: usize = counts.iter().map(|c| c.last().copied().unwrap_or(0)).sum();
    let buckets = most / unit + 1;
    // best[b] = (cost, exact total) of the best partial choice landing in bucket b.
    let mut best: Vec<Option<(f64, usize)>> = vec![None; buckets];
    best[0] = Some((0.0, 0));
    let mut back: Vec<Vec<(usize, usize)>> = Vec::with_capacity(counts.len());
    for (c, v) in counts.iter().zip(cost) {
        let mut next: Vec<Option<(f64, usize)>> = vec![None; buckets];
        let mut from = vec![(usize::MAX, 0usize); buckets];
        for (b, s) in best.iter().enumerate() {
            let Some((sc, sn)) = *s else { continue };
            for (j, (&n, &e)) in c.iter().zip(v).enumerate() {
                let (nc, nn) = (sc + e, sn + n);
                let nb = (nn / unit).min(buckets - 1);
                let better = match next[nb] {
                    None => true,
                    Some((oc, on)) => nc < oc || (nc == oc && nn > on),
                };
                if better {
                    next[nb] = Some((nc, nn));
                    from[nb] = (b, j);
                }
            }
        }
        best = next;
        back.push(from);
    }
    let end = best
        .iter()
        .enumerate()
        .filter_map(|(b, s)| s.map(|(c, n)| (b, c, n)))
        .filter(|&(_, _, n)| n >= goal)
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
        .map(|(b, _, _)| b)
        .or_else(|| best.iter().rposition(Option::is_some))
        .unwrap_or(0);
    let mut levels = vec![0; counts.len()];
    let mut b = end;
    for l in (0..counts.len()).rev() {
        let (prev, j) = back[l][b];
        levels[l] = j;
        b = prev;
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers in [0, 1).
    fn rng(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    fn instance(seed: &mut u64, layers: usize) -> (Vec<Vec<usize>>, Vec<Vec<f64>>) {
        let grid = [0.0, 0.3, 0.6, 0.9];
        let mut counts = Vec::new();
        let mut cost = Vec::new();
        for _ in 0..layers {
            let params = 10 + (rng(seed) * 90.0) as usize;
            counts.push(grid.iter().map(|&s| mask::count(params, s)).collect());
            // Increasing, not convex: a layer may be cheap up to 60 % and then break.
            let mut c = 0.0;
            cost.push(
                grid.iter()
                    .enumerate()
                    .map(|(j, _)| {
                        if j > 0 {
                            c += rng(seed).powi(3) * 5.0;
                        }
                        c
                    })
                    .collect(),
            );
        }
        (counts, cost)
    }

    #[test]
    fn the_knapsack_finds_the_cheapest_levels_that_reach_the_goal() {
        let mut seed = 7;
        for _ in 0..40 {
            let (counts, cost) = instance(&mut seed, 5);
            let most: usize = counts.iter().map(|c| c[3]).sum();
            let goal = (rng(&mut seed) * most as f64) as usize;
            // Brute force over the 4⁵ choices.
            let mut want = f64::INFINITY;
            for code in 0..4usize.pow(5) {
                let js: Vec<usize> = (0..5).map(|l| code / 4usize.pow(l as u32) % 4).collect();
                let n: usize = js.iter().zip(&counts).map(|(&j, c)| c[j]).sum();
                if n >= goal {
                    let c: f64 = js.iter().zip(&cost).map(|(&j, v)| v[j]).sum();
                    want = want.min(c);
                }
            }
            let js = choose(&counts, &cost, goal, 1);
            let n: usize = js.iter().zip(&counts).map(|(&j, c)| c[j]).sum();
            let got: f64 = js.iter().zip(&cost).map(|(&j, v)| v[j]).sum();
            assert!(n >= goal);
            assert!((got - want).abs() < 1e-12, "{got} vs brute force {want}");
        }
    }

    #[test]
    fn the_split_sums_to_the_goal_exactly_and_spares_the_sensitive_layer() {
        let mut seed = 11;
        for layers in [1, 3, 8] {
            for _ in 0..20 {
                let (counts, cost) = instance(&mut seed, layers);
                let most: usize = counts.iter().map(|c| c[3]).sum();
                let goal = (rng(&mut seed) * most as f64) as usize;
                // Coarse buckets too: the remainder is placed exactly after the knapsack.
                for unit in [1, 7] {
                    let js = choose(&counts, &cost, goal, unit);
                    assert_eq!(js.len(), layers);
                }
                let s = solve(&counts, &cost, goal);
                assert_eq!(s.iter().sum::<usize>(), goal);
                for (n, c) in s.iter().zip(&counts) {
                    assert!(*n <= c[3]);
                }
            }
        }
        // Two layers of 100: the first breaks at any sparsity, the second is free up to 90 %.
        let counts = vec![vec![0, 30, 60, 90], vec![0, 30, 60, 90]];
        let cost = vec![vec![0.0, 1.0, 2.0, 3.0], vec![0.0, 0.0, 0.01, 0.02]];
        assert_eq!(solve(&counts, &cost, 100), vec![10, 90]);
        assert_eq!(solve(&counts, &cost, 75), vec![0, 75]);
    }

    #[test]
    fn levels_hold_the_target_and_respect_the_cap() {
        assert_eq!(
            levels(0.72, 0.9),
            vec![0.0, 0.3, 0.5, 0.6, 0.7, 0.72, 0.8, 0.85, 0.9]
        );
        assert_eq!(levels(0.7, 0.99).last(), Some(&0.99));
    }

    /// The profile's network after one change: MobileNet's first expand conv changed, every
    /// later BatchNorm re-estimated on the way (`After::error`), against the pass's way of
    /// doing it (each BatchNorm from a run of the whole prefix, then the whole network).
    #[test]
    fn the_profile_measures_the_network_with_its_later_batchnorms_reestimated() {
        use crate::ir::Model;
        use std::path::Path;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let feeds = crate::data::read_npz(&root.join("fixtures/mnist_calib_small.npz")).unwrap();
        let batches = vec![
            crate::calib::head(&feeds, 4).unwrap(),
            slice_feeds(&crate::calib::head(&feeds, 6).unwrap(), 4..6),
        ];
        let model = Model::load(&root.join("fixtures/mobilenet.onnx")).unwrap();
        let g = &model.graph;
        let dense_net = Network::dense(g);
        let bns = batchnorms(g);
        let mut whole = frontier::Frontier::new(g, &batches);
        let mut dm = Vec::new();
        for &(i, x) in &bns {
            whole.advance(&dense_net, i).unwrap();
            dm.push(batch_moments(g, &whole, i, x).unwrap());
        }
        whole.advance(&dense_net, g.nodes.len()).unwrap();
        let dense: Vec<Vec<Option<Tensor<f32>>>> = (0..2)
            .map(|b| {
                g.outputs
                    .iter()
                    .map(|&o| whole.get(b, o).cloned())
                    .collect()
            })
            .collect();
        let node = (0..g.nodes.len())
            .find(|&i| g.nodes[i].name.contains("blocks.0/expand") && g.nodes[i].op_type == "Conv")
            .unwrap();
        assert!(bns.iter().filter(|&&(i, _)| i > node).count() >= 5);
        let w = g.nodes[node].inputs[1].unwrap();
        let changed = |f: &dyn Fn(usize, f32) -> f32| {
            let t = &g.weights[&w].tensor;
            let a = t.as_float().unwrap();
            let v: Vec<f32> = a.iter().enumerate().map(|(i, &x)| f(i, x)).collect();
            let a = ndarray::ArrayD::from_shape_vec(a.raw_dim(), v).unwrap();
            Network {
                g,
                weights: HashMap::from([(w, Tensor::float(t.dtype, a))]),
            }
        };
        let start = || {
            let mut f = frontier::Frontier::new(g, &batches);
            f.advance(&dense_net, node).unwrap();
            f
        };
        let after = After {
            bns: &bns,
            moments: &dm,
            dense: &dense,
        };
        let unaware = After {
            bns: &[],
            moments: &[],
            dense: &dense,
        };
        // Every third weight zeroed: the same error as the pass's re-estimation gives.
        let prune = |i: usize, x: f32| if i.is_multiple_of(3) { 0.0 } else { x };
        let ours = after.error(&mut changed(&prune), start(), node).unwrap();
        let mut net = changed(&prune);
        for (&(i, x), (md, vd)) in bns.iter().zip(&dm) {
            if i <= node {
                continue;
            }
            let prefix = net.apply_to(g.subgraph(&[], &[x]).unwrap());
            let e = Engine::<f32>::new(&prefix).unwrap();
            let parts: Vec<_> = batches
                .iter()
                .map(|f| stats_of(&LayerInput::input(&e, 0, f).unwrap()))
                .collect();
            let (mp, vp) = moments(parts.into_iter());
            recalibrate_bn(g, i, md, vd, &mp, &vp, &mut net);
        }
        let whole_net = net.apply_to(g.clone());
        let e = Engine::<f32>::new(&whole_net).unwrap();
        let mut want = 0.0;
        for (b, f) in batches.iter().enumerate() {
            for (y, d) in e.run(f.clone()).unwrap().iter().zip(&dense[b]) {
                let (y, d) = (
                    y.as_float().unwrap(),
                    d.as_ref().unwrap().as_float().unwrap(),
                );
                want += squared_distance(y, d);
            }
        }
        assert!(want > 0.0);
        assert!((ours - want).abs() <= 1e-3 * want, "{ours} vs {want}");
        // Halved weights: the next BatchNorm takes the scale out, which the unaware
        // measurement charges in full.
        let half = |_: usize, x: f32| 0.5 * x;
        let with = after.error(&mut changed(&half), start(), node).unwrap();
        let without = unaware.error(&mut changed(&half), start(), node).unwrap();
        assert!(with < 1e-3 * without, "{with} vs {without}");
    }
}
