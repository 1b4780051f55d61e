//! MaxPool, AveragePool, LpPool (1-D, 2-D) and the global pools.

use super::conv::{Geom, geom};
use super::util::*;
use crate::ir::op::{PoolKind, Window};
use crate::tensor::{Real, Tensor};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

fn pool_plane<S: Real>(x: &[S], g: &Geom, kind: PoolKind, out: &mut [S]) {
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let mut acc = match kind {
                PoolKind::Max => -S::infinity(),
                _ => S::zero(),
            };
            let mut count = 0usize;
            // Positions inside input + padding (count_include_pad's divisor), clipped at the end pad.
            let mut padded = 0usize;
            for ki in 0..g.kh {
                let iy = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
                let y_in_pad = iy < (g.h + g.pb) as isize;
                for kj in 0..g.kw {
                    let ix = (ox * g.sw + kj * g.dw) as isize - g.pl as isize;
                    if y_in_pad && ix < (g.w + g.pr) as isize {
                        padded += 1;
                    }
                    if iy < 0 || iy >= g.h as isize || ix < 0 || ix >= g.w as isize {
                        continue;
                    }
                    let v = x[iy as usize * g.w + ix as usize];
                    count += 1;
                    match kind {
                        PoolKind::Max => {
                            if v > acc || v.is_nan() {
                                acc = v;
                            }
                        }
                        PoolKind::Average { .. } => acc += v,
                        PoolKind::Lp { p } => acc += v.abs().powf(S::from_f64(p as f64)),
                    }
                }
            }
            out[oy * g.ow + ox] = match kind {
                PoolKind::Max => acc,
                PoolKind::Average { count_include_pad } => {
                    let d = if count_include_pad { padded } else { count };
                    if d == 0 {
                        S::zero()
                    } else {
                        acc / S::from_f64(d as f64)
                    }
                }
                PoolKind::Lp { p } => acc.powf(S::from_f64(1.0 / p as f64)),
            };
        }
    }
}

fn pool_input<S: Real>(x: &Tensor<S>) -> Result<&crate::tensor::Arr<S>, String> {
    x.as_float()
        .ok_or_else(|| format!("pooling of {} tensors is not supported", x.dtype))
}

pub fn pool<S: Real>(
    x: &Tensor<S>,
    kind: PoolKind,
    window: &Window,
    ceil_mode: bool,
) -> OpResult<S> {
    let xa = standard(pool_input(x)?);
    let sh = xa.shape().to_vec();
    if sh.len() < 3 {
        return Err(format!("pooling needs rank ≥ 3, got {sh:?}"));
    }
    let g = geom(&sh[2..], window, &window.kernel, ceil_mode)?;
    let (n, c) = (sh[0], sh[1]);
    let (hw, ohw) = (g.h * g.w, g.out_len());
    let xs = xa.as_slice().expect("standard");
    let mut out = vec![S::zero(); n * c * ohw];
    if ohw > 0 {
        out.par_chunks_mut(ohw)
            .enumerate()
            .for_each(|(i, o)| pool_plane(&xs[i * hw..(i + 1) * hw], &g, kind, o));
    }
    let mut oshape = vec![n, c];
    if sh.len() == 4 {
        oshape.extend([g.oh, g.ow]);
    } else {
        oshape.push(g.ow);
    }
    Ok(vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&oshape), out).expect("sized"),
    )])
}

pub fn global_pool<S: Real>(x: &Tensor<S>, kind: PoolKind) -> OpResult<S> {
    let xa = standard(pool_input(x)?);
    let sh = xa.shape().to_vec();
    if sh.len() < 2 {
        return Err(format!("global pooling needs rank ≥ 2, got {sh:?}"));
    }
    let plane: usize = sh[2..].iter().product();
    let xs = xa.as_slice().expect("standard");
    let nc = sh[0] * sh[1];
    let out: Vec<S> =
        (0..nc)
            .map(|i| {
                let p = &xs[i * plane..(i + 1) * plane];
                match kind {
                    PoolKind::Max => p.iter().copied().fold(-S::infinity(), |a, b| {
                        if b > a || b.is_nan() { b } else { a }
                    }),
                    _ => p.iter().copied().sum::<S>() / S::from_f64(plane as f64),
                }
            })
            .collect();
    let mut oshape = sh[..2].to_vec();
    oshape.extend(std::iter::repeat_n(1, sh.len() - 2));
    Ok(vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&oshape), out).expect("sized"),
    )])
}
