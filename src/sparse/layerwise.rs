//! Layer-wise reconstruction of one layer's dense output from its current inputs (the network
//! with the earlier layers already pruned): statistics, and the two solvers on a mask —
//! least squares restricted to each row's support (MP+ / SNOWS' warm start) and the
//! column-sequential OBS update (SparseGPT's row-wise Cholesky formulation), which can also
//! choose the mask as it goes.
//!
//! Weights are rows × cols (outputs × inputs·taps, `compensate::Layer::rows`); targets are the
//! dense layer's outputs without its bias (the bias is kept).

use super::mask::{Pattern, count};
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::prune::compensate::{Layer, Xtx, columns, matmul_t};
use rayon::prelude::*;

/// G = XᵀX/n, C = Tᵀ X/n (rows × cols) and ‖T‖²/n over the sampled input vectors.
pub struct Stats {
    pub cols: usize,
    pub rows: usize,
    pub gram: Vec<f64>,
    pub cross: Vec<f64>,
    pub tnorm: f64,
    pub samples: usize,
}

/// Where a layer's input on one batch comes from: the interpreter on a prefix sub-graph whose
/// only output it is, or onnxruntime (`super::ort_inputs`, partial support).
pub(crate) trait LayerInput {
    /// The input on batch `batch` of the pass, whose feeds are `f`.
    fn input(&self, batch: usize, f: &Feeds<f32>) -> Result<ndarray::ArrayD<f32>>;
}

impl LayerInput for Engine<'_, f32> {
    fn input(&self, _: usize, f: &Feeds<f32>) -> Result<ndarray::ArrayD<f32>> {
        self.run(f.clone())?
            .remove(0)
            .as_float()
            .map(|a| a.to_owned())
            .ok_or_else(|| Error::Runtime("a layer input is not float".into()))
    }
}

/// Per-group statistics of a grouped conv: group g's output rows read only its own input
/// channels, so each group is an ungrouped conv on its slice of the input.
pub(crate) fn gather_grouped(
    current: &dyn LayerInput,
    dense: &dyn LayerInput,
    batches: &[Feeds<f32>],
    layer: &Layer,
    w_dense: &[f64],
    budget: usize,
) -> Result<Vec<Stats>> {
    use crate::ir::Op;
    let Op::Conv { window, group } = &layer.op else {
        return Err(Error::Runtime("grouped statistics are for convs".into()));
    };
    let groups = (*group).max(1);
    let (rows_g, k) = (layer.cout / groups, layer.kfull);
    let mut w_shape = layer.w_shape.clone();
    w_shape[0] = rows_g;
    let sub = Layer {
        op: Op::Conv {
            window: window.clone(),
            group: 1,
        },
        w_shape,
        cout: rows_g,
        kfull: k,
        taps: layer.taps,
    };
    let cg = k / layer.taps.max(1);
    let mut out: Vec<Stats> = (0..groups)
        .map(|_| Stats {
            cols: k,
            rows: rows_g,
            gram: vec![0.0; k * k],
            cross: vec![0.0; rows_g * k],
            tnorm: 0.0,
            samples: 0,
        })
        .collect();
    for (b, f) in batches.iter().enumerate() {
        let (xp, xd) = (current.input(b, f)?, dense.input(b, f)?);
        for (gi, st) in out.iter_mut().enumerate() {
            let sl = |x: &ndarray::ArrayD<f32>| {
                x.slice_axis(
                    ndarray::Axis(1),
                    ndarray::Slice::from(gi * cg..(gi + 1) * cg),
                )
                .to_owned()
            };
            let (cp, _, np) = columns(&sub.op, &sl(&xp), &sub.w_shape, budget)?;
            let (cd, _, nd) = columns(&sub.op, &sl(&xd), &sub.w_shape, budget)?;
            let wg = &w_dense[gi * rows_g * k..(gi + 1) * rows_g * k];
            let t = matmul_t(&cd, nd, k, wg, rows_g);
            st.tnorm += t.iter().map(|v| v * v).sum::<f64>();
            for r in 0..np {
                for o in 0..rows_g {
                    let tv = t[r * rows_g + o];
                    let c = &mut st.cross[o * k..(o + 1) * k];
                    for (cv, xv) in c.iter_mut().zip(&cp[r * k..(r + 1) * k]) {
                        *cv += tv * xv;
                    }
                }
            }
            f64::gemm_xtx(&cp, np, k, &mut st.gram);
            st.samples += np;
        }
    }
    for st in &mut out {
        let inv = 1.0 / st.samples.max(1) as f64;
        st.gram.iter_mut().for_each(|v| *v *= inv);
        st.cross.iter_mut().for_each(|v| *v *= inv);
        st.tnorm *= inv;
    }
    Ok(out)
}

impl Stats {
    /// Gathers the statistics: `current` computes the layer's input in the network as pruned so
    /// far, `dense` in the original one; `w_dense` are the original rows.
    pub(crate) fn gather(
        current: &dyn LayerInput,
        dense: &dyn LayerInput,
        batches: &[Feeds<f32>],
        layer: &Layer,
        w_dense: &[f64],
        budget: usize,
    ) -> Result<Stats> {
        let (rows, k) = (layer.cout, layer.kfull);
        let mut gram = vec![0.0f64; k * k];
        let mut cross = vec![0.0f64; rows * k];
        let (mut tnorm, mut samples) = (0.0, 0usize);
        for (b, f) in batches.iter().enumerate() {
            let (xp, xd) = (current.input(b, f)?, dense.input(b, f)?);
            let (cp, kp, np) = columns(&layer.op, &xp, &layer.w_shape, budget)?;
            let (cd, _, nd) = columns(&layer.op, &xd, &layer.w_shape, budget)?;
            if kp != k || np != nd {
                return Err(Error::Runtime(format!(
                    "layer input columns {kp} × {np} do not match the weight's {k} inputs"
                )));
            }
            let t = matmul_t(&cd, nd, k, w_dense, rows);
            tnorm += t.iter().map(|v| v * v).sum::<f64>();
            if np > 0 {
                use crate::tensor::{MatRef, Real};
                <f64 as Real>::gemm(
                    rows,
                    k,
                    np,
                    MatRef::row_major(&t, rows, true),
                    MatRef::row_major(&cp, k, false),
                    &mut cross,
                    k,
                    true,
                    1.0,
                    true,
                );
            }
            f64::gemm_xtx(&cp, np, k, &mut gram);
            samples += np;
        }
        let inv = 1.0 / samples.max(1) as f64;
        gram.iter_mut().for_each(|v| *v *= inv);
        cross.iter_mut().for_each(|v| *v *= inv);
        Ok(Stats {
            cols: k,
            rows,
            gram,
            cross,
            tnorm: tnorm * inv,
            samples,
        })
    }

    /// Relative reconstruction error ‖XWᵀ − T‖ / ‖T‖ of rows `w`.
    pub fn error(&self, w: &[f64]) -> f64 {
        let k = self.cols;
        let e: f64 = (0..self.rows)
            .into_par_iter()
            .map(|o| {
                let wr = &w[o * k..(o + 1) * k];
                let mut gw = 0.0;
                for i in 0..k {
                    if wr[i] != 0.0 {
                        let g = &self.gram[i * k..(i + 1) * k];
                        gw += wr[i] * g.iter().zip(wr).map(|(a, b)| a * b).sum::<f64>();
                    }
                }
                let c = &self.cross[o * k..(o + 1) * k];
                gw - 2.0 * wr.iter().zip(c).map(|(a, b)| a * b).sum::<f64>()
            })
            .sum();
        ((self.tnorm + e).max(0.0) / self.tnorm.max(1e-30)).sqrt()
    }

    /// G + λI with λ = damp · mean(diag G); inputs never seen (zero diagonal) get 1 so they
    /// factorise and come out zero.
    fn damped(&self, damp: f64) -> (Vec<f64>, f64) {
        let k = self.cols;
        let mean = (0..k).map(|i| self.gram[i * k + i]).sum::<f64>() / k.max(1) as f64;
        let lambda = damp * mean.max(1e-12);
        let mut h = self.gram.clone();
        for i in 0..k {
            if h[i * k + i] == 0.0 {
                h[i * k + i] = 1.0;
            }
            h[i * k + i] += lambda;
        }
        (h, lambda)
    }
}

/// Cholesky with tenfold damping retries: (factor, extra diagonal added, retries).
fn cholesky(h: &[f64], k: usize, base: f64) -> Result<(faer::linalg::solvers::Llt<f64>, usize)> {
    let mut extra = 0.0;
    for retry in 0..8 {
        let a =
            faer::Mat::<f64>::from_fn(k, k, |i, j| h[i * k + j] + if i == j { extra } else { 0.0 });
        if let Ok(llt) = a.llt(faer::Side::Lower) {
            return Ok((llt, retry));
        }
        extra = if extra == 0.0 {
            base.max(1e-10) * 10.0
        } else {
            extra * 10.0
        };
    }
    Err(Error::Runtime(
        "a layer Hessian did not factorise even with heavy damping".into(),
    ))
}

/// Least squares on each row's support: w_S = (G_SS + λI)⁻¹ c_S, zeros elsewhere. Returns the
/// rows and the Cholesky retries.
pub fn lsq(s: &Stats, keep: &[bool], damp: f64) -> Result<(Vec<f64>, usize)> {
    let k = s.cols;
    let (h, lambda) = s.damped(damp);
    let rows: Vec<Result<(Vec<f64>, usize)>> = (0..s.rows)
        .into_par_iter()
        .map(|o| {
            let sup: Vec<usize> = (0..k).filter(|&i| keep[o * k + i]).collect();
            let mut w = vec![0.0f64; k];
            if sup.is_empty() {
                return Ok((w, 0));
            }
            let m = sup.len();
            let sub: Vec<f64> = sup
                .iter()
                .flat_map(|&i| sup.iter().map(move |&j| (i, j)))
                .map(|(i, j)| h[i * k + j])
                .collect();
            let (llt, retries) = cholesky(&sub, m, lambda)?;
            let mut rhs = faer::Mat::<f64>::from_fn(m, 1, |i, _| s.cross[o * k + sup[i]]);
            faer::linalg::solvers::SolveCore::solve_in_place_with_conj(
                &llt,
                faer::Conj::No,
                rhs.as_mut(),
            );
            for (i, &c) in sup.iter().enumerate() {
                w[c] = rhs[(i, 0)];
            }
            Ok((w, retries))
        })
        .collect();
    let mut out = Vec::with_capacity(s.rows * k);
    let mut retries = 0;
    for r in rows {
        let (w, t) = r?;
        out.extend(w);
        retries += t;
    }
    Ok((out, retries))
}

/// How the OBS pass decides what to prune.
pub enum ObsMask<'a> {
    /// A given keep-mask.
    Fixed(&'a [bool]),
    /// Chosen as the columns are processed by the OBS saliency w²/[H⁻¹]_qq (SparseGPT's
    /// adaptive selection): `Sparsity` jointly over all rows in blocks of `block` columns,
    /// with exact cumulative counts; `NM` per group of the pattern.
    Adaptive(Pattern),
}

/// The OBS update from the unconstrained least-squares optimum W* = C·H⁻¹: columns in `order`
/// one at a time; pruning q in a row moves the row's later columns by −(w_q/U_qq)·U_q,·
/// with H⁻¹ = UᵀU (upper Cholesky factor of the inverse, in `order`). Returns the rows,
/// the keep-mask used and the Cholesky retries.
pub fn obs(
    s: &Stats,
    mask: ObsMask,
    order: &[usize],
    nm_start: &[Option<usize>],
    damp: f64,
) -> Result<(Vec<f64>, Vec<bool>, usize)> {
    let (k, rows) = (s.cols, s.rows);
    let (h, lambda) = s.damped(damp);
    // Permuted H.
    let h = &h;
    let hp: Vec<f64> = order
        .iter()
        .flat_map(|&i| order.iter().map(move |&j| h[i * k + j]))
        .collect();
    let (llt, retries) = cholesky(&hp, k, lambda)?;
    // W* rows in the permuted order: solve H x = c per row.
    let mut rhs = faer::Mat::<f64>::from_fn(k, rows, |i, o| s.cross[o * k + order[i]]);
    faer::linalg::solvers::SolveCore::solve_in_place_with_conj(&llt, faer::Conj::No, rhs.as_mut());
    let mut w: Vec<f64> = (0..rows)
        .flat_map(|o| (0..k).map(move |i| (o, i)))
        .map(|(o, i)| rhs[(i, o)])
        .collect();
    // H⁻¹ = L⁻ᵀ L⁻¹; its upper Cholesky factor U (H⁻¹ = UᵀU) from the inverse.
    let mut inv = faer::Mat::<f64>::identity(k, k);
    faer::linalg::solvers::SolveCore::solve_in_place_with_conj(&llt, faer::Conj::No, inv.as_mut());
    let sym = faer::Mat::<f64>::from_fn(k, k, |i, j| 0.5 * (inv[(i, j)] + inv[(j, i)]));
    let u_low = match sym.llt(faer::Side::Lower) {
        Ok(l) => l.L().to_owned(),
        Err(_) => {
            return Err(Error::Runtime(
                "the inverse layer Hessian is not positive definite: raise --damp".into(),
            ));
        }
    };
    // U = Lᵀ of H⁻¹'s lower factor: U[i][j] = u_low[(j, i)] for j ≥ i.
    let u = |i: usize, j: usize| u_low[(j, i)];
    let mut keep = match &mask {
        ObsMask::Fixed(m) => (0..rows)
            .flat_map(|o| order.iter().map(move |&c| m[o * k + c]))
            .collect::<Vec<bool>>(),
        ObsMask::Adaptive(_) => vec![true; rows * k],
    };
    let block = 128usize;
    let mut i1 = 0;
    while i1 < k {
        let i2 = (i1 + block).min(k);
        if let ObsMask::Adaptive(Pattern::Sparsity(sp)) = mask {
            let n = count(rows * i2, sp) - count(rows * i1, sp);
            let mut cand: Vec<(f64, usize, usize)> = (0..rows)
                .flat_map(|o| (i1..i2).map(move |i| (o, i)))
                .map(|(o, i)| {
                    let d = u(i, i);
                    (w[o * k + i].powi(2) / (d * d), o, i)
                })
                .collect();
            cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            for &(_, o, i) in &cand[..n.min(cand.len())] {
                keep[o * k + i] = false;
            }
        }
        for i in i1..i2 {
            if let (ObsMask::Adaptive(Pattern::NM(nk, m)), Some(g0)) = (&mask, nm_start[i])
                && g0 == i
            {
                for o in 0..rows {
                    let mut idx: Vec<usize> = (i..i + m).collect();
                    idx.sort_by(|&a, &b| {
                        let sa = w[o * k + a].powi(2) / u(a, a).powi(2);
                        let sb = w[o * k + b].powi(2) / u(b, b).powi(2);
                        sa.total_cmp(&sb).then(a.cmp(&b))
                    });
                    for &c in &idx[..m - nk] {
                        keep[o * k + c] = false;
                    }
                }
            }
            let d = u(i, i);
            let urow: Vec<f64> = (i..k).map(|j| u(i, j)).collect();
            w.par_chunks_mut(k).enumerate().for_each(|(o, wr)| {
                if keep[o * k + i] {
                    return;
                }
                let err = wr[i] / d;
                for (j, uj) in (i..k).zip(&urow) {
                    wr[j] -= err * uj;
                }
                wr[i] = 0.0;
            });
        }
        i1 = i2;
    }
    // Back to the natural column order.
    let mut out = vec![0.0f64; rows * k];
    let mut keep_out = vec![true; rows * k];
    for o in 0..rows {
        for (p, &c) in order.iter().enumerate() {
            out[o * k + c] = if keep[o * k + p] { w[o * k + p] } else { 0.0 };
            keep_out[o * k + c] = keep[o * k + p];
        }
    }
    Ok((out, keep_out, retries))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistics from explicit X (n × k) and targets T = X·W̄ᵀ.
    fn stats(x: &[f64], n: usize, k: usize, wbar: &[f64], rows: usize) -> Stats {
        let t = matmul_t(x, n, k, wbar, rows);
        let mut gram = vec![0.0; k * k];
        f64::gemm_xtx(x, n, k, &mut gram);
        let mut cross = vec![0.0; rows * k];
        for o in 0..rows {
            for i in 0..k {
                cross[o * k + i] = (0..n).map(|r| t[r * rows + o] * x[r * k + i]).sum();
            }
        }
        let inv = 1.0 / n as f64;
        Stats {
            cols: k,
            rows,
            gram: gram.iter().map(|v| v * inv).collect(),
            cross: cross.iter().map(|v| v * inv).collect(),
            tnorm: t.iter().map(|v| v * v).sum::<f64>() * inv,
            samples: n,
        }
    }

    fn data(n: usize, k: usize, rows: usize) -> (Vec<f64>, Vec<f64>) {
        let mut r = crate::autodiff::rng::SplitMix64::new(5);
        let x: Vec<f64> = (0..n * k).map(|_| r.normal()).collect();
        let w: Vec<f64> = (0..rows * k).map(|_| r.normal()).collect();
        (x, w)
    }

    #[test]
    fn lsq_is_optimal_on_the_support_and_obs_matches_it_for_one_pruned_weight() {
        let (n, k, rows) = (200, 12, 3);
        let (x, wbar) = data(n, k, rows);
        let s = stats(&x, n, k, &wbar, rows);
        let mut keep = vec![true; rows * k];
        for o in 0..rows {
            keep[o * k + (o + 2) % k] = false;
        }
        let (w, _) = lsq(&s, &keep, 1e-12).unwrap();
        let e = s.error(&w);
        // Any perturbation on the support raises the error.
        for o in 0..rows {
            for i in [0usize, 5, 9] {
                if !keep[o * k + i] {
                    continue;
                }
                let mut w2 = w.clone();
                w2[o * k + i] += 1e-3;
                assert!(s.error(&w2) >= e - 1e-12);
            }
        }
        // One pruned weight per row, processed first: the sequential OBS update from the
        // optimum then reaches every other weight, so it equals the LS refit.
        let order: Vec<usize> = (0..k)
            .map(|p| {
                if p == 0 {
                    2
                } else if p <= 2 {
                    p - 1
                } else {
                    p
                }
            })
            .collect();
        let mut keep = vec![true; rows * k];
        for o in 0..rows {
            keep[o * k + 2] = false;
        }
        let (w, _) = lsq(&s, &keep, 1e-12).unwrap();
        let (wo, ko, _) = obs(&s, ObsMask::Fixed(&keep), &order, &vec![None; k], 1e-12).unwrap();
        assert_eq!(ko, keep);
        let diff = w
            .iter()
            .zip(&wo)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-8, "{diff}");
    }

    #[test]
    fn adaptive_obs_hits_the_exact_sparsity_and_beats_magnitude() {
        let (n, k, rows) = (400, 40, 6);
        let (mut x, wbar) = data(n, k, rows);
        // Correlated inputs make the Hessian matter.
        for r in 0..n {
            for i in 1..k {
                x[r * k + i] += 0.8 * x[r * k + i - 1];
            }
        }
        let s = stats(&x, n, k, &wbar, rows);
        let order: Vec<usize> = (0..k).collect();
        let (w, keep, _) = obs(
            &s,
            ObsMask::Adaptive(Pattern::Sparsity(0.7)),
            &order,
            &vec![None; k],
            1e-8,
        )
        .unwrap();
        assert_eq!(keep.iter().filter(|x| !**x).count(), count(rows * k, 0.7));
        assert!(w.iter().zip(&keep).all(|(v, k)| *k || *v == 0.0));
        let mut mag = wbar.clone();
        let mut idx: Vec<usize> = (0..rows * k).collect();
        idx.sort_by(|&a, &b| wbar[a].abs().total_cmp(&wbar[b].abs()));
        for &i in &idx[..count(rows * k, 0.7)] {
            mag[i] = 0.0;
        }
        let (eo, em) = (s.error(&w), s.error(&mag));
        assert!(eo < 0.8 * em, "obs {eo} vs magnitude {em}");
    }
}
