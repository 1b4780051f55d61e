//! Backward rules of normalisations and Softmax.

use super::util::*;
use crate::interp::ops::util::{axis, standard, view_as};
use crate::tensor::{Arr, Real, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;

fn channel<S: Real>(inputs: &[Option<&Tensor<S>>], i: usize) -> Result<Vec<S>, String> {
    Ok(fin(inputs, i)?.iter().copied().collect())
}

/// BatchNormalization (inference): y = (x − μ)·s·r + b with r = 1/√(v + ε), per channel.
pub fn batch_norm<S: Real>(
    inputs: &[Option<&Tensor<S>>],
    epsilon: f32,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let x = standard(fin(inputs, 0)?);
    let sh = x.shape().to_vec();
    let c = sh[1];
    let (s, mu, var) = (
        channel(inputs, 1)?,
        channel(inputs, 3)?,
        channel(inputs, 4)?,
    );
    let eps = S::from_f64(epsilon as f64);
    let r: Vec<S> = var.iter().map(|&v| (v + eps).sqrt().recip()).collect();
    let plane: usize = sh[2..].iter().product::<usize>().max(1);
    let gy = contiguous(g);
    let (xs, gs) = (x.as_slice().expect("std"), gy.as_slice().expect("std"));
    // Per plane (image, channel): Σ dy and Σ dy·(x − μ), in parallel; then per channel in
    // plane order, so the result does not depend on the thread count.
    let sums: Vec<(S, S)> = xs
        .par_chunks(plane)
        .zip(gs.par_chunks(plane))
        .enumerate()
        .map(|(i, (xp, gp))| plane_sums(xp, gp, mu[i % c]))
        .collect();
    let mut sum_g = vec![S::zero(); c];
    let mut sum_gx = vec![S::zero(); c];
    for (i, (a, b)) in sums.into_iter().enumerate() {
        sum_g[i % c] += a;
        sum_gx[i % c] += b;
    }
    let arr = |v: Vec<S>| Some(ArrayD::from_shape_vec(IxDyn(&[c]), v).expect("c"));
    let gx = need[0].then(|| {
        let mut d = gs.to_vec();
        d.par_chunks_mut(plane).enumerate().for_each(|(i, p)| {
            let k = s[i % c] * r[i % c];
            p.iter_mut().for_each(|v| *v *= k);
        });
        ArrayD::from_shape_vec(IxDyn(&sh), d).expect("sized")
    });
    let want = |i: usize| need.get(i).copied().unwrap_or(false);
    Ok(vec![
        gx,
        if want(1) {
            arr((0..c).map(|k| sum_gx[k] * r[k]).collect())
        } else {
            None
        },
        if want(2) { arr(sum_g.clone()) } else { None },
        if want(3) {
            arr((0..c).map(|k| -(sum_g[k] * s[k] * r[k])).collect())
        } else {
            None
        },
        if want(4) {
            arr((0..c)
                .map(|k| sum_gx[k] * s[k] * S::from_f64(-0.5) * r[k] * r[k] * r[k])
                .collect())
        } else {
            None
        },
    ])
}

/// (Σ g, Σ g·(x − μ)) over a plane, in 8 interleaved partial sums so the loop vectorises.
fn plane_sums<S: Real>(x: &[S], g: &[S], mu: S) -> (S, S) {
    let mut a = [S::zero(); 8];
    let mut b = [S::zero(); 8];
    let (xc, gc) = (x.chunks_exact(8), g.chunks_exact(8));
    let (xr, gr) = (xc.remainder(), gc.remainder());
    for (xv, gv) in xc.zip(gc) {
        for k in 0..8 {
            a[k] += gv[k];
            b[k] += gv[k] * (xv[k] - mu);
        }
    }
    let mut sa: S = a.iter().copied().sum();
    let mut sb: S = b.iter().copied().sum();
    for (&xv, &gv) in xr.iter().zip(gr) {
        sa += gv;
        sb += gv * (xv - mu);
    }
    (sa, sb)
}

/// LayerNormalization over axes [axis, rank): x̂ = (x − μ)·r, y = x̂·γ + β;
/// dx = r·(dx̂ − mean(dx̂) − x̂·mean(dx̂·x̂)) with dx̂ = dy·γ.
pub fn layer_norm<S: Real>(
    inputs: &[Option<&Tensor<S>>],
    axis_attr: i64,
    epsilon: f32,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let x = standard(fin(inputs, 0)?);
    let sh = x.shape().to_vec();
    let ax = axis(axis_attr, sh.len())?;
    let d: usize = sh[ax..].iter().product();
    let tail = &sh[ax..];
    let gamma = view_as(fin(inputs, 1)?, tail)?
        .as_standard_layout()
        .into_owned();
    let gm = gamma.as_slice().expect("std");
    let gy = contiguous(g);
    let (xs, gs) = (x.as_slice().expect("std"), gy.as_slice().expect("std"));
    let dn = S::from_f64(d as f64);
    let eps = S::from_f64(epsilon as f64);
    let mut gx = vec![S::zero(); xs.len()];
    let mut ggamma = vec![S::zero(); d];
    let mut gbeta = vec![S::zero(); d];
    let mut xhat = vec![S::zero(); d];
    let mut dxhat = vec![S::zero(); d];
    for (row, (xr, gr)) in xs.chunks(d.max(1)).zip(gs.chunks(d.max(1))).enumerate() {
        let mu = xr.iter().copied().sum::<S>() / dn;
        let var = xr.iter().map(|&v| (v - mu) * (v - mu)).sum::<S>() / dn;
        let r = (var + eps).sqrt().recip();
        for j in 0..d {
            xhat[j] = (xr[j] - mu) * r;
            dxhat[j] = gr[j] * gm[j];
            ggamma[j] += gr[j] * xhat[j];
            gbeta[j] += gr[j];
        }
        let m1 = dxhat.iter().copied().sum::<S>() / dn;
        let m2 = dxhat.iter().zip(&xhat).map(|(&a, &b)| a * b).sum::<S>() / dn;
        for j in 0..d {
            gx[row * d + j] = r * (dxhat[j] - m1 - xhat[j] * m2);
        }
    }
    let want = |i: usize| need.get(i).copied().unwrap_or(false);
    let tail_arr = |v: Vec<S>, target: &[usize]| {
        reduce_to(
            ArrayD::from_shape_vec(IxDyn(tail), v).expect("tail"),
            target,
        )
    };
    Ok(vec![
        need[0].then(|| ArrayD::from_shape_vec(IxDyn(&sh), gx).expect("sized")),
        if want(1) {
            Some(tail_arr(ggamma, fin(inputs, 1)?.shape()))
        } else {
            None
        },
        if want(2) {
            Some(tail_arr(gbeta, fin(inputs, 2)?.shape()))
        } else {
            None
        },
    ])
}

/// InstanceNormalization: LayerNorm over each (n, c) plane with per-channel γ, β.
pub fn instance_norm<S: Real>(
    inputs: &[Option<&Tensor<S>>],
    epsilon: f32,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let x = standard(fin(inputs, 0)?);
    let sh = x.shape().to_vec();
    let c = sh[1];
    let plane: usize = sh[2..].iter().product();
    let gamma = channel(inputs, 1)?;
    let gy = contiguous(g);
    let (xs, gs) = (x.as_slice().expect("std"), gy.as_slice().expect("std"));
    let dn = S::from_f64(plane as f64);
    let eps = S::from_f64(epsilon as f64);
    let mut gx = vec![S::zero(); xs.len()];
    let (mut gg, mut gb) = (vec![S::zero(); c], vec![S::zero(); c]);
    for (i, (xp, gp)) in xs
        .chunks(plane.max(1))
        .zip(gs.chunks(plane.max(1)))
        .enumerate()
    {
        let ch = i % c;
        let mu = xp.iter().copied().sum::<S>() / dn;
        let var = xp.iter().map(|&v| (v - mu) * (v - mu)).sum::<S>() / dn;
        let r = (var + eps).sqrt().recip();
        let xhat: Vec<S> = xp.iter().map(|&v| (v - mu) * r).collect();
        let dxhat: Vec<S> = gp.iter().map(|&v| v * gamma[ch]).collect();
        for j in 0..plane {
            gg[ch] += gp[j] * xhat[j];
            gb[ch] += gp[j];
        }
        let m1 = dxhat.iter().copied().sum::<S>() / dn;
        let m2 = dxhat.iter().zip(&xhat).map(|(&a, &b)| a * b).sum::<S>() / dn;
        for j in 0..plane {
            gx[i * plane + j] = r * (dxhat[j] - m1 - xhat[j] * m2);
        }
    }
    let want = |i: usize| need.get(i).copied().unwrap_or(false);
    let arr = |v: Vec<S>| Some(ArrayD::from_shape_vec(IxDyn(&[c]), v).expect("c"));
    Ok(vec![
        need[0].then(|| ArrayD::from_shape_vec(IxDyn(&sh), gx).expect("sized")),
        if want(1) { arr(gg) } else { None },
        if want(2) { arr(gb) } else { None },
    ])
}

/// Softmax: dx = y ⊙ (dy − Σ dy⊙y); LogSoftmax: dx = dy − softmax ⊙ Σ dy (along the
/// normalised axis, or the flattened tail for the opset < 13 form).
pub fn softmax<S: Real>(
    y: &Arr<S>,
    axis_attr: i64,
    legacy: bool,
    log: bool,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    let sh = y.shape().to_vec();
    let ax = axis(axis_attr, sh.len())?;
    let row = |yl: &[S], gl: &[S], out: &mut [S]| {
        if log {
            let s: S = gl.iter().copied().sum();
            for j in 0..yl.len() {
                out[j] = gl[j] - yl[j].exp() * s;
            }
        } else {
            let s: S = yl.iter().zip(gl).map(|(&a, &b)| a * b).sum();
            for j in 0..yl.len() {
                out[j] = yl[j] * (gl[j] - s);
            }
        }
    };
    if legacy || ax + 1 == sh.len() {
        let d: usize = if legacy {
            sh[ax..].iter().product()
        } else {
            sh[ax]
        };
        let ys = standard(y);
        let gy = contiguous(g);
        let mut out = vec![S::zero(); ys.len()];
        for ((yl, gl), o) in ys
            .as_slice()
            .expect("std")
            .chunks(d.max(1))
            .zip(gy.as_slice().expect("std").chunks(d.max(1)))
            .zip(out.chunks_mut(d.max(1)))
        {
            row(yl, gl, o);
        }
        return Ok(vec![Some(
            ArrayD::from_shape_vec(IxDyn(&sh), out).expect("sized"),
        )]);
    }
    let mut out = ArrayD::from_elem(IxDyn(&sh), S::zero());
    let d = sh[ax];
    let (mut yb, mut gb, mut ob) = (vec![S::zero(); d], vec![S::zero(); d], vec![S::zero(); d]);
    for ((yl, gl), mut ol) in y
        .lanes(Axis(ax))
        .into_iter()
        .zip(g.lanes(Axis(ax)))
        .zip(out.lanes_mut(Axis(ax)))
    {
        yb.iter_mut().zip(yl.iter()).for_each(|(a, &b)| *a = b);
        gb.iter_mut().zip(gl.iter()).for_each(|(a, &b)| *a = b);
        row(&yb, &gb, &mut ob);
        ol.iter_mut().zip(&ob).for_each(|(a, &b)| *a = b);
    }
    Ok(vec![Some(out)])
}

/// LRN: y_i = x_i·d_i^(−β), d_i = k + α/n·Σ_{j∈W(i)} x_j².
pub fn lrn<S: Real>(
    x: &Arr<S>,
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    let xs = standard(x);
    let sh = xs.shape().to_vec();
    let (n, c) = (sh[0], sh[1]);
    let plane: usize = sh[2..].iter().product();
    let (lo, hi) = ((size - 1) / 2, size - 1 - (size - 1) / 2);
    let (al, be, bi) = (
        S::from_f64(alpha as f64 / size as f64),
        S::from_f64(beta as f64),
        S::from_f64(bias as f64),
    );
    let gy = contiguous(g);
    let (xsl, gsl) = (xs.as_slice().expect("std"), gy.as_slice().expect("std"));
    let mut gx = vec![S::zero(); xsl.len()];
    for img in 0..n {
        let xi = &xsl[img * c * plane..(img + 1) * c * plane];
        let gi = &gsl[img * c * plane..(img + 1) * c * plane];
        let dx = &mut gx[img * c * plane..(img + 1) * c * plane];
        for p in 0..plane {
            let d: Vec<S> = (0..c)
                .map(|ch| {
                    let (from, to) = (ch.saturating_sub(lo), (ch + hi).min(c - 1));
                    bi + al
                        * (from..=to)
                            .map(|k| xi[k * plane + p] * xi[k * plane + p])
                            .sum::<S>()
                })
                .collect();
            // t_j = dy_j·x_j·d_j^(−β−1): what channel j sends back to every i in its window.
            let t: Vec<S> = (0..c)
                .map(|j| gi[j * plane + p] * xi[j * plane + p] * d[j].powf(-be - S::one()))
                .collect();
            for i in 0..c {
                // i lies in W(j) for j ∈ [i − hi, i + lo].
                let (from, to) = (i.saturating_sub(hi), (i + lo).min(c - 1));
                let back: S = (from..=to).map(|j| t[j]).sum();
                dx[i * plane + p] = gi[i * plane + p] * d[i].powf(-be)
                    - S::from_f64(2.0) * al * be * xi[i * plane + p] * back;
            }
        }
    }
    Ok(vec![Some(
        ArrayD::from_shape_vec(IxDyn(&sh), gx).expect("sized"),
    )])
}
