//! Masks from per-weight saliencies (low saliency = pruned first): a global threshold over all
//! layers, the same sparsity in every layer, or an N:M pattern (N kept in every M consecutive
//! input channels, at each kernel tap).

use super::layers::Target;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Pattern {
    /// Prune this fraction of the selected layers' weights.
    Sparsity(f64),
    /// Keep `n` of every `m` along the input dimension.
    NM(usize, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    /// One threshold over all layers: layers get the sparsity the criterion gives them.
    Global,
    /// The same sparsity in every layer.
    Uniform,
    /// Per-layer sparsities that minimise the sum of the layers' measured effects on the
    /// network's outputs: each layer pruned alone (mask and update as asked) at a grid of
    /// sparsities on calibration samples, then a knapsack over the grid for the requested total.
    Sensitivity,
}

/// How a sparsity target is split over the layers.
#[derive(Debug, Clone, Copy)]
pub enum Split<'a> {
    /// The same sparsity in every layer.
    Uniform,
    /// One threshold over all layers, at most `max_layer` of one layer pruned.
    Global { max_layer: f64 },
    /// These counts pruned per layer (`sensitivity::allocate`).
    Counts(&'a [usize]),
}

/// The column groups of an N:M pattern for a layer: for each tap, runs of `m` consecutive
/// input channels (columns are `channel · taps + tap`). Channels past the last full run of `m`
/// are not in any group and stay dense.
pub fn nm_groups(cols: usize, taps: usize, m: usize) -> Vec<Vec<usize>> {
    let cin = cols / taps.max(1);
    let mut out = Vec::new();
    for t in 0..taps {
        for c0 in (0..cin / m * m).step_by(m) {
            out.push((c0..c0 + m).map(|c| c * taps + t).collect());
        }
    }
    out
}

/// Column order that makes every N:M group contiguous (tap-major), for column-sequential
/// solvers.
pub fn nm_order(cols: usize, taps: usize) -> Vec<usize> {
    let cin = cols / taps.max(1);
    (0..taps)
        .flat_map(|t| (0..cin).map(move |c| c * taps + t))
        .collect()
}

/// The number pruned of `n` at sparsity `s`.
pub fn count(n: usize, s: f64) -> usize {
    ((s * n as f64).round() as usize).min(n)
}

/// The keep-mask that prunes the `n` lowest saliencies. The n smallest under a strict total
/// order (ties by index) are one set: a selection finds it without sorting AlexNet's 38 M
/// weights.
pub fn prune_lowest(s: &[f64], n: usize) -> Vec<bool> {
    let mut keep = vec![true; s.len()];
    let mut idx: Vec<usize> = (0..s.len()).collect();
    if n > 0 && n < idx.len() {
        idx.select_nth_unstable_by(n, |&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
    }
    for &i in &idx[..n.min(idx.len())] {
        keep[i] = false;
    }
    keep
}

/// Keep-masks (rows × cols, row-major) for `targets` from saliencies of the same layout.
pub fn select(
    sal: &[Vec<f64>],
    targets: &[Target],
    pattern: Pattern,
    split: Split,
) -> Vec<Vec<bool>> {
    let mut keep: Vec<Vec<bool>> = sal.iter().map(|s| vec![true; s.len()]).collect();
    match pattern {
        Pattern::NM(n, m) => {
            for ((k, s), t) in keep.iter_mut().zip(sal).zip(targets) {
                let groups = nm_groups(t.cols, t.taps, m);
                for r in 0..t.rows {
                    let row = &s[r * t.cols..(r + 1) * t.cols];
                    for grp in &groups {
                        let mut idx = grp.clone();
                        idx.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
                        for &c in &idx[..m - n] {
                            k[r * t.cols + c] = false;
                        }
                    }
                }
            }
        }
        Pattern::Sparsity(sp) => match split {
            Split::Uniform => {
                for (k, s) in keep.iter_mut().zip(sal) {
                    *k = prune_lowest(s, count(s.len(), sp));
                }
            }
            Split::Counts(c) => {
                for ((k, s), &n) in keep.iter_mut().zip(sal).zip(c) {
                    *k = prune_lowest(s, n);
                }
            }
            Split::Global { max_layer } => {
                // Walking all saliencies in order and skipping a layer's past its cap prunes
                // the `goal` lowest of the union of each layer's `cap` lowest: two selections,
                // no sort of every weight (VGG19's 140 M as (value, layer, index) triples took
                // 3.4 GB and a sort).
                let total: usize = sal.iter().map(|s| s.len()).sum();
                let goal = count(total, sp);
                let mut cand: Vec<(usize, usize)> = Vec::new();
                for (l, s) in sal.iter().enumerate() {
                    let cap = ((max_layer * s.len() as f64).floor() as usize).min(s.len());
                    let mut idx: Vec<usize> = (0..s.len()).collect();
                    if cap < idx.len() {
                        if cap > 0 {
                            idx.select_nth_unstable_by(cap, |&a, &b| {
                                s[a].total_cmp(&s[b]).then(a.cmp(&b))
                            });
                        }
                        idx.truncate(cap);
                    }
                    cand.extend(idx.into_iter().map(|i| (l, i)));
                }
                if goal < cand.len() {
                    if goal > 0 {
                        cand.select_nth_unstable_by(goal, |a, b| {
                            sal[a.0][a.1].total_cmp(&sal[b.0][b.1]).then(a.cmp(b))
                        });
                    }
                    cand.truncate(goal);
                }
                for (l, i) in cand {
                    keep[l][i] = false;
                }
            }
        },
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(rows: usize, cols: usize, taps: usize) -> Target {
        Target {
            node: 0,
            weight: 0,
            name: "t".into(),
            weight_name: "w".into(),
            op_type: "Conv".into(),
            rows,
            cols,
            taps,
            grouped: false,
            out_major: true,
        }
    }

    #[test]
    fn nm_keeps_n_of_every_m_input_channels_per_tap() {
        // 3 rows, 8 channels × 9 taps; 2:4 along channels.
        let t = target(3, 72, 9);
        let sal: Vec<f64> = (0..3 * 72).map(|i| ((i * 7919) % 101) as f64).collect();
        let k = select(
            &[sal],
            std::slice::from_ref(&t),
            Pattern::NM(2, 4),
            Split::Uniform,
        );
        for r in 0..3 {
            for grp in nm_groups(72, 9, 4) {
                let kept = grp.iter().filter(|&&c| k[0][r * 72 + c]).count();
                assert_eq!(kept, 2);
            }
        }
        assert_eq!(k[0].iter().filter(|x| !**x).count(), 3 * 72 / 2);
        // Contiguous in nm_order.
        let ord = nm_order(72, 9);
        assert_eq!(&ord[..4], &[0, 9, 18, 27]);
    }

    /// The walk over every saliency in global order that the selections replace.
    fn global_by_sorting(sal: &[Vec<f64>], sp: f64, max_layer: f64) -> Vec<Vec<bool>> {
        let mut keep: Vec<Vec<bool>> = sal.iter().map(|s| vec![true; s.len()]).collect();
        let total: usize = sal.iter().map(|s| s.len()).sum();
        let goal = count(total, sp);
        let mut all: Vec<(f64, usize, usize)> = sal
            .iter()
            .enumerate()
            .flat_map(|(l, s)| s.iter().enumerate().map(move |(i, &v)| (v, l, i)))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut per = vec![0usize; sal.len()];
        let mut done = 0;
        for (_, l, i) in all {
            let cap = ((max_layer * sal[l].len() as f64).floor() as usize).min(sal[l].len());
            if done < goal && per[l] < cap {
                keep[l][i] = false;
                per[l] += 1;
                done += 1;
            }
        }
        keep
    }

    #[test]
    fn global_selection_equals_the_sorted_walk() {
        let mut r = crate::autodiff::rng::SplitMix64::new(3);
        for trial in 0..60 {
            let sizes = [7 + trial % 5, 30, 1 + trial % 3, 64];
            let ts: Vec<Target> = sizes.iter().map(|&n| target(1, n, 1)).collect();
            // Few distinct values: ties across and within layers.
            let sal: Vec<Vec<f64>> = sizes
                .iter()
                .enumerate()
                .map(|(l, &n)| {
                    (0..n)
                        .map(|_| ((r.normal() + l as f64 * 0.3) * 3.0).round())
                        .collect()
                })
                .collect();
            for sp in [0.0, 0.3, 0.7, 0.95, 1.0] {
                for max_layer in [1.0, 0.9, 0.5, 0.0] {
                    let got = select(
                        &sal,
                        &ts,
                        Pattern::Sparsity(sp),
                        Split::Global { max_layer },
                    );
                    assert_eq!(
                        got,
                        global_by_sorting(&sal, sp, max_layer),
                        "{trial} {sp} {max_layer}"
                    );
                }
            }
        }
    }

    #[test]
    fn exact_counts_global_and_uniform() {
        let ts = [target(4, 10, 1), target(2, 30, 1)];
        let sal = vec![
            (0..40).map(|i| i as f64).collect::<Vec<_>>(),
            (0..60).map(|i| 100.0 + i as f64).collect(),
        ];
        let g = select(
            &sal,
            &ts,
            Pattern::Sparsity(0.7),
            Split::Global { max_layer: 1.0 },
        );
        let pruned = |k: &Vec<bool>| k.iter().filter(|x| !**x).count();
        assert_eq!(pruned(&g[0]) + pruned(&g[1]), 70);
        assert_eq!(pruned(&g[0]), 40, "lowest saliencies first");
        let capped = select(
            &sal,
            &ts,
            Pattern::Sparsity(0.7),
            Split::Global { max_layer: 0.9 },
        );
        assert_eq!(pruned(&capped[0]), 36);
        assert_eq!(pruned(&capped[0]) + pruned(&capped[1]), 70);
        let u = select(&sal, &ts, Pattern::Sparsity(0.7), Split::Uniform);
        assert_eq!((pruned(&u[0]), pruned(&u[1])), (28, 42));
        let c = select(&sal, &ts, Pattern::Sparsity(0.7), Split::Counts(&[5, 59]));
        assert_eq!((pruned(&c[0]), pruned(&c[1])), (5, 59));
        assert!(c[0][5] && !c[0][4], "the lowest of each layer go");
        // Per layer, the smallest saliencies go, ties to the lower index: shuffled values with
        // repeats prune exactly the first n of the sorted order.
        let ts = [target(1, 50, 1)];
        let s: Vec<f64> = (0..50).map(|i| ((i * 37) % 50 / 3) as f64).collect();
        let u = select(
            std::slice::from_ref(&s),
            &ts,
            Pattern::Sparsity(0.7),
            Split::Uniform,
        );
        let mut idx: Vec<usize> = (0..50).collect();
        idx.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
        let want: Vec<bool> = (0..50).map(|i| !idx[..35].contains(&i)).collect();
        assert_eq!(u[0], want);
    }
}
