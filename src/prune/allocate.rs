//! Global allocation: which units to remove to reach a target, ranked across all groups, with
//! guards against layer collapse and rounding of the kept counts.

use crate::analysis::Analysis;
use crate::ir::{Graph, ValueId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A fraction of the parameters of the layers the prunable structures live in.
    Prunable,
    /// A fraction of the whole model's parameters.
    Params,
    /// A fraction of the whole model's FLOPs.
    Flops,
    /// A fraction of the model's onnxruntime latency at --latency-batch, measured: the FLOPs
    /// target that reaches it is searched for (`prune::latency`).
    Latency,
}

/// What a removed unit costs in the global ranking of a loss-estimating criterion: the units
/// with the least estimated loss per unit of this cost go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RankCost {
    /// Its parameters (HAP's own ranking): late, wide layers hold them and cost few FLOPs.
    Params,
    /// Its FLOPs per sample: early, high-resolution layers.
    Flops,
}

impl RankCost {
    /// The cost that matches a target: greedy removal by loss per unit of what the target
    /// counts is the knapsack's greedy answer to it.
    pub fn of(target: Target) -> RankCost {
        match target {
            Target::Prunable | Target::Params => RankCost::Params,
            Target::Flops | Target::Latency => RankCost::Flops,
        }
    }
}

/// The factor that turns a loss-per-parameter rank of a unit removing `params` parameters and
/// `flops` FLOPs into a loss-per-`cost` one (up to a constant). 1 for `Params` and for units
/// without parameters; under `Flops` a unit that saves no FLOPs goes after every one that
/// does (unless its estimated loss is zero).
pub fn cost_factor(cost: RankCost, params: f64, flops: f64) -> f64 {
    match cost {
        _ if params <= 0.0 => 1.0,
        RankCost::Params => 1.0,
        RankCost::Flops => params / flops.max(1e-9),
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AllocOptions {
    pub ratio: f64,
    pub target: Target,
    /// At most this fraction of a group's units is removed.
    pub max_layer_ratio: f64,
    /// Kept counts of pruned groups are multiples of this.
    pub round_to: usize,
}

/// Parameters and FLOPs of the model as units are removed: each weight's kept count per axis.
pub struct Cost<'a> {
    g: &'a Graph,
    flops_per: &'a HashMap<ValueId, f64>,
    removed: BTreeMap<ValueId, BTreeMap<usize, BTreeSet<usize>>>,
}

impl<'a> Cost<'a> {
    pub fn new(g: &'a Graph, a: &'a Analysis) -> Self {
        Cost {
            g,
            flops_per: &a.flops_per_weight,
            removed: BTreeMap::new(),
        }
    }

    fn params_of(&self, w: ValueId) -> usize {
        let shape = self.g.weights[&w].tensor.shape();
        let r = self.removed.get(&w);
        shape
            .iter()
            .enumerate()
            .map(|(ax, &d)| d - r.and_then(|r| r.get(&ax)).map_or(0, |s| s.len()))
            .product()
    }

    /// (params removed, FLOPs removed) by removing `unit`'s slices, applied.
    pub fn remove(&mut self, slices: &[crate::analysis::Slice]) -> (f64, f64) {
        let ws: BTreeSet<ValueId> = slices.iter().map(|s| s.weight).collect();
        let before: Vec<usize> = ws.iter().map(|&w| self.params_of(w)).collect();
        for s in slices {
            self.removed
                .entry(s.weight)
                .or_default()
                .entry(s.axis)
                .or_default()
                .insert(s.index);
        }
        let (mut p, mut f) = (0.0, 0.0);
        for (&w, b) in ws.iter().zip(before) {
            let d = (b - self.params_of(w)) as f64;
            p += d;
            f += d * self.flops_per.get(&w).copied().unwrap_or(0.0);
        }
        (p, f)
    }
}

/// Parameters of the layers that prunable units slice (the denominator of `Target::Prunable`).
pub fn prunable_params(g: &Graph, a: &Analysis) -> usize {
    let ws: BTreeSet<ValueId> = a
        .groups
        .iter()
        .flat_map(|g| &g.units)
        .filter(|u| u.frozen.is_none())
        .flat_map(|u| u.slices.iter().map(|s| s.weight))
        .collect();
    ws.iter().map(|w| g.weights[w].tensor.len()).sum()
}

#[derive(Debug, Clone, Serialize)]
pub struct Allocation {
    pub removed: Vec<Vec<bool>>,
    pub params_removed: f64,
    pub flops_removed: f64,
    /// Removed over the target's denominator.
    pub achieved: f64,
    /// Why the target was not reached, when it was not.
    pub shortfall: Option<String>,
}

/// Removes units in ascending `rank` until the target is met. Within a group units go in
/// rank order, in blocks that keep the group's kept count a multiple of `round_to` (channel and
/// feature groups; heads and conv groups are counted one by one); across groups the block with
/// the lowest mean rank goes first (ties: group order). `denominators`: (prunable params,
/// model params, model FLOPs).
pub fn allocate(
    g: &Graph,
    a: &Analysis,
    rank: &[Vec<f64>],
    denominators: (f64, f64, f64),
    o: &AllocOptions,
) -> Allocation {
    use crate::analysis::GroupKind;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let denom = match o.target {
        Target::Prunable => denominators.0,
        Target::Params => denominators.1,
        Target::Flops | Target::Latency => denominators.2,
    }
    .max(1.0);
    let goal = o.ratio * denom;
    // Per group: its blocks in removal order.
    let mut blocks: Vec<Vec<Vec<usize>>> = Vec::with_capacity(a.groups.len());
    for (gi, grp) in a.groups.iter().enumerate() {
        let n = grp.units.len();
        let mut units: Vec<usize> = (0..n).filter(|&u| grp.units[u].frozen.is_none()).collect();
        units.sort_by(|&x, &y| rank[gi][x].total_cmp(&rank[gi][y]).then(x.cmp(&y)));
        let r = match grp.kind {
            GroupKind::Channels | GroupKind::Features if o.round_to > 1 => o.round_to,
            _ => 1,
        };
        let cap = ((o.max_layer_ratio * n as f64).floor() as usize).min(n.saturating_sub(r.max(1)));
        let mut bs = Vec::new();
        let mut taken = 0;
        let mut size = if r > 1 && n % r != 0 { n % r } else { r };
        while taken + size <= cap.min(units.len()) {
            bs.push(units[taken..taken + size].to_vec());
            taken += size;
            size = r;
        }
        blocks.push(bs);
    }
    let key = |gi: usize, b: &[usize]| b.iter().map(|&u| rank[gi][u]).sum::<f64>() / b.len() as f64;
    // Min-heap over (mean rank, group, block index); f64 keys ordered by their bits' total order.
    let mut heap = BinaryHeap::new();
    let ord = |x: f64| {
        let b = x.to_bits() as i64;
        b ^ (((b >> 63) as u64) >> 1) as i64
    };
    for (gi, bs) in blocks.iter().enumerate() {
        if let Some(b) = bs.first() {
            heap.push(Reverse((ord(key(gi, b)), gi, 0usize)));
        }
    }
    let mut removed: Vec<Vec<bool>> = a
        .groups
        .iter()
        .map(|g| vec![false; g.units.len()])
        .collect();
    let mut cost = Cost::new(g, a);
    let (mut p, mut f) = (0.0, 0.0);
    let progress = |p: f64, f: f64| match o.target {
        Target::Flops | Target::Latency => f,
        _ => p,
    };
    while progress(p, f) < goal {
        let Some(Reverse((_, gi, bi))) = heap.pop() else {
            break;
        };
        for &u in &blocks[gi][bi] {
            let (dp, df) = cost.remove(&a.groups[gi].units[u].slices);
            p += dp;
            f += df;
            removed[gi][u] = true;
        }
        if let Some(b) = blocks[gi].get(bi + 1) {
            heap.push(Reverse((ord(key(gi, b)), gi, bi + 1)));
        }
    }
    let achieved = progress(p, f) / denom;
    let shortfall = (achieved + 1e-9 < o.ratio).then(|| {
        format!(
            "reached {:.1}% of the requested {:.1}%: the remaining structures are frozen, at --max-layer-ratio {} or held by --round-to {}",
            100.0 * achieved,
            100.0 * o.ratio,
            o.max_layer_ratio,
            o.round_to
        )
    });
    Allocation {
        removed,
        params_removed: p,
        flops_removed: f,
        achieved,
        shortfall,
    }
}
