//! Forward kernels, one file per op family, and the dispatch from `Op` to kernel.

pub mod args;
pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod resize;
pub mod shape;
pub mod util;

use crate::ir::Op;
use crate::ir::op::Binary;
use crate::tensor::Data;
use crate::tensor::{Real, Tensor, tensor_from_proto};
use ndarray::{ArrayD, IxDyn};
use util::{OpResult, opt, req, zip_assign};

/// Evaluates one op. `n_out` is the number of outputs the node declares.
pub fn eval<S: Real>(op: &Op, inputs: &[Option<&Tensor<S>>], n_out: usize) -> OpResult<S> {
    let x = || req(inputs, 0);
    match op {
        Op::Unary(u) => elementwise::unary(*u, x()?),
        Op::Binary(b) => elementwise::binary(*b, x()?, req(inputs, 1)?),
        Op::Compare(c) => elementwise::compare(*c, x()?, req(inputs, 1)?),
        Op::Logic(l) => elementwise::logic(*l, x()?, req(inputs, 1)?),
        Op::Not => elementwise::not(x()?),
        Op::Variadic(v) => elementwise::variadic(*v, inputs),
        Op::Where => elementwise::where_(x()?, req(inputs, 1)?, req(inputs, 2)?),
        Op::PRelu => elementwise::prelu(x()?, req(inputs, 1)?),
        Op::Clip {
            min,
            max,
            attr_form,
        } => {
            let (lo, hi) = args::clip_bounds(*min, *max, *attr_form, inputs)?;
            elementwise::clip(x()?, lo, hi)
        }
        Op::Conv { window, group } => {
            conv::conv(x()?, req(inputs, 1)?, opt(inputs, 2), window, *group)
        }
        Op::ConvTranspose(a) => conv::conv_transpose(x()?, req(inputs, 1)?, opt(inputs, 2), a),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => matmul::gemm_op(
            x()?,
            req(inputs, 1)?,
            opt(inputs, 2),
            *alpha,
            *beta,
            *trans_a,
            *trans_b,
        ),
        Op::MatMul => matmul::matmul(x()?, req(inputs, 1)?),
        Op::BatchNorm { epsilon } => norm::batch_norm(inputs, *epsilon),
        Op::LayerNorm { axis, epsilon } => norm::layer_norm(inputs, *axis, *epsilon, n_out),
        Op::InstanceNorm { epsilon } => norm::instance_norm(inputs, *epsilon),
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => norm::lrn(x()?, *size, *alpha, *beta, *bias),
        Op::Softmax { axis, legacy, log } => norm::softmax(x()?, *axis, *legacy, *log),
        Op::Pool {
            kind,
            window,
            ceil_mode,
        } => pool::pool(x()?, *kind, window, *ceil_mode),
        Op::GlobalPool(kind) => pool::global_pool(x()?, *kind),
        Op::Resize(r) => resize::resize(inputs, r),
        Op::Pad { mode, attr } => {
            let (pads, value, axes) = args::pad(attr, inputs)?;
            shape::pad(x()?, *mode, &pads, value, axes.as_deref())
        }
        Op::Flatten { axis } => shape::flatten(x()?, *axis),
        Op::Reshape { allowzero } => shape::reshape(x()?, req(inputs, 1)?, *allowzero),
        Op::Transpose { perm } => shape::transpose(x()?, perm.as_deref()),
        Op::Squeeze { axes } => shape::squeeze(x()?, args::axes_opt(axes, inputs)?),
        Op::Unsqueeze { axes } => shape::unsqueeze(x()?, &args::unsqueeze_axes(axes, inputs)?),
        Op::Split { axis, split } => {
            shape::split(x()?, *axis, args::split_sizes(split, inputs)?, n_out)
        }
        Op::Slice { attr } => {
            let (s, e, a, st) = args::slice(attr, inputs)?;
            shape::slice(x()?, &s, &e, a.as_deref(), st.as_deref())
        }
        Op::Concat { axis } => shape::concat(inputs, *axis),
        Op::Gather { axis } => shape::gather(x()?, req(inputs, 1)?, *axis),
        Op::GatherElements { axis } => shape::gather_elements(x()?, req(inputs, 1)?, *axis),
        Op::Expand => shape::expand(x()?, req(inputs, 1)?),
        Op::Tile => shape::tile(x()?, req(inputs, 1)?),
        Op::Cast { to } => shape::cast(x()?, *to),
        Op::CastLike => shape::cast(x()?, req(inputs, 1)?.dtype),
        Op::Shape { start, end } => shape::shape_of(x()?, *start, *end),
        Op::Size => shape::size(x()?),
        Op::Range => shape::range(x()?, req(inputs, 1)?, req(inputs, 2)?),
        Op::ConstantOfShape { value } => shape::constant_of_shape(x()?, value.as_ref()),
        Op::Constant { value } => Ok(vec![tensor_from_proto(value)?]),
        Op::Identity => Ok(vec![x()?.clone()]),
        Op::Dropout => {
            let t = x()?;
            let training =
                opt(inputs, 2).is_some_and(|m| m.to_f64_vec().first().is_some_and(|&v| v != 0.0));
            let ratio = opt(inputs, 1)
                .map(|r| r.to_f64_vec().first().copied().unwrap_or(0.0))
                .unwrap_or(0.5);
            if training && ratio > 0.0 {
                return Err("Dropout in training mode is not supported (inference only)".into());
            }
            let mut out = vec![t.clone()];
            if n_out > 1 {
                out.push(Tensor::bool(ArrayD::from_elem(IxDyn(t.shape()), true)));
            }
            Ok(out)
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => {
            let axes = args::axes_opt(axes, inputs)?;
            reduce::reduce(x()?, *kind, axes, *keepdims, *noop_with_empty_axes)
        }
        Op::ArgExtreme {
            max,
            axis,
            keepdims,
            select_last_index,
        } => reduce::arg_extreme(x()?, *max, *axis, *keepdims, *select_last_index),
        Op::TopK {
            axis,
            largest,
            sorted: _,
            k,
        } => reduce::top_k(x()?, args::top_k(*k, inputs)?, *axis, *largest),
    }
}

/// Runs `op` with its output written over `x` (its first input, which the caller no longer
/// needs) when the op is elementwise and keeps x's shape. Returns Ok(false), leaving `x`
/// unchanged, when the op has no in-place form for these inputs.
pub fn eval_inplace<S: Real>(
    op: &Op,
    x: &mut Tensor<S>,
    rest: &[Option<&Tensor<S>>],
) -> Result<bool, String> {
    let Data::Float(a) = &mut x.data else {
        return Ok(false);
    };
    // Work in memory order, so a lazily transposed input stays transposed (and uncopied).
    let Some(order) = util::memory_order(a) else {
        return Ok(false);
    };
    let shape: Vec<usize> = order.iter().map(|&ax| a.shape()[ax]).collect();
    let rank = shape.len();
    match op {
        Op::Identity => Ok(true),
        Op::Clip {
            min,
            max,
            attr_form,
        } => {
            let all: Vec<Option<&Tensor<S>>> =
                std::iter::once(None).chain(rest.iter().copied()).collect();
            let (lo, hi) = args::clip_bounds(*min, *max, *attr_form, &all)?;
            let act = elementwise::Act::Clip {
                lo: lo.unwrap_or(f64::NEG_INFINITY),
                hi: hi.unwrap_or(f64::INFINITY),
            };
            elementwise::apply_act(act, a.as_slice_memory_order_mut().expect("contiguous"));
            Ok(true)
        }
        Op::Unary(u) => {
            elementwise::apply_unary_inplace(
                *u,
                a.as_slice_memory_order_mut().expect("contiguous"),
            );
            Ok(true)
        }
        Op::Binary(b) => {
            let Some(Data::Float(y)) = rest.first().copied().flatten().map(|t| &t.data) else {
                return Ok(false);
            };
            // The other operand, read in x's memory order: either laid out exactly like x, or
            // a standard-layout tensor whose broadcast axes keep their order in memory.
            let same_layout =
                y.shape() == a.shape() && util::memory_order(y).as_ref() == Some(&order);
            let (ys, y_shape) = if same_layout {
                (y.as_slice_memory_order(), shape.clone())
            } else {
                match util::reorder_broadcast(y.shape(), rank, &order) {
                    Some(sh) => (y.as_slice(), sh),
                    None => return Ok(false),
                }
            };
            let Some(ys) = ys else {
                return Ok(false);
            };
            let xs = a.as_slice_memory_order_mut().expect("contiguous");
            Ok(match b {
                Binary::Add => zip_assign(xs, &shape, ys, &y_shape, |p, q| p + q),
                Binary::Sub => zip_assign(xs, &shape, ys, &y_shape, |p, q| p - q),
                Binary::Mul => zip_assign(xs, &shape, ys, &y_shape, |p, q| p * q),
                Binary::Div => zip_assign(xs, &shape, ys, &y_shape, |p, q| p / q),
                Binary::Pow => false,
            })
        }
        _ => Ok(false),
    }
}
