//! Neural implants (HAP, ALGORITHMS.md §5.3): channels in the band just above the pruning
//! threshold are not removed but recomputed by a cheap 1×1 convolution from the producer's own
//! input, fitted on calibration data (HAP fine-tunes a zero-initialised implant; one-shot, we
//! fit it by ridge least squares, see `compensate`).
//!
//! In the network at its original shapes an implanted channel is the producer's k×k filter with
//! every tap but the centre zero: with "same" padding and no dilation that is exactly a 1×1
//! convolution at the same stride. The rewrite emits it as one: `Conv(k×k, kept)` ‖
//! `Conv(1×1, implanted)` → `Concat` on channels, the implanted channels last, every downstream
//! slice of the group permuted to match.
//!
//! Linear layers (MLP hidden units of a Gemm or MatMul) get the rank-r factor instead:
//! the implanted units' rows of W (on the kept inputs) are replaced by a rank-r product A·B
//! fitted by reduced-rank regression (`implant_linear`), emitted as `MatMul(x, Bᵀ) → MatMul(·,
//! Aᵀ)` (a Gemm when the producer has its own bias) concatenated after the producer's kept
//! outputs on the last axis. r = max(1, ⌊|S|·k / (8(|S| + k))⌋) for |S| units from k inputs:
//! an eighth of the rows' parameters, as a 1×1 implant is a ninth of a 3×3 filter.
//!
//! Eligible groups: one producer — a Conv with group 1, kernel > 1, same padding, dilation 1,
//! or a Gemm (no transA, alpha = beta = 1) / MatMul with a stored 2-D weight — and units that
//! reach only order-insensitive ops (elementwise, BatchNorm, pools, consumer layers): a Concat,
//! Split, Slice or Reshape on the channel axis would see the new order.

use crate::analysis::{Analysis, Fix, GroupKind};
use crate::ir::op::AutoPad;
use crate::ir::{Graph, Op};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Implant {
    pub group: usize,
    /// The producer Conv node.
    pub producer: usize,
    /// Implanted units of the group (channel indices of the producer's output).
    pub units: Vec<usize>,
    /// None: a 1×1 conv implant (Conv producer); Some(r): a rank-r factor (Gemm/MatMul).
    pub rank: Option<usize>,
}

/// The rank of a linear implant of `units` rows on `inputs` inputs: an eighth of their
/// parameters, at least 1.
pub fn linear_rank(units: usize, inputs: usize) -> usize {
    (units * inputs / (8 * (units + inputs)).max(1)).max(1)
}

/// A Gemm (no transA, alpha = beta = 1) or MatMul producer with a stored 2-D weight: its
/// implant is a rank-r factor. Returns the number of inputs.
pub fn linear_inputs(g: &Graph, producer: usize) -> Option<usize> {
    let p = &g.nodes[producer];
    let trans_b = match &p.op {
        Ok(Op::Gemm {
            alpha,
            beta,
            trans_a: false,
            trans_b,
        }) if *alpha == 1.0 && *beta == 1.0 => *trans_b,
        Ok(Op::MatMul) => false,
        _ => return None,
    };
    let w = g.weights.get(&p.inputs.get(1).copied().flatten()?)?;
    let s = w.tensor.shape();
    (s.len() == 2 && w.tensor.as_float().is_some()).then(|| if trans_b { s[1] } else { s[0] })
}

/// The implant of `units` of group `gi` (its rank when the producer is linear: `rank` × the
/// units, or `linear_rank`).
pub fn implant_for(
    g: &Graph,
    a: &Analysis,
    gi: usize,
    units: Vec<usize>,
    rank: Option<f64>,
) -> Implant {
    let producer = a.groups[gi].producers[0];
    let rank = linear_inputs(g, producer).map(|k| match rank {
        Some(f) => ((f * units.len() as f64).round() as usize).clamp(1, units.len().min(k)),
        None => linear_rank(units.len(), k),
    });
    Implant {
        group: gi,
        producer,
        units,
        rank,
    }
}

/// Why a group cannot take implants, or None when it can.
pub fn ineligible(g: &Graph, a: &Analysis, gi: usize) -> Option<&'static str> {
    let grp = &a.groups[gi];
    if !matches!(grp.kind, GroupKind::Channels | GroupKind::Features) || grp.producers.len() != 1 {
        return Some("not a single-producer channel or feature group");
    }
    if linear_inputs(g, grp.producers[0]).is_some() {
        return order_insensitive(g, a, gi);
    }
    let p = &g.nodes[grp.producers[0]];
    let Ok(Op::Conv { window, group }) = &p.op else {
        return Some("the producer is not a Conv, Gemm or MatMul");
    };
    let ws = p
        .inputs
        .get(1)
        .copied()
        .flatten()
        .and_then(|w| g.weights.get(&w))
        .map(|w| w.tensor.shape().to_vec());
    let Some(ws) = ws else {
        return Some("computed weight");
    };
    let kernel = &ws[2..];
    if *group != 1 || kernel.iter().all(|&k| k == 1) {
        return Some("1×1 or grouped conv: an implant saves nothing");
    }
    if !window.dilations.iter().all(|&d| d == 1) || !matches!(window.auto_pad, AutoPad::NotSet) {
        return Some("dilated or auto-padded");
    }
    let spatial = kernel.len();
    let same = (0..spatial).all(|i| {
        let (b, e) = (
            window.pads.get(i).copied().unwrap_or(0),
            window.pads.get(i + spatial).copied().unwrap_or(0),
        );
        kernel[i] % 2 == 1 && b == kernel[i] / 2 && e == kernel[i] / 2
    });
    if !same {
        return Some("not 'same' padding");
    }
    order_insensitive(g, a, gi)
}

/// None when every value carrying the group's units reaches only ops that do not depend on
/// their order (the implanted units move last).
fn order_insensitive(g: &Graph, a: &Analysis, gi: usize) -> Option<&'static str> {
    // Every value carrying the group's channels must reach only order-insensitive ops.
    for (v, t) in a.tracks.iter().enumerate() {
        let Some(t) = t else { continue };
        if !t.pos.iter().flatten().any(|&(g2, _)| g2 == gi) {
            continue;
        }
        for (ni, n) in g.nodes.iter().enumerate() {
            if !n.inputs.contains(&Some(v)) {
                continue;
            }
            let fixed = a.fixes.iter().any(|f| {
                matches!(*f, Fix::Reshape { node } | Fix::Split { node } | Fix::Slice { node, .. } | Fix::Expand { node } | Fix::Resize { node } if node == ni)
            });
            let order_sensitive = matches!(
                n.op,
                Ok(Op::Concat { .. }
                    | Op::Split { .. }
                    | Op::Slice { .. }
                    | Op::Reshape { .. }
                    | Op::Gather { .. }
                    | Op::Transpose { .. })
            );
            if fixed || order_sensitive || n.op.is_err() {
                return Some("its channels reach an op that depends on their order");
            }
        }
        if g.outputs.contains(&v) {
            return Some("reaches a graph output");
        }
    }
    None
}

/// The implant band: of the units the allocation removes, the `ratio` share with the highest
/// rank (just below the threshold) in eligible groups, taken per group in blocks of `round_to`
/// so kept counts stay multiples of it.
pub fn choose(
    g: &Graph,
    a: &Analysis,
    removed: &[Vec<bool>],
    rank: &[Vec<f64>],
    ratio: f64,
    round_to: usize,
    linear_rank: Option<f64>,
) -> Vec<Implant> {
    let total: usize = removed.iter().flatten().filter(|r| **r).count();
    let want = (ratio * total as f64).ceil() as usize;
    if want == 0 {
        return Vec::new();
    }
    let mut cands: Vec<(f64, usize, usize)> = Vec::new();
    for (gi, grp) in a.groups.iter().enumerate() {
        if ineligible(g, a, gi).is_some() {
            continue;
        }
        for ui in 0..grp.units.len() {
            if removed[gi][ui] {
                cands.push((rank[gi][ui], gi, ui));
            }
        }
    }
    cands.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    // Whole blocks of round_to units (so that kept + implanted stays a multiple of it): each
    // block goes to the group of the best remaining candidate and takes that group's next best.
    let r = round_to.max(1);
    let blocks = ((want + r / 2) / r).max(1);
    let mut per: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    let mut left = cands;
    for _ in 0..blocks {
        let Some(&(_, gi, _)) = left
            .iter()
            .find(|c| left.iter().filter(|d| d.1 == c.1).count() >= r)
        else {
            break;
        };
        let take: Vec<usize> = left
            .iter()
            .filter(|c| c.1 == gi)
            .take(r)
            .map(|c| c.2)
            .collect();
        left.retain(|c| !(c.1 == gi && take.contains(&c.2)));
        per.entry(gi).or_default().extend(take);
    }
    per.into_iter()
        .map(|(gi, mut units)| {
            units.sort_unstable();
            implant_for(g, a, gi, units, linear_rank)
        })
        .collect()
}
