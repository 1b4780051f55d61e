//! Backward rules of the pools.

use super::util::*;
use crate::interp::ops::conv::{Geom, geom};
use crate::interp::ops::util::standard;
use crate::ir::op::{PoolKind, Window};
use crate::tensor::{Arr, Real};
use ndarray::{ArrayD, IxDyn};

/// The input positions of output (oy, ox)'s window that lie inside the input, and the divisor
/// AveragePool uses (positions inside input + padding when `count_include_pad`).
fn window(g: &Geom, oy: usize, ox: usize, include_pad: bool) -> (Vec<usize>, usize) {
    let mut inside = Vec::with_capacity(g.kh * g.kw);
    let mut padded = 0;
    for ki in 0..g.kh {
        let iy = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
        for kj in 0..g.kw {
            let ix = (ox * g.sw + kj * g.dw) as isize - g.pl as isize;
            if iy < (g.h + g.pb) as isize && ix < (g.w + g.pr) as isize {
                padded += 1;
            }
            if iy >= 0 && iy < g.h as isize && ix >= 0 && ix < g.w as isize {
                inside.push(iy as usize * g.w + ix as usize);
            }
        }
    }
    let d = if include_pad { padded } else { inside.len() };
    (inside, d)
}

pub fn pool<S: Real>(
    x: &Arr<S>,
    y: &Arr<S>,
    kind: PoolKind,
    w: &Window,
    ceil_mode: bool,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    let xs = standard(x);
    let ys = standard(y);
    let sh = xs.shape().to_vec();
    let geo = geom(&sh[2..], w, &w.kernel, ceil_mode)?;
    let (hw, ohw) = (geo.h * geo.w, geo.out_len());
    let gy = contiguous(g);
    let (xsl, ysl, gsl) = (
        xs.as_slice().expect("std"),
        ys.as_slice().expect("std"),
        gy.as_slice().expect("std"),
    );
    let planes = sh[0] * sh[1];
    let mut gx = vec![S::zero(); planes * hw];
    for pl in 0..planes {
        let (xp, yp, gp) = (
            &xsl[pl * hw..(pl + 1) * hw],
            &ysl[pl * ohw..(pl + 1) * ohw],
            &gsl[pl * ohw..(pl + 1) * ohw],
        );
        let dx = &mut gx[pl * hw..(pl + 1) * hw];
        for oy in 0..geo.oh {
            for ox in 0..geo.ow {
                let o = oy * geo.ow + ox;
                let include_pad = matches!(
                    kind,
                    PoolKind::Average {
                        count_include_pad: true
                    }
                );
                let (idx, d) = window(&geo, oy, ox, include_pad);
                match kind {
                    // The first position holding the maximum takes the gradient.
                    PoolKind::Max => {
                        if let Some(&i) = idx.iter().find(|&&i| xp[i] == yp[o]) {
                            dx[i] += gp[o];
                        }
                    }
                    PoolKind::Average { .. } => {
                        if d > 0 {
                            let share = gp[o] / S::from_f64(d as f64);
                            idx.iter().for_each(|&i| dx[i] += share);
                        }
                    }
                    // y = (Σ|x|^p)^(1/p): dy/dx_i = |x_i|^(p−1)·sign(x_i) / y^(p−1).
                    PoolKind::Lp { p } => {
                        let pm1 = S::from_f64(p as f64 - 1.0);
                        if yp[o] != S::zero() {
                            let denom = yp[o].powf(pm1);
                            for &i in &idx {
                                let xv = xp[i];
                                let sgn = if xv < S::zero() { -S::one() } else { S::one() };
                                dx[i] += gp[o] * xv.abs().powf(pm1) * sgn / denom;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(vec![Some(
        ArrayD::from_shape_vec(IxDyn(&sh), gx).expect("sized"),
    )])
}

pub fn global_pool<S: Real>(x: &Arr<S>, y: &Arr<S>, kind: PoolKind, g: &ArrayD<S>) -> VjpResult<S> {
    let xs = standard(x);
    let sh = xs.shape().to_vec();
    let plane: usize = sh[2..].iter().product();
    let xsl = xs.as_slice().expect("std");
    let yv: Vec<S> = y.iter().copied().collect();
    let gv: Vec<S> = contiguous(g).iter().copied().collect();
    let mut gx = vec![S::zero(); xsl.len()];
    for (pl, (dx, xp)) in gx
        .chunks_mut(plane.max(1))
        .zip(xsl.chunks(plane.max(1)))
        .enumerate()
    {
        match kind {
            PoolKind::Max => {
                if let Some(i) = xp.iter().position(|&v| v == yv[pl]) {
                    dx[i] = gv[pl];
                }
            }
            _ => {
                let share = gv[pl] / S::from_f64(plane as f64);
                dx.iter_mut().for_each(|v| *v = share);
            }
        }
    }
    Ok(vec![Some(
        ArrayD::from_shape_vec(IxDyn(&sh), gx).expect("sized"),
    )])
}
