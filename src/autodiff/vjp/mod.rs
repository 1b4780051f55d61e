//! Vector-Jacobian products, one file per op family, and the dispatch from `Op` to rule.
//!
//! Every rule is generic over `Real` and computes with the forward values, so running a rule on
//! dual numbers (whose tangents carry a direction v) yields the directional derivative of the
//! gradient: the Hessian-vector product, with no second set of rules.

pub mod elementwise;
pub mod linear;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod shape;
pub mod util;

use crate::interp::ops::util::{float, ints};
use crate::interp::ops::{args, resize, shape as fshape};
use crate::ir::Op;
use crate::tensor::{Data, Real, Tensor};
use ndarray::ArrayD;
use util::{VjpResult, fin};

/// Whether gradients flow through `op` at all (shape logic, comparisons and index outputs
/// do not carry them).
pub fn differentiable(op: &Op) -> bool {
    !matches!(
        op,
        Op::Compare(_)
            | Op::Logic(_)
            | Op::Not
            | Op::Shape { .. }
            | Op::Size
            | Op::Range
            | Op::ConstantOfShape { .. }
            | Op::Constant { .. }
            | Op::ArgExtreme { .. }
    )
}

/// Which inputs of `op` gradients flow into (Resize's roi and scales, Pad's pads, and the
/// like only steer the op; integer inputs never carry gradients either way).
pub fn differentiable_inputs(op: &Op, n: usize) -> Vec<bool> {
    let mut v = vec![differentiable(op); n];
    match op {
        Op::Resize(_) => v.iter_mut().skip(1).for_each(|d| *d = false),
        // data, pads, constant_value, axes
        Op::Pad { .. } => {
            for i in [1, 3] {
                if i < n {
                    v[i] = false;
                }
            }
        }
        _ => {}
    }
    v
}

fn shape_of<S>(inputs: &[Option<&Tensor<S>>], i: usize) -> Result<Vec<usize>, String>
where
    S: Real,
{
    inputs
        .get(i)
        .copied()
        .flatten()
        .map(|t| t.shape().to_vec())
        .ok_or_else(|| format!("input {i} is required"))
}

fn out_float<'a, S: Real>(
    outputs: &[Option<&'a Tensor<S>>],
    i: usize,
) -> Result<&'a crate::tensor::Arr<S>, String> {
    let t = outputs
        .get(i)
        .copied()
        .flatten()
        .ok_or("the forward output is missing")?;
    float(t, "the forward output")
}

/// Gradients of a node's inputs from the gradients of its outputs. `inputs` and `outputs` are
/// the forward values; `gy[k]` the gradient of output k (`None`: zero); `need[i]` whether input
/// i wants a gradient. Returns one entry per input.
pub fn vjp<S: Real>(
    op: &Op,
    inputs: &[Option<&Tensor<S>>],
    outputs: &[Option<&Tensor<S>>],
    gy: &[Option<&ArrayD<S>>],
    need: &[bool],
) -> VjpResult<S> {
    let none = || Ok(vec![None; inputs.len()]);
    if !differentiable(op) || !need.iter().any(|&n| n) {
        return none();
    }
    let Some(g) = gy.first().copied().flatten() else {
        if gy.iter().skip(1).any(|g| g.is_some()) && !matches!(op, Op::Split { .. }) {
            return Err("gradients through this op's secondary outputs are not supported".into());
        }
        if !matches!(op, Op::Split { .. }) {
            return none();
        }
        return split(op, inputs, outputs, gy);
    };
    if gy.iter().skip(1).any(|g| g.is_some()) && !matches!(op, Op::Split { .. }) {
        return Err("gradients through this op's secondary outputs are not supported".into());
    }
    let x = || fin(inputs, 0);
    let pad_to = |mut v: Vec<Option<ArrayD<S>>>| {
        v.resize(inputs.len(), None);
        Ok(v)
    };
    match op {
        Op::Unary(u) => elementwise::unary(*u, x()?, out_float(outputs, 0)?, g),
        Op::Binary(bop) => {
            let (a, b) = (
                inputs[0].ok_or("input 0 is required")?,
                inputs[1].ok_or("input 1 is required")?,
            );
            match (&a.data, &b.data) {
                (Data::Float(fa), Data::Float(fb)) => {
                    elementwise::binary(*bop, fa, fb, out_float(outputs, 0)?, g, need)
                }
                // Pow with an integer exponent: only the base has a gradient.
                (Data::Float(fa), Data::Int(_)) => {
                    let ex = b.cast(a.dtype);
                    let r = elementwise::binary(
                        *bop,
                        fa,
                        float(&ex, "exponent")?,
                        out_float(outputs, 0)?,
                        g,
                        &[need[0], false],
                    )?;
                    Ok(vec![r.into_iter().next().flatten(), None])
                }
                _ => none(),
            }
        }
        Op::Variadic(v) => elementwise::variadic(*v, inputs, out_float(outputs, 0)?, g, need),
        Op::Where => {
            let cond = inputs[0]
                .and_then(|t| t.as_bool())
                .ok_or("Where condition must be bool")?;
            elementwise::where_(cond, fin(inputs, 1)?, fin(inputs, 2)?, g, need)
        }
        Op::PRelu => elementwise::prelu(x()?, fin(inputs, 1)?, g, need),
        Op::Clip {
            min,
            max,
            attr_form,
        } => {
            let (lo, hi) = args::clip_bounds(*min, *max, *attr_form, inputs)?;
            let mut r = elementwise::clip(x()?, lo, hi, g, need)?;
            for (i, slot) in r.iter_mut().enumerate().skip(1) {
                if let Some(b) = slot.take() {
                    *slot = Some(
                        b.into_shape_with_order(ndarray::IxDyn(&shape_of(inputs, i)?))
                            .map_err(|e| e.to_string())?,
                    );
                }
            }
            pad_to(r)
        }
        Op::Conv { window, group } => pad_to(linear::conv(
            x()?,
            fin(inputs, 1)?,
            window,
            *group,
            g,
            need,
        )?),
        Op::ConvTranspose(a) => pad_to(linear::conv_transpose(x()?, fin(inputs, 1)?, a, g, need)?),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let c_shape = inputs.get(2).copied().flatten().map(|t| t.shape().to_vec());
            pad_to(linear::gemm(
                x()?,
                fin(inputs, 1)?,
                c_shape.as_deref(),
                *alpha,
                *beta,
                *trans_a,
                *trans_b,
                g,
                need,
            )?)
        }
        Op::MatMul => linear::matmul(x()?, fin(inputs, 1)?, g, need),
        Op::BatchNorm { epsilon } => norm::batch_norm(inputs, *epsilon, g, need),
        Op::LayerNorm { axis, epsilon } => {
            pad_to(norm::layer_norm(inputs, *axis, *epsilon, g, need)?)
        }
        Op::InstanceNorm { epsilon } => norm::instance_norm(inputs, *epsilon, g, need),
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => norm::lrn(x()?, *size, *alpha, *beta, *bias, g),
        Op::Softmax { axis, legacy, log } => {
            norm::softmax(out_float(outputs, 0)?, *axis, *legacy, *log, g)
        }
        Op::Pool {
            kind,
            window,
            ceil_mode,
        } => pool::pool(x()?, out_float(outputs, 0)?, *kind, window, *ceil_mode, g),
        Op::GlobalPool(kind) => pool::global_pool(x()?, out_float(outputs, 0)?, *kind, g),
        Op::Resize(r) => {
            let xs = shape_of(inputs, 0)?;
            let plan = resize::plan(&xs, inputs, r)?;
            pad_to(shape::resize(&xs, &plan, g)?)
        }
        Op::Pad { mode, attr } => {
            let xs = shape_of(inputs, 0)?;
            let (pads, _, axes) = args::pad(attr, inputs)?;
            let (before, after) = fshape::pad_amounts(xs.len(), &pads, axes.as_deref())?;
            let mut r = shape::pad(&xs, &before, &after, *mode, g)?;
            // The constant fill: every output position without a source.
            r.resize(3, None);
            if need.get(2).copied().unwrap_or(false) && *mode == crate::ir::op::PadMode::Constant {
                let sent: S = r[0]
                    .as_ref()
                    .map(|gx| gx.iter().copied().sum())
                    .unwrap_or_else(S::zero);
                let total: S = g.iter().copied().sum();
                r[2] = Some(ndarray::ArrayD::from_elem(
                    ndarray::IxDyn(&shape_of(inputs, 2)?),
                    total - sent,
                ));
            }
            pad_to(r)
        }
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity
        | Op::Dropout => pad_to(shape::reshape(&shape_of(inputs, 0)?, g)?),
        Op::Cast { .. } | Op::CastLike => {
            let src = inputs[0].ok_or("input 0 is required")?;
            if src.dtype.is_float() && outputs[0].is_some_and(|o| o.dtype.is_float()) {
                pad_to(vec![Some(g.to_owned())])
            } else {
                none()
            }
        }
        Op::Transpose { perm } => {
            let p = fshape::resolve_perm(shape_of(inputs, 0)?.len(), perm.as_deref())?;
            shape::transpose(&p, g)
        }
        Op::Concat { axis } => {
            let shapes: Vec<Option<Vec<usize>>> = inputs
                .iter()
                .map(|t| t.map(|t| t.shape().to_vec()))
                .collect();
            shape::concat(&shapes, *axis, g, need)
        }
        Op::Slice { attr } => {
            let xs = shape_of(inputs, 0)?;
            let (s, e, a, st) = args::slice(attr, inputs)?;
            let info = fshape::slice_info(&xs, &s, &e, a.as_deref(), st.as_deref())?;
            pad_to(shape::slice(&xs, &info, g)?)
        }
        Op::Gather { axis } => {
            let idx = inputs[1].ok_or("indices are required")?;
            pad_to(shape::gather(
                &shape_of(inputs, 0)?,
                &ints(idx, "indices")?,
                idx.shape(),
                *axis,
                g,
            )?)
        }
        Op::GatherElements { axis } => {
            let idx = inputs[1]
                .and_then(|t| t.as_int())
                .ok_or("indices must be integers")?;
            pad_to(shape::gather_elements(
                &shape_of(inputs, 0)?,
                idx,
                *axis,
                g,
            )?)
        }
        Op::Expand => pad_to(shape::expand(&shape_of(inputs, 0)?, g)?),
        Op::Tile => pad_to(shape::tile(&shape_of(inputs, 0)?, g)?),
        Op::Reduce {
            kind,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let axes = args::axes_opt(axes, inputs)?;
            pad_to(reduce::reduce(
                x()?,
                out_float(outputs, 0)?,
                *kind,
                axes,
                *keepdims,
                *noop_with_empty_axes,
                g,
            )?)
        }
        Op::TopK { axis, .. } => {
            let idx = outputs
                .get(1)
                .copied()
                .flatten()
                .and_then(|t| t.as_int())
                .ok_or("TopK indices are required")?;
            pad_to(shape::top_k(&shape_of(inputs, 0)?, idx, *axis, g)?)
        }
        Op::Split { .. } => split(op, inputs, outputs, gy),
        Op::Compare(_)
        | Op::Logic(_)
        | Op::Not
        | Op::Shape { .. }
        | Op::Size
        | Op::Range
        | Op::ConstantOfShape { .. }
        | Op::Constant { .. }
        | Op::ArgExtreme { .. } => none(),
    }
}

fn split<S: Real>(
    op: &Op,
    inputs: &[Option<&Tensor<S>>],
    outputs: &[Option<&Tensor<S>>],
    gy: &[Option<&ArrayD<S>>],
) -> VjpResult<S> {
    let Op::Split { axis, .. } = op else {
        unreachable!("split rule on another op")
    };
    let out_shapes: Vec<Vec<usize>> = outputs
        .iter()
        .map(|o| {
            o.map(|t| t.shape().to_vec())
                .ok_or("Split outputs are required")
        })
        .collect::<Result<_, _>>()?;
    let mut r = shape::split(&shape_of(inputs, 0)?, &out_shapes, *axis, gy)?;
    r.resize(inputs.len(), None);
    Ok(r)
}
