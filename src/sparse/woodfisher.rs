//! WoodFisher (Singh & Alistarh 2020): the OBS saliency and weight update with the empirical
//! Fisher F = λI + (1/m)·Σᵢ gᵢgᵢᵀ of m per-sample gradients, per block of B weights.
//!
//! The paper builds F⁻¹ by m rank-1 Woodbury updates of a B×B matrix (O(m·B²) time, O(B²)
//! memory, hence its small blocks). The same inverse in one step through the m×m Gram matrix,
//! F⁻¹ = (1/λ)·(I − G·K⁻¹·Gᵀ) with G the B×m gradients and K = mλI + GᵀG, costs O(B·m²) and
//! never forms a B×B matrix, so a block can be a whole layer (the default) at no extra cost;
//! `--fisher-block` gives the paper's block-diagonal approximation.
//!
//! Saliency ρ_q = w_q² / (2·[F⁻¹]_qq). Updates: `joint`, the exact OBS solution for removing the
//! whole pruned set Q of a block at once (δw_S = F_SS⁻¹·F_SQ·w_Q, again through a Gram matrix,
//! that of the kept gradients), or `summed`, the paper's sum of single-weight OBS corrections
//! δw = −F⁻¹·Σ_q (w_q/[F⁻¹]_qq)·e_q (interactions between pruned weights ignored).

use super::layers::Target;
use super::saliency::to_rows;
use crate::autodiff::Objective;
use crate::autodiff::curvature::{Curvature, batch_size, slice_feeds};
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::ir::Graph;
use faer::Mat;
use faer::linalg::solvers::SolveCore;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Update {
    /// The exact OBS update for the whole pruned set of a block.
    Joint,
    /// The paper's sum of single-weight OBS corrections.
    Summed,
}

#[derive(Debug, Clone, Copy)]
pub struct FisherOptions {
    /// Per-sample gradients m (one calibration sample each).
    pub samples: usize,
    /// Weights per block (0: the whole layer).
    pub block: usize,
    /// Absolute damping λ of F (the paper's 1e-5).
    pub damp: f64,
    pub update: Update,
}

impl Default for FisherOptions {
    fn default() -> Self {
        FisherOptions {
            samples: 128,
            block: 0,
            damp: 1e-5,
            update: Update::Joint,
        }
    }
}

/// Memory the gradients may take (f32): beyond it the user is asked for fewer samples.
const GRADIENT_BYTES: usize = 6 << 30;

/// Per-sample gradients of one layer in its rows layout: `g[j][q]`, sample j, weight q.
pub struct LayerGradients {
    pub g: Vec<Vec<f32>>,
}

/// The per-sample gradients of `obj` with respect to every target's weight.
pub fn gradients(
    g: &Graph,
    targets: &[Target],
    feeds: &Feeds<f32>,
    obj: &Objective,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LayerGradients>> {
    let m = batch_size(feeds)?;
    let d: usize = targets.iter().map(|t| t.rows * t.cols).sum();
    if d.saturating_mul(m).saturating_mul(4) > GRADIENT_BYTES {
        return Err(Error::Usage(format!(
            "WoodFisher: {m} gradients of {d} weights need {:.1} GiB (limit {} GiB): lower --fisher-samples or narrow the layers with --include/--exclude",
            (d * m * 4) as f64 / (1u64 << 30) as f64,
            GRADIENT_BYTES >> 30
        )));
    }
    let wrt: Vec<usize> = targets.iter().map(|t| t.weight).collect();
    let cur = Curvature::<f32>::new(g, 1)?;
    let mut out: Vec<LayerGradients> = targets
        .iter()
        .map(|_| LayerGradients {
            g: Vec::with_capacity(m),
        })
        .collect();
    for j in 0..m {
        progress(j, m);
        let (_, gr) = cur.gradient(&slice_feeds(feeds, j..j + 1), &obj.slice(j..j + 1), &wrt)?;
        for ((t, lg), a) in targets.iter().zip(&mut out).zip(gr) {
            let a = a.mapv(|v| v as f64);
            let rows = to_rows(t, &a);
            if let Some(bad) = rows.iter().position(|v| !v.is_finite()) {
                return Err(Error::graph(
                    &t.name,
                    format!("per-sample gradient of sample {j} is not finite at weight {bad}"),
                ));
            }
            lg.g.push(rows.iter().map(|&v| v as f32).collect());
        }
    }
    progress(m, m);
    Ok(out)
}

fn blocks(len: usize, block: usize) -> Vec<std::ops::Range<usize>> {
    let b = if block == 0 { len.max(1) } else { block };
    (0..len).step_by(b).map(|s| s..(s + b).min(len)).collect()
}

/// K = mλI + GᵀG over the weights `idx` of a block, factored; `None` when empty.
fn gram(
    lg: &LayerGradients,
    idx: &[usize],
    damp: f64,
) -> Result<faer::linalg::solvers::Llt<f64>, String> {
    let m = lg.g.len();
    let k = Mat::<f64>::from_fn(m, m, |a, b| {
        let (ga, gb) = (&lg.g[a], &lg.g[b]);
        let dot: f64 = idx.iter().map(|&q| ga[q] as f64 * gb[q] as f64).sum();
        dot + if a == b { m as f64 * damp } else { 0.0 }
    });
    k.llt(faer::Side::Lower).map_err(|_| {
        "WoodFisher: the damped Gram matrix is not positive definite (raise --fisher-damp)"
            .to_string()
    })
}

/// F⁻¹·v on the weights `idx` (v given on them): (1/λ)·(v − G·K⁻¹·Gᵀ·v).
fn apply_inverse(
    lg: &LayerGradients,
    idx: &[usize],
    llt: &faer::linalg::solvers::Llt<f64>,
    damp: f64,
    v: &[f64],
) -> Vec<f64> {
    let m = lg.g.len();
    let mut c = Mat::<f64>::from_fn(m, 1, |j, _| {
        idx.iter()
            .zip(v)
            .map(|(&q, &x)| lg.g[j][q] as f64 * x)
            .sum()
    });
    llt.solve_in_place_with_conj(faer::Conj::No, c.as_mut());
    idx.iter()
        .zip(v)
        .map(|(&q, &x)| {
            let gk: f64 = (0..m).map(|j| lg.g[j][q] as f64 * c[(j, 0)]).sum();
            (x - gk) / damp
        })
        .collect()
}

/// [F⁻¹]_qq for every weight q of the layer (rows layout), per block.
pub fn inverse_diagonal(
    lg: &LayerGradients,
    len: usize,
    o: &FisherOptions,
) -> Result<Vec<f64>, String> {
    let m = lg.g.len();
    let mut out = vec![0.0; len];
    for r in blocks(len, o.block) {
        let idx: Vec<usize> = r.clone().collect();
        let llt = gram(lg, &idx, o.damp)?;
        // Z = L⁻¹·Gᵀ (m × B); [F⁻¹]_qq = (1 − ‖z_q‖²)/λ.
        let mut z = Mat::<f64>::from_fn(m, idx.len(), |j, i| lg.g[j][idx[i]] as f64);
        faer::linalg::triangular_solve::solve_lower_triangular_in_place(
            llt.L(),
            z.as_mut(),
            faer::Par::rayon(0),
        );
        for (i, &q) in idx.iter().enumerate() {
            let s: f64 = (0..m).map(|j| z[(j, i)] * z[(j, i)]).sum();
            // 1 − gᵀK⁻¹g ≥ mλ/(mλ + ‖g‖²) > 0 in exact arithmetic; rounding can reach 0.
            out[q] = (1.0 - s).max(1e-12) / o.damp;
        }
    }
    Ok(out)
}

/// OBS saliencies w_q²/(2·[F⁻¹]_qq) of one layer (rows layout).
pub fn saliency(lg: &LayerGradients, w: &[f64], o: &FisherOptions) -> Result<Vec<f64>, String> {
    let d = inverse_diagonal(lg, w.len(), o)?;
    Ok(w.iter().zip(&d).map(|(w, d)| w * w / (2.0 * d)).collect())
}

/// The weights after removing the pruned ones (`keep` false) with the WoodFisher update; the
/// pruned weights come back as exact zeros.
pub fn update(
    lg: &LayerGradients,
    w: &[f64],
    keep: &[bool],
    o: &FisherOptions,
) -> Result<Vec<f64>, String> {
    let mut out = w.to_vec();
    // The summed form divides by [F⁻¹]_qq, per block as the update itself.
    let diag = match o.update {
        Update::Summed => inverse_diagonal(lg, w.len(), o)?,
        Update::Joint => Vec::new(),
    };
    for r in blocks(w.len(), o.block) {
        let kept: Vec<usize> = r.clone().filter(|&q| keep[q]).collect();
        let pruned: Vec<usize> = r.clone().filter(|&q| !keep[q]).collect();
        if pruned.is_empty() {
            continue;
        }
        match o.update {
            Update::Joint => {
                if kept.is_empty() {
                    continue;
                }
                // F_SQ·w_Q = (1/m)·G_S·(G_Qᵀ·w_Q): the damping has no cross terms.
                let m = lg.g.len();
                let c: Vec<f64> = (0..m)
                    .map(|j| pruned.iter().map(|&q| lg.g[j][q] as f64 * w[q]).sum())
                    .collect();
                let u: Vec<f64> = kept
                    .iter()
                    .map(|&q| (0..m).map(|j| lg.g[j][q] as f64 * c[j]).sum::<f64>() / m as f64)
                    .collect();
                let llt = gram(lg, &kept, o.damp)?;
                let d = apply_inverse(lg, &kept, &llt, o.damp, &u);
                for (&q, dq) in kept.iter().zip(d) {
                    out[q] += dq;
                }
            }
            Update::Summed => {
                let idx: Vec<usize> = r.clone().collect();
                let v: Vec<f64> = idx
                    .iter()
                    .map(|&q| if keep[q] { 0.0 } else { w[q] / diag[q] })
                    .collect();
                let llt = gram(lg, &idx, o.damp)?;
                let d = apply_inverse(lg, &idx, &llt, o.damp, &v);
                for (&q, dq) in idx.iter().zip(d) {
                    out[q] -= dq;
                }
            }
        }
    }
    for (x, &k) in out.iter_mut().zip(keep) {
        if !k {
            *x = 0.0;
        }
    }
    if let Some(q) = out.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "WoodFisher update is not finite at weight {q} (raise --fisher-damp)"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense_fisher(lg: &LayerGradients, d: usize, damp: f64) -> Vec<Vec<f64>> {
        let m = lg.g.len() as f64;
        (0..d)
            .map(|a| {
                (0..d)
                    .map(|b| {
                        lg.g.iter().map(|g| g[a] as f64 * g[b] as f64).sum::<f64>() / m
                            + if a == b { damp } else { 0.0 }
                    })
                    .collect()
            })
            .collect()
    }

    fn invert(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let n = a.len();
        let m = Mat::<f64>::from_fn(n, n, |i, j| a[i][j]);
        let llt = m.llt(faer::Side::Lower).expect("spd");
        let mut inv = Mat::<f64>::identity(n, n);
        llt.solve_in_place_with_conj(faer::Conj::No, inv.as_mut());
        (0..n)
            .map(|i| (0..n).map(|j| inv[(i, j)]).collect())
            .collect()
    }

    fn sample(d: usize, m: usize, seed: u64) -> LayerGradients {
        let mut rng = crate::autodiff::rng::SplitMix64::new(seed);
        LayerGradients {
            g: (0..m)
                .map(|_| (0..d).map(|_| rng.normal() as f32).collect())
                .collect(),
        }
    }

    #[test]
    fn inverse_diagonal_matches_the_dense_inverse() {
        let (d, m, damp) = (12, 5, 1e-2);
        let lg = sample(d, m, 1);
        let inv = invert(&dense_fisher(&lg, d, damp));
        let o = FisherOptions {
            damp,
            ..Default::default()
        };
        let diag = inverse_diagonal(&lg, d, &o).unwrap();
        for q in 0..d {
            assert!((diag[q] - inv[q][q]).abs() < 1e-6 * inv[q][q].abs(), "{q}");
        }
    }

    #[test]
    fn joint_update_is_the_constrained_minimiser() {
        // min ½(w'−w)ᵀF(w'−w) s.t. w'_Q = 0, solved densely: w'_S = w_S + F_SS⁻¹F_SQ w_Q.
        let (d, m, damp) = (10, 14, 1e-1);
        let lg = sample(d, m, 2);
        let w: Vec<f64> = (0..d).map(|i| (i as f64 * 0.37).sin()).collect();
        let keep: Vec<bool> = (0..d).map(|i| i % 3 != 0).collect();
        let f = dense_fisher(&lg, d, damp);
        let s: Vec<usize> = (0..d).filter(|&i| keep[i]).collect();
        let q: Vec<usize> = (0..d).filter(|&i| !keep[i]).collect();
        let fss: Vec<Vec<f64>> = s
            .iter()
            .map(|&a| s.iter().map(|&b| f[a][b]).collect())
            .collect();
        let inv = invert(&fss);
        let rhs: Vec<f64> = s
            .iter()
            .map(|&a| q.iter().map(|&b| f[a][b] * w[b]).sum())
            .collect();
        let o = FisherOptions {
            damp,
            ..Default::default()
        };
        let got = update(&lg, &w, &keep, &o).unwrap();
        for (i, &a) in s.iter().enumerate() {
            let want = w[a] + (0..s.len()).map(|k| inv[i][k] * rhs[k]).sum::<f64>();
            assert!((got[a] - want).abs() < 1e-8, "{a}: {} vs {want}", got[a]);
        }
        assert!(q.iter().all(|&b| got[b] == 0.0));
    }

    #[test]
    fn summed_update_of_one_weight_equals_the_joint_one() {
        let (d, m, damp) = (8, 6, 1e-2);
        let lg = sample(d, m, 3);
        let w: Vec<f64> = (0..d).map(|i| 1.0 + i as f64).collect();
        let mut keep = vec![true; d];
        keep[4] = false;
        let joint = update(
            &lg,
            &w,
            &keep,
            &FisherOptions {
                damp,
                ..Default::default()
            },
        )
        .unwrap();
        let summed = update(
            &lg,
            &w,
            &keep,
            &FisherOptions {
                damp,
                update: Update::Summed,
                ..Default::default()
            },
        )
        .unwrap();
        for q in 0..d {
            assert!(
                (joint[q] - summed[q]).abs() < 1e-6 * (1.0 + joint[q].abs()),
                "{q}"
            );
        }
    }

    #[test]
    fn blocks_ignore_cross_block_terms() {
        let (d, m, damp) = (9, 4, 1e-2);
        let lg = sample(d, m, 4);
        let o = FisherOptions {
            damp,
            block: 3,
            ..Default::default()
        };
        let diag = inverse_diagonal(&lg, d, &o).unwrap();
        let second = LayerGradients {
            g: lg.g.iter().map(|g| g[3..6].to_vec()).collect(),
        };
        let inv = invert(&dense_fisher(&second, 3, damp));
        for i in 0..3 {
            assert!((diag[3 + i] - inv[i][i]).abs() < 1e-6 * inv[i][i]);
        }
    }
}
