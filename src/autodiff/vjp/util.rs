//! Helpers for the backward rules: gradients as plain arrays, broadcast reduction.

use crate::interp::ops::util::float;
use crate::tensor::{Arr, Real, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};

pub type Grad<S> = ArrayD<S>;
pub type VjpResult<S> = Result<Vec<Option<Grad<S>>>, String>;

/// A float input as an array (error naming the input otherwise).
pub fn fin<'a, S: Real>(inputs: &[Option<&'a Tensor<S>>], i: usize) -> Result<&'a Arr<S>, String> {
    let t = inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is required"))?;
    float(t, "a differentiable input")
}

/// Sums a gradient over the axes along which `shape` was broadcast to `g`'s shape.
pub fn reduce_to<S: Real>(g: ArrayD<S>, shape: &[usize]) -> ArrayD<S> {
    if g.shape() == shape {
        return g;
    }
    let lead = g.ndim() - shape.len();
    let mut r = g;
    for _ in 0..lead {
        r = r.fold_axis(Axis(0), S::zero(), |&a, &b| a + b);
    }
    for (ax, &d) in shape.iter().enumerate() {
        if d == 1 && r.shape()[ax] != 1 {
            r = r
                .fold_axis(Axis(ax), S::zero(), |&a, &b| a + b)
                .insert_axis(Axis(ax));
        }
    }
    r.into_shape_with_order(IxDyn(shape))
        .expect("reduced to the operand's shape")
}

/// `g` as a contiguous row-major slice-backed array.
pub fn contiguous<S: Real>(g: &ArrayD<S>) -> ndarray::CowArray<'_, S, IxDyn> {
    // Borrowed when already standard (nearly always): the backward pass of every op read its
    // output gradient through a full copy, 8 % of a SNOWS run on PP-LCNet.
    g.as_standard_layout()
}

/// Zero gradient of a given shape.
pub fn zeros<S: Real>(shape: &[usize]) -> ArrayD<S> {
    ArrayD::from_elem(IxDyn(shape), S::zero())
}

/// Elementwise map of two broadcast-compatible arrays (shape of the broadcast).
pub fn zip<S: Real>(
    a: &ArrayD<S>,
    b: &ArrayD<S>,
    f: impl Fn(S, S) -> S + Sync + Send,
) -> Result<ArrayD<S>, String> {
    crate::interp::ops::util::zip2(&a.clone().into_shared(), &b.clone().into_shared(), f)
}

/// Like `zip` with a third operand.
pub fn zip3<S: Real>(
    a: &ArrayD<S>,
    b: &ArrayD<S>,
    c: &ArrayD<S>,
    f: impl Fn(S, S, S) -> S,
) -> Result<ArrayD<S>, String> {
    use crate::interp::ops::util::broadcast_shape;
    let sh = broadcast_shape(&broadcast_shape(a.shape(), b.shape())?, c.shape())?;
    let (av, bv, cv) = (
        a.broadcast(IxDyn(&sh)).ok_or("broadcast")?,
        b.broadcast(IxDyn(&sh)).ok_or("broadcast")?,
        c.broadcast(IxDyn(&sh)).ok_or("broadcast")?,
    );
    Ok(ndarray::Zip::from(&av)
        .and(&bv)
        .and(&cv)
        .map_collect(|&x, &y, &z| f(x, y, z)))
}

/// Owned copy of a shared array.
pub fn owned<S: Real>(a: &Arr<S>) -> ArrayD<S> {
    a.to_owned()
}
