//! Backward rules of data movement: the reshape family, Transpose, Concat, Split, Slice,
//! Gather, GatherElements, Expand, Tile, Pad, Resize, TopK.

use super::util::*;
use crate::interp::ops::layout;
use crate::interp::ops::resize::{ResizePlan, apply_axis_adjoint};
use crate::interp::ops::util::axis;
use crate::ir::op::PadMode;
use crate::tensor::{Arr, Real};
use ndarray::{ArrayD, Axis, IxDyn, Slice};

/// Reshape, Flatten, Squeeze, Unsqueeze, Identity: the gradient takes the input's shape.
pub fn reshape<S: Real>(x_shape: &[usize], g: &ArrayD<S>) -> VjpResult<S> {
    let c = contiguous(g).into_owned();
    Ok(vec![Some(
        c.into_shape_with_order(IxDyn(x_shape))
            .map_err(|e| e.to_string())?,
    )])
}

pub fn transpose<S: Real>(perm: &[usize], g: &ArrayD<S>) -> VjpResult<S> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let c = contiguous(g);
    let v = layout::permute(c.as_slice().expect("std"), c.shape(), &inv);
    let shape: Vec<usize> = inv.iter().map(|&a| c.shape()[a]).collect();
    Ok(vec![Some(
        ArrayD::from_shape_vec(IxDyn(&shape), v).expect("sized"),
    )])
}

pub fn concat<S: Real>(
    shapes: &[Option<Vec<usize>>],
    axis_attr: i64,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let ax = axis(axis_attr, g.ndim())?;
    let mut start = 0;
    Ok(shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let s = s.as_ref()?;
            let len = s[ax];
            let part = need.get(i).copied().unwrap_or(false).then(|| {
                g.slice_axis(Axis(ax), Slice::from(start..start + len))
                    .to_owned()
            });
            start += len;
            part
        })
        .collect())
}

/// Split: the gradients of the outputs laid side by side (zeros for unused outputs).
pub fn split<S: Real>(
    x_shape: &[usize],
    out_shapes: &[Vec<usize>],
    axis_attr: i64,
    gs: &[Option<&ArrayD<S>>],
) -> VjpResult<S> {
    let ax = axis(axis_attr, x_shape.len())?;
    let parts: Vec<ArrayD<S>> = out_shapes
        .iter()
        .zip(gs)
        .map(|(s, g)| g.map(|g| g.to_owned()).unwrap_or_else(|| zeros(s)))
        .collect();
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    Ok(vec![Some(
        ndarray::concatenate(Axis(ax), &views).map_err(|e| e.to_string())?,
    )])
}

pub fn slice<S: Real>(
    x_shape: &[usize],
    info: &ndarray::SliceInfo<Vec<ndarray::SliceInfoElem>, IxDyn, IxDyn>,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    let mut gx = zeros(x_shape);
    gx.slice_mut(info.as_ref()).assign(g);
    Ok(vec![Some(gx)])
}

/// Gather along `axis`: scatter-add the gradient rows back to the indexed positions.
pub fn gather<S: Real>(
    x_shape: &[usize],
    indices: &[i64],
    idx_shape: &[usize],
    axis_attr: i64,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    let ax = axis(axis_attr, x_shape.len())?;
    let dim = x_shape[ax] as i64;
    let outer: usize = x_shape[..ax].iter().product();
    let inner: usize = x_shape[ax + 1..].iter().product();
    let nidx: usize = idx_shape.iter().product();
    let gc = contiguous(g);
    let gs = gc.as_slice().expect("std");
    let mut gx = vec![S::zero(); x_shape.iter().product()];
    for o in 0..outer {
        for (k, &i) in indices.iter().enumerate() {
            let i = if i < 0 { i + dim } else { i } as usize;
            let src = &gs[(o * nidx + k) * inner..(o * nidx + k + 1) * inner];
            let dst = &mut gx[(o * x_shape[ax] + i) * inner..(o * x_shape[ax] + i + 1) * inner];
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
        }
    }
    Ok(vec![Some(
        ArrayD::from_shape_vec(IxDyn(x_shape), gx).expect("sized"),
    )])
}

pub fn gather_elements<S: Real>(
    x_shape: &[usize],
    idx: &Arr<i64>,
    axis_attr: i64,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    let ax = axis(axis_attr, x_shape.len())?;
    let dim = x_shape[ax] as i64;
    let mut gx = zeros(x_shape);
    for (pos, &i) in idx.indexed_iter() {
        let mut p = pos.clone();
        p[ax] = (if i < 0 { i + dim } else { i }) as usize;
        gx[&p] += g[&pos];
    }
    Ok(vec![Some(gx)])
}

/// Expand broadcasts: the gradient sums back over the broadcast axes.
pub fn expand<S: Real>(x_shape: &[usize], g: &ArrayD<S>) -> VjpResult<S> {
    Ok(vec![Some(reduce_to(g.to_owned(), x_shape))])
}

/// Tile: every tile's gradient adds to the same input element.
pub fn tile<S: Real>(x_shape: &[usize], g: &ArrayD<S>) -> VjpResult<S> {
    let mut gx = zeros(x_shape);
    for (pos, &v) in g.indexed_iter() {
        let src: Vec<usize> = (0..x_shape.len()).map(|i| pos[i] % x_shape[i]).collect();
        gx[IxDyn(&src)] += v;
    }
    Ok(vec![Some(gx)])
}

/// Pad: every output position whose value came from an input position sends its gradient
/// back there (constant fill positions have no source).
pub fn pad<S: Real>(
    x_shape: &[usize],
    before: &[i64],
    after: &[i64],
    mode: PadMode,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    // Borrowed until the first padded axis builds a new array: only an unpadded Pad copies.
    let mut cur = contiguous(g);
    // Undo the per-axis padding in reverse: each output index j of axis `ax` maps to a source.
    for ax in (0..x_shape.len()).rev() {
        if before[ax] == 0 && after[ax] == 0 {
            continue;
        }
        let len = x_shape[ax] as i64;
        let sh = cur.shape().to_vec();
        let outer: usize = sh[..ax].iter().product();
        let inner: usize = sh[ax + 1..].iter().product();
        let out_len = sh[ax];
        let src = cur.as_slice().expect("std");
        let mut next = vec![S::zero(); outer * len as usize * inner];
        for o in 0..outer {
            for j in 0..out_len as i64 {
                let mut s = j - before[ax];
                if !(0..len).contains(&s) {
                    s = match mode {
                        PadMode::Constant => continue,
                        PadMode::Edge => s.clamp(0, len - 1),
                        PadMode::Wrap => s.rem_euclid(len),
                        PadMode::Reflect if len == 1 => 0,
                        PadMode::Reflect => {
                            let period = 2 * (len - 1);
                            let r = s.rem_euclid(period);
                            if r >= len { period - r } else { r }
                        }
                    };
                }
                let d = &mut next[(o * len as usize + s as usize) * inner
                    ..(o * len as usize + s as usize + 1) * inner];
                let sv = &src
                    [(o * out_len + j as usize) * inner..(o * out_len + j as usize + 1) * inner];
                d.iter_mut().zip(sv).for_each(|(a, &b)| *a += b);
            }
        }
        let mut nsh = sh;
        nsh[ax] = len as usize;
        cur = ArrayD::from_shape_vec(IxDyn(&nsh), next)
            .expect("sized")
            .into();
    }
    Ok(vec![Some(cur.into_owned())])
}

pub fn resize<S: Real>(x_shape: &[usize], plan: &ResizePlan, g: &ArrayD<S>) -> VjpResult<S> {
    let c = contiguous(g);
    let mut data = c.as_slice().expect("std").to_vec();
    let mut cur = plan.out_shape.clone();
    for (a, taps) in plan.axes.iter().enumerate().rev() {
        let Some(taps) = taps else { continue };
        let outer: usize = cur[..a].iter().product();
        let inner: usize = cur[a + 1..].iter().product();
        data = apply_axis_adjoint(&data, outer, x_shape[a], inner, taps);
        cur[a] = x_shape[a];
    }
    Ok(vec![Some(
        ArrayD::from_shape_vec(IxDyn(x_shape), data).expect("sized"),
    )])
}

/// TopK values: each selected element's gradient goes back to where it was taken from.
pub fn top_k<S: Real>(
    x_shape: &[usize],
    indices: &Arr<i64>,
    axis_attr: i64,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    gather_elements(x_shape, indices, axis_attr, g)
}
