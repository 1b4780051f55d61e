//! Rank-r implants for linear layers: the implanted units' outputs y_S ≈ A·B·x + b from the
//! kept inputs, fitted on calibration data by reduced-rank regression. With the (centred,
//! ridge-damped) input covariance G = L·Lᵀ and cross-covariance C = E[y xᵀ], the error
//! E‖y − W x‖² is ‖W L − C L⁻ᵀ‖²_F + const, so the best rank-r W is the truncated SVD of
//! M = C L⁻ᵀ mapped back: W = [M]_r L⁻¹ (Eckart–Young in the whitened space). The bias stays
//! outside the rank constraint: b = ȳ − W x̄.
//!
//! In the network at its original shapes the implanted rows of the producer's weight become W
//! (rank r); the rewrite factors them again by SVD (exact, since their rank is r) and emits the
//! two thin MatMuls.

use super::compensate::{Bias, CompensateOptions, ImplantRow, Layer, Network, bias_of, columns};
use crate::error::{Error, Result};
use crate::interp::{Engine, Feeds};
use crate::ir::{Graph, Op, ValueId};
use crate::tensor::Data;
use std::collections::BTreeSet;

/// Lower Cholesky factor of a k×k SPD matrix given row-major, with tenfold damping retries.
fn cholesky(mut g: Vec<f64>, k: usize, damp: f64) -> Result<(faer::Mat<f64>, f64)> {
    let mean = (0..k).map(|i| g[i * k + i]).sum::<f64>() / k.max(1) as f64;
    let mut lambda = damp * mean.max(1e-12);
    for _ in 0..6 {
        for i in 0..k {
            g[i * k + i] += lambda;
        }
        let m = faer::Mat::<f64>::from_fn(k, k, |i, j| g[i * k + j]);
        if let Ok(llt) = m.llt(faer::Side::Lower) {
            return Ok((llt.L().to_owned(), lambda));
        }
        for i in 0..k {
            g[i * k + i] -= lambda;
        }
        lambda *= 10.0;
    }
    Err(Error::Runtime(
        "the implant's input covariance did not factorise even with heavy damping".into(),
    ))
}

/// The best rank-r map from inputs with covariance `g` (k×k) to outputs with cross-covariance
/// `c` (s×k, rows of E[y xᵀ]): W (s×k, row-major) of rank ≤ r minimising tr((W−W*)G(W−W*)ᵀ).
/// Returns W and the damping used.
pub(crate) fn reduced_rank(
    g: Vec<f64>,
    c: &[f64],
    k: usize,
    s: usize,
    r: usize,
    damp: f64,
) -> Result<(Vec<f64>, f64)> {
    let (l, lambda) = cholesky(g, k, damp)?;
    // Blocked triangular solves: row-by-row substitution read L by columns with a stride of
    // k doubles and took minutes on AlexNet's fc6 (k = 9216).
    // Mᵀ = L⁻¹ Cᵀ (M = C L⁻ᵀ).
    let mut mt = faer::Mat::<f64>::from_fn(k, s, |i, j| c[j * k + i]);
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(
        l.as_ref(),
        mt.as_mut(),
        faer::Par::rayon(0),
    );
    let svd = mt
        .transpose()
        .thin_svd()
        .map_err(|e| Error::Runtime(format!("implant SVD: {e:?}")))?;
    let (u, sv, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let r = r.min(s).min(k);
    // Wᵀ = L⁻ᵀ [M]_rᵀ (W = [M]_r L⁻¹).
    let vs = faer::Mat::<f64>::from_fn(k, r, |j, q| v[(j, q)] * sv[q]);
    let mut wt = &vs * u.subcols(0, r).transpose();
    faer::linalg::triangular_solve::solve_upper_triangular_in_place(
        l.transpose(),
        wt.as_mut(),
        faer::Par::rayon(0),
    );
    let w: Vec<f64> = (0..s * k).map(|p| wt[(p % k, p / k)]).collect();
    Ok((w, lambda))
}

/// Rank-r factors of `w` (s×k, row-major, rank ≤ r): A (s×r) and B (r×k) with A·B = w.
pub(crate) fn factor(w: &[f64], s: usize, k: usize, r: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let r = r.min(s).min(k);
    let mm = faer::Mat::<f64>::from_fn(s, k, |i, j| w[i * k + j]);
    let svd = mm
        .thin_svd()
        .map_err(|e| Error::Runtime(format!("implant SVD: {e:?}")))?;
    let (u, sv, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let a: Vec<f64> = (0..s * r).map(|p| u[(p / r, p % r)] * sv[p % r]).collect();
    let b: Vec<f64> = (0..r * k).map(|p| v[(p % k, p / k)]).collect();
    Ok((a, b))
}

/// Flat index of weight element (output unit `c`, input `i`) of a linear producer.
pub(crate) fn at(op: &Op, w_shape: &[usize], c: usize, i: usize) -> usize {
    match op {
        Op::Gemm { trans_b: true, .. } => c * w_shape[1] + i,
        _ => i * w_shape[1] + c,
    }
}

/// Fits a rank-r implant of a linear producer's units `imp.units` on the current network's
/// input to it (kept inputs only) against the dense outputs `dense_y` (per batch, columns ×
/// outputs, bias included); writes the rank-r rows and their bias into `net`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit(
    g: &Graph,
    current: &Engine<f32>,
    batches: &[Feeds<f32>],
    dense_y: &[Vec<f32>],
    imp: &super::implant::Implant,
    weight: ValueId,
    gone: &BTreeSet<usize>,
    l: &Layer,
    net: &mut Network,
    o: &CompensateOptions,
    budget: usize,
) -> Result<ImplantRow> {
    let (cout, kin) = (l.cout, l.kfull);
    let kept: Vec<usize> = (0..kin).filter(|i| !gone.contains(i)).collect();
    let k = kept.len();
    let s = &imp.units;
    let ns = s.len();
    let r = imp.rank.unwrap_or(1).max(1);
    let bias = bias_of(g, imp.producer, cout);
    let use_bias = !matches!(bias, Bias::None);
    let (mut xs, mut ys) = (Vec::<f64>::new(), Vec::<f64>::new());
    for (f, yd) in batches.iter().zip(dense_y) {
        let xv = current
            .run(f.clone())?
            .remove(0)
            .as_float()
            .ok_or_else(|| Error::Runtime("an implant's input is not float".into()))?
            .to_owned();
        let (cols, _, np) = columns(&l.op, &xv, &l.w_shape, budget)?;
        for row in 0..np {
            xs.extend(kept.iter().map(|&i| cols[row * kin + i]));
            ys.extend(s.iter().map(|&c| yd[row * cout + c] as f64));
        }
    }
    let n = xs.len() / k.max(1);
    if n == 0 {
        return Err(Error::Runtime(
            "no calibration columns for an implant".into(),
        ));
    }
    let inv = 1.0 / n as f64;
    let (mut xm, mut ym) = (vec![0.0; k], vec![0.0; ns]);
    if use_bias {
        for row in 0..n {
            for j in 0..k {
                xm[j] += xs[row * k + j] * inv;
            }
            for j in 0..ns {
                ym[j] += ys[row * ns + j] * inv;
            }
        }
    }
    let mut gram = vec![0.0; k * k];
    let mut cross = vec![0.0; ns * k];
    for row in 0..n {
        let x = &xs[row * k..(row + 1) * k];
        let y = &ys[row * ns..(row + 1) * ns];
        for i in 0..k {
            let xi = x[i] - xm[i];
            for j in 0..k {
                gram[i * k + j] += xi * (x[j] - xm[j]) * inv;
            }
            for (q, yq) in y.iter().enumerate() {
                cross[q * k + i] += (yq - ym[q]) * xi * inv;
            }
        }
    }
    // Dead inputs (zero variance) carry nothing: unit diagonal keeps G invertible.
    for i in 0..k {
        if gram[i * k + i] == 0.0 {
            gram[i * k + i] = 1.0;
        }
    }
    let (w, _) = reduced_rank(gram, &cross, k, ns, r, o.damp)?;
    let b: Vec<f64> = (0..ns)
        .map(|q| ym[q] - (0..k).map(|j| w[q * k + j] * xm[j]).sum::<f64>())
        .collect();
    let (mut err, mut norm) = (0.0, 0.0);
    for row in 0..n {
        for q in 0..ns {
            let pred: f64 = b[q] + (0..k).map(|j| w[q * k + j] * xs[row * k + j]).sum::<f64>();
            let y = ys[row * ns + q];
            err += (pred - y).powi(2);
            norm += y * y;
        }
    }
    let mut wt = net.get(weight);
    if let Data::Float(arr) = &mut wt.data {
        let flat = arr.as_slice_mut().expect("standard layout weights");
        for (q, &c) in s.iter().enumerate() {
            for i in 0..kin {
                flat[at(&l.op, &l.w_shape, c, i)] = 0.0;
            }
            for (j, &i) in kept.iter().enumerate() {
                flat[at(&l.op, &l.w_shape, c, i)] = w[q * k + j] as f32;
            }
        }
    }
    net.weights.insert(weight, wt);
    let target = match &bias {
        Bias::Own(id) | Bias::AddAfter(id) => Some((*id, false)),
        Bias::BnMean(id) => Some((*id, true)),
        Bias::None => None,
    };
    if let Some((id, is_mean)) = target {
        let mut t = net.get(id);
        let orig = g.weights[&id].tensor.to_f64_vec();
        if let Data::Float(arr) = &mut t.data {
            let flat = arr.as_slice_mut().expect("standard layout bias");
            for (q, &c) in s.iter().enumerate() {
                // BN(y + b) is BN with mean μ − b.
                flat[c] = if is_mean { orig[c] - b[q] } else { b[q] } as f32;
            }
        }
        net.weights.insert(id, t);
    }
    let own = usize::from(matches!(bias, Bias::Own(_)));
    Ok(ImplantRow {
        layer: crate::analysis::groups::node_name(g, imp.producer),
        kind: format!("rank {}", r.min(ns).min(k)),
        channels: ns,
        inputs: k,
        params: r.min(ns).min(k) * (k + ns) + own * ns,
        params_replaced: ns * (kin + own),
        error: (err / f64::max(norm, 1e-30)).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    fn moments(x: &[f64], y: &[f64], n: usize, k: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
        let (mut g, mut c) = (vec![0.0; k * k], vec![0.0; s * k]);
        for row in 0..n {
            for i in 0..k {
                for j in 0..k {
                    g[i * k + j] += x[row * k + i] * x[row * k + j] / n as f64;
                }
                for q in 0..s {
                    c[q * k + i] += y[row * s + q] * x[row * k + i] / n as f64;
                }
            }
        }
        (g, c)
    }

    // A rank-r map is recovered exactly from correlated inputs, and its factors multiply back.
    #[test]
    fn reduced_rank_regression_recovers_a_low_rank_map() {
        let (n, k, s, r) = (200, 12, 7, 2);
        let mut seed = 1;
        let mix: Vec<f64> = (0..k * k).map(|_| lcg(&mut seed)).collect();
        let z: Vec<f64> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let mut x = vec![0.0; n * k];
        for row in 0..n {
            for i in 0..k {
                x[row * k + i] = (0..k).map(|j| z[row * k + j] * mix[j * k + i]).sum();
            }
        }
        let (a0, b0): (Vec<f64>, Vec<f64>) = (
            (0..s * r).map(|_| lcg(&mut seed)).collect(),
            (0..r * k).map(|_| lcg(&mut seed)).collect(),
        );
        let w0: Vec<f64> = (0..s * k)
            .map(|p| (0..r).map(|q| a0[p / k * r + q] * b0[q * k + p % k]).sum())
            .collect();
        let mut y = vec![0.0; n * s];
        for row in 0..n {
            for q in 0..s {
                y[row * s + q] = (0..k).map(|j| w0[q * k + j] * x[row * k + j]).sum();
            }
        }
        let (g, c) = moments(&x, &y, n, k, s);
        let (w, _) = reduced_rank(g.clone(), &c, k, s, r, 1e-12).unwrap();
        let worst = w
            .iter()
            .zip(&w0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "rank-{r} map recovered to {worst:.2e}");
        let (a, b) = factor(&w, s, k, r).unwrap();
        let back: Vec<f64> = (0..s * k)
            .map(|p| (0..r).map(|q| a[p / k * r + q] * b[q * k + p % k]).sum())
            .collect();
        let worst = back
            .iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-9, "factors multiply back to {worst:.2e}");
        // A lower rank than the map's cannot fit it, and does no better than rank r.
        let (w1, _) = reduced_rank(g, &c, k, s, 1, 1e-12).unwrap();
        let err1: f64 = w1.iter().zip(&w0).map(|(a, b)| (a - b).powi(2)).sum();
        assert!(err1 > 1e-3, "a rank-1 map fits a rank-2 one: {err1:.2e}");
    }
}
