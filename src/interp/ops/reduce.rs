//! Reductions, ArgMax/ArgMin and TopK.

use super::util::*;
use crate::ir::op::ReduceKind;
use crate::tensor::{Arr, Data, Real, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};

/// Moves the reduced axes last and returns (contiguous data, rows, row length, output shape).
fn rows_of<T: Clone>(
    a: &Arr<T>,
    axes: &[usize],
    keepdims: bool,
) -> (Vec<T>, usize, usize, Vec<usize>) {
    let sh = a.shape();
    let r = sh.len();
    let kept: Vec<usize> = (0..r).filter(|i| !axes.contains(i)).collect();
    let mut perm = kept.clone();
    perm.extend(axes);
    let moved = a.view().permuted_axes(IxDyn(&perm));
    let data = moved
        .as_standard_layout()
        .into_owned()
        .into_raw_vec_and_offset()
        .0;
    let inner: usize = axes.iter().map(|&i| sh[i]).product();
    let outer: usize = kept.iter().map(|&i| sh[i]).product();
    let out_shape = if keepdims {
        (0..r)
            .map(|i| if axes.contains(&i) { 1 } else { sh[i] })
            .collect()
    } else {
        kept.iter().map(|&i| sh[i]).collect()
    };
    (data, outer, inner, out_shape)
}

pub fn resolve_axes(
    axes: Option<Vec<i64>>,
    rank: usize,
    noop_with_empty: bool,
) -> Result<Option<Vec<usize>>, String> {
    match axes {
        Some(a) if !a.is_empty() => {
            let mut v: Vec<usize> = a.iter().map(|&x| axis(x, rank)).collect::<Result<_, _>>()?;
            v.sort_unstable();
            v.dedup();
            Ok(Some(v))
        }
        _ if noop_with_empty => Ok(None),
        _ => Ok(Some((0..rank).collect())),
    }
}

pub fn reduce<S: Real>(
    x: &Tensor<S>,
    kind: ReduceKind,
    axes: Option<Vec<i64>>,
    keepdims: bool,
    noop: bool,
) -> OpResult<S> {
    let Some(axes) = resolve_axes(axes, x.shape().len(), noop)? else {
        return Ok(vec![x.clone()]);
    };
    match &x.data {
        Data::Float(a) => {
            let (data, outer, inner, out_shape) = rows_of(a, &axes, keepdims);
            let n = S::from_f64(inner as f64);
            let out: Vec<S> = (0..outer)
                .map(|o| {
                    let row = &data[o * inner..(o + 1) * inner];
                    match kind {
                        ReduceKind::Sum => row.iter().copied().sum(),
                        ReduceKind::Mean => row.iter().copied().sum::<S>() / n,
                        ReduceKind::Max => row.iter().copied().fold(-S::infinity(), |p, q| {
                            if q > p || q.is_nan() { q } else { p }
                        }),
                        ReduceKind::Min => row.iter().copied().fold(S::infinity(), |p, q| {
                            if q < p || q.is_nan() { q } else { p }
                        }),
                        ReduceKind::Prod => row.iter().copied().fold(S::one(), |p, q| p * q),
                        ReduceKind::L1 => row.iter().map(|v| v.abs()).sum(),
                        ReduceKind::L2 => row.iter().map(|&v| v * v).sum::<S>().sqrt(),
                        ReduceKind::SumSquare => row.iter().map(|&v| v * v).sum(),
                        ReduceKind::LogSumExp => {
                            let m = row.iter().copied().fold(-S::infinity(), |p, q| p.max(q));
                            if m == -S::infinity() {
                                m
                            } else {
                                m + row.iter().map(|&v| (v - m).exp()).sum::<S>().ln()
                            }
                        }
                    }
                })
                .collect();
            Ok(vec![Tensor::float(
                x.dtype,
                ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("sized"),
            )])
        }
        Data::Int(a) => {
            let (data, outer, inner, out_shape) = rows_of(a, &axes, keepdims);
            let out: Vec<i64> = (0..outer)
                .map(|o| {
                    let row = &data[o * inner..(o + 1) * inner];
                    Ok(match kind {
                        ReduceKind::Sum => row.iter().sum(),
                        ReduceKind::Mean => row.iter().sum::<i64>() / (inner.max(1) as i64),
                        ReduceKind::Max => *row.iter().max().unwrap_or(&i64::MIN),
                        ReduceKind::Min => *row.iter().min().unwrap_or(&i64::MAX),
                        ReduceKind::Prod => row.iter().product(),
                        ReduceKind::L1 => row.iter().map(|v| v.abs()).sum(),
                        ReduceKind::SumSquare => row.iter().map(|v| v * v).sum(),
                        _ => return Err(format!("{kind:?} of integers is not supported")),
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(vec![Tensor::int(
                x.dtype,
                ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("sized"),
            )])
        }
        Data::Bool(_) => Err("reductions of bool tensors are not supported".into()),
    }
}

pub fn arg_extreme<S: Real>(
    x: &Tensor<S>,
    max: bool,
    axis_attr: i64,
    keepdims: bool,
    last: bool,
) -> OpResult<S> {
    let ax = axis(axis_attr, x.shape().len())?;
    let vals: Arr<f64> = match &x.data {
        Data::Float(a) => a.mapv(|v| v.to_f64()).into_shared(),
        Data::Int(a) => a.mapv(|v| v as f64).into_shared(),
        Data::Bool(_) => return Err("ArgMax/ArgMin of bool".into()),
    };
    let (data, outer, inner, out_shape) = rows_of(&vals, &[ax], keepdims);
    if inner == 0 {
        return Err("ArgMax/ArgMin over an empty axis".into());
    }
    let out: Vec<i64> = (0..outer)
        .map(|o| {
            let row = &data[o * inner..(o + 1) * inner];
            let mut best = 0;
            for (i, &v) in row.iter().enumerate().skip(1) {
                let better = if max { v > row[best] } else { v < row[best] };
                if better || (last && v == row[best]) {
                    best = i;
                }
            }
            best as i64
        })
        .collect();
    Ok(vec![Tensor::i64(
        ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("sized"),
    )])
}

pub fn top_k<S: Real>(x: &Tensor<S>, k: i64, axis_attr: i64, largest: bool) -> OpResult<S> {
    let sh = x.shape().to_vec();
    let ax = axis(axis_attr, sh.len())?;
    if k < 0 || k as usize > sh[ax] {
        return Err(format!("k={k} for an axis of size {}", sh[ax]));
    }
    let k = k as usize;
    let keys: Arr<f64> = match &x.data {
        Data::Float(a) => a.mapv(|v| v.to_f64()).into_shared(),
        Data::Int(a) => a.mapv(|v| v as f64).into_shared(),
        Data::Bool(_) => return Err("TopK of bool tensors is not supported".into()),
    };
    let mut out_shape = sh.clone();
    out_shape[ax] = k;
    let mut idxs = ArrayD::<i64>::zeros(IxDyn(&out_shape));
    for (src, mut di) in keys
        .lanes(Axis(ax))
        .into_iter()
        .zip(idxs.lanes_mut(Axis(ax)))
    {
        let mut order: Vec<usize> = (0..src.len()).collect();
        // Stable sort: equal values keep the lower index first, as onnxruntime.
        order.sort_by(|&i, &j| {
            let o = src[i]
                .partial_cmp(&src[j])
                .unwrap_or(std::cmp::Ordering::Equal);
            if largest { o.reverse() } else { o }
        });
        for t in 0..k {
            di[t] = order[t] as i64;
        }
    }
    let values = gather_along(x, &idxs, ax);
    Ok(vec![values, Tensor::i64(idxs)])
}

/// Picks `idx` (same rank as x) along `ax`: out[.., j, ..] = x[.., idx[.., j, ..], ..].
fn gather_along<S: Real>(x: &Tensor<S>, idx: &ArrayD<i64>, ax: usize) -> Tensor<S> {
    crate::each_storage!(x, a => ArrayD::from_shape_fn(idx.raw_dim(), |mut pos| {
        pos[ax] = idx[&pos] as usize;
        a[&pos]
    }))
}
