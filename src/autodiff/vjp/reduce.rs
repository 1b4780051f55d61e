//! Backward rules of the reductions.

use super::util::*;
use crate::interp::ops::reduce::resolve_axes;
use crate::ir::op::ReduceKind;
use crate::tensor::{Arr, Real};
use ndarray::{ArrayD, Axis, IxDyn};

pub fn reduce<S: Real>(
    x: &Arr<S>,
    y: &Arr<S>,
    kind: ReduceKind,
    axes: Option<Vec<i64>>,
    keepdims: bool,
    noop: bool,
    g: &ArrayD<S>,
) -> VjpResult<S> {
    let xs = x.shape().to_vec();
    let Some(axes) = resolve_axes(axes, xs.len(), noop)? else {
        return Ok(vec![Some(g.to_owned())]);
    };
    // The output and its gradient with the reduced axes kept (length 1), broadcast to x.
    let kept = |a: ArrayD<S>| -> ArrayD<S> {
        if keepdims {
            return a;
        }
        let mut a = a;
        for &ax in &axes {
            a = a.insert_axis(Axis(ax));
        }
        a
    };
    let gk = kept(g.to_owned());
    let yk = kept(y.to_owned());
    let gb = gk
        .broadcast(IxDyn(&xs))
        .ok_or("reduce gradient does not broadcast")?;
    let yb = yk
        .broadcast(IxDyn(&xs))
        .ok_or("reduce output does not broadcast")?;
    let n: usize = axes.iter().map(|&a| xs[a]).product();
    let nf = S::from_f64(n as f64);
    let two = S::from_f64(2.0);
    let gx = ndarray::Zip::from(x)
        .and(&gb)
        .and(&yb)
        .map_collect(|&x, &g, &y| match kind {
            ReduceKind::Sum => g,
            ReduceKind::Mean => g / nf,
            ReduceKind::Max | ReduceKind::Min => {
                if x == y {
                    g
                } else {
                    S::zero()
                }
            }
            ReduceKind::L1 => {
                if x > S::zero() {
                    g
                } else if x < S::zero() {
                    -g
                } else {
                    S::zero()
                }
            }
            ReduceKind::L2 => {
                if y == S::zero() {
                    S::zero()
                } else {
                    g * x / y
                }
            }
            ReduceKind::SumSquare => two * x * g,
            ReduceKind::LogSumExp => g * (x - y).exp(),
            ReduceKind::Prod => {
                if x == S::zero() {
                    S::zero()
                } else {
                    g * y / x
                }
            }
        });
    Ok(vec![Some(gx)])
}
