//! Data movement and shape logic, for every storage: Reshape, Flatten, Transpose, Squeeze,
//! Unsqueeze, Concat, Split, Slice, Gather, GatherElements, Expand, Tile, Pad, Shape, Size,
//! Range, ConstantOfShape, Cast.

use super::util::*;
use crate::ir::op::PadMode;
use crate::tensor::{Arr, DType, Data, Real, Tensor, tensor_from_proto};
use crate::{each_storage, try_each_storage};
use ndarray::{ArrayD, Axis, IxDyn, Slice, SliceInfoElem};

pub fn reshape<S: Real>(x: &Tensor<S>, shape: &Tensor<S>, allowzero: bool) -> OpResult<S> {
    let spec = ints(shape, "shape")?;
    let target = resolve_reshape(x.shape(), &spec, allowzero)?;
    Ok(vec![x.reshape(&target)])
}

pub fn resolve_reshape(
    input: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(format!("shape {spec:?} has more than one -1"));
                }
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                format!("shape {spec:?} copies axis {i} the input {input:?} lacks")
            })?),
            d if d < 0 => return Err(format!("shape {spec:?} has a negative dimension")),
            d => out.push(d as usize),
        }
    }
    // Checked: a hostile spec can name dimensions whose product overflows.
    let known = out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {spec:?} has more elements than can be addressed"))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} into {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} values) into {spec:?}"
        ));
    }
    Ok(out)
}

pub fn flatten<S: Real>(x: &Tensor<S>, axis_attr: i64) -> OpResult<S> {
    let sh = x.shape();
    let r = sh.len() as i64;
    let a = if axis_attr < 0 {
        axis_attr + r
    } else {
        axis_attr
    };
    if !(0..=r).contains(&a) {
        return Err(format!("axis {axis_attr} out of range for rank {r}"));
    }
    let a = a as usize;
    let outer: usize = sh[..a].iter().product();
    let inner: usize = sh[a..].iter().product();
    Ok(vec![x.reshape(&[outer, inner])])
}

/// Transpose's permutation for rank `r` (the default reverses the axes).
pub fn resolve_perm(r: usize, perm: Option<&[i64]>) -> Result<Vec<usize>, String> {
    Ok(match perm {
        Some(p) => {
            let v: Vec<usize> = p.iter().map(|&a| axis(a, r)).collect::<Result<_, _>>()?;
            let mut seen = vec![false; r];
            if v.len() != r || v.iter().any(|&a| std::mem::replace(&mut seen[a], true)) {
                return Err(format!("perm {p:?} is not a permutation of rank {r}"));
            }
            v
        }
        None => (0..r).rev().collect(),
    })
}

pub fn transpose<S: Real>(x: &Tensor<S>, perm: Option<&[i64]>) -> OpResult<S> {
    let p = resolve_perm(x.shape().len(), perm)?;
    // Lazy: only the strides change. Kernels that need contiguous data copy on demand, and
    // elementwise ops work in memory order, so a Transpose pair around them costs nothing.
    Ok(vec![
        each_storage!(x, a => a.clone().permuted_axes(IxDyn(&p))),
    ])
}

pub fn squeeze<S: Real>(x: &Tensor<S>, axes: Option<Vec<i64>>) -> OpResult<S> {
    let sh = x.shape();
    let drop: Vec<usize> = match axes {
        Some(ax) if !ax.is_empty() => {
            let v: Vec<usize> = ax
                .iter()
                .map(|&a| axis(a, sh.len()))
                .collect::<Result<_, _>>()?;
            if let Some(&bad) = v.iter().find(|&&a| sh[a] != 1) {
                return Err(format!("cannot squeeze axis {bad} of size {}", sh[bad]));
            }
            v
        }
        _ => (0..sh.len()).filter(|&i| sh[i] == 1).collect(),
    };
    let out: Vec<usize> = (0..sh.len())
        .filter(|i| !drop.contains(i))
        .map(|i| sh[i])
        .collect();
    Ok(vec![x.reshape(&out)])
}

pub fn unsqueeze<S: Real>(x: &Tensor<S>, axes: &[i64]) -> OpResult<S> {
    let sh = x.shape();
    let r = sh.len() + axes.len();
    let mut ins: Vec<usize> = axes.iter().map(|&a| axis(a, r)).collect::<Result<_, _>>()?;
    ins.sort_unstable();
    if ins.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("axes {axes:?} repeat"));
    }
    let mut out = Vec::with_capacity(r);
    let mut src = sh.iter();
    for i in 0..r {
        if ins.binary_search(&i).is_ok() {
            out.push(1);
        } else {
            out.push(*src.next().expect("rank"));
        }
    }
    Ok(vec![x.reshape(&out)])
}

pub fn concat<S: Real>(inputs: &[Option<&Tensor<S>>], axis_attr: i64) -> OpResult<S> {
    let ts: Vec<&Tensor<S>> = inputs.iter().flatten().copied().collect();
    let first = *ts.first().ok_or("Concat needs inputs")?;
    let ax = axis(axis_attr, first.shape().len())?;
    // ndarray's concatenate indexes every operand's axis before comparing ranks, so a lower-rank
    // operand would panic there instead of failing.
    if let Some(t) = ts.iter().find(|t| t.shape().len() != first.shape().len()) {
        return Err(format!(
            "Concat inputs have different ranks: {:?} and {:?}",
            first.shape(),
            t.shape()
        ));
    }
    fn cat<T: Clone>(arrs: Vec<&Arr<T>>, ax: usize) -> Result<ArrayD<T>, String> {
        let views: Vec<_> = arrs.iter().map(|a| a.view()).collect();
        ndarray::concatenate(Axis(ax), &views).map_err(|e| format!("Concat: {e}"))
    }
    let mismatch = || "Concat inputs have different element types".to_string();
    let data = match &first.data {
        Data::Float(_) => Data::Float(
            cat(
                ts.iter()
                    .map(|t| t.as_float().ok_or_else(mismatch))
                    .collect::<Result<_, _>>()?,
                ax,
            )?
            .into_shared(),
        ),
        Data::Int(_) => Data::Int(
            cat(
                ts.iter()
                    .map(|t| t.as_int().ok_or_else(mismatch))
                    .collect::<Result<_, _>>()?,
                ax,
            )?
            .into_shared(),
        ),
        Data::Bool(_) => Data::Bool(
            cat(
                ts.iter()
                    .map(|t| t.as_bool().ok_or_else(mismatch))
                    .collect::<Result<_, _>>()?,
                ax,
            )?
            .into_shared(),
        ),
    };
    Ok(vec![Tensor {
        dtype: first.dtype,
        data,
    }])
}

pub fn split<S: Real>(
    x: &Tensor<S>,
    axis_attr: i64,
    sizes: Option<Vec<i64>>,
    n_out: usize,
) -> OpResult<S> {
    let sh = x.shape();
    let ax = axis(axis_attr, sh.len())?;
    let len = sh[ax];
    let sizes: Vec<usize> = match sizes {
        Some(s) => {
            if s.len() != n_out || s.iter().any(|&v| v < 0) || s.iter().sum::<i64>() as usize != len
            {
                return Err(format!(
                    "split {s:?} does not divide axis of length {len} into {n_out} outputs"
                ));
            }
            s.iter().map(|&v| v as usize).collect()
        }
        None => {
            // Equal parts; the last may be smaller (opset 18 num_outputs semantics).
            let part = len.div_ceil(n_out.max(1));
            (0..n_out)
                .map(|i| part.min(len.saturating_sub(i * part)))
                .collect()
        }
    };
    let mut start = 0;
    let mut out = Vec::with_capacity(n_out);
    for s in sizes {
        let sl = Slice::from(start..start + s);
        out.push(each_storage!(x, a => a.slice_axis(Axis(ax), sl).to_owned()));
        start += s;
    }
    Ok(out)
}

/// ONNX Slice as ndarray slice info for an input of shape `sh` (also used by the gradient).
pub fn slice_info(
    sh: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<ndarray::SliceInfo<Vec<SliceInfoElem>, IxDyn, IxDyn>, String> {
    let r = sh.len();
    if starts.len() != ends.len() {
        return Err("starts and ends differ in length".into());
    }
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(v, r)).collect::<Result<_, _>>()?,
        None => (0..starts.len()).collect(),
    };
    if axes.len() != starts.len() || steps.is_some_and(|s| s.len() != starts.len()) {
        return Err("axes/steps and starts differ in length".into());
    }
    let mut elems: Vec<SliceInfoElem> = vec![
        SliceInfoElem::Slice {
            start: 0,
            end: None,
            step: 1
        };
        r
    ];
    for (i, &ax) in axes.iter().enumerate() {
        let step = steps.map(|s| s[i]).unwrap_or(1);
        if step == 0 {
            return Err("slice step 0".into());
        }
        let dim = sh[ax] as i64;
        let norm = |v: i64| if v < 0 { v + dim } else { v };
        let (s, e) = (norm(starts[i]), norm(ends[i]));
        elems[ax] = if step > 0 {
            let s = s.clamp(0, dim);
            let e = e.clamp(0, dim).max(s);
            SliceInfoElem::Slice {
                start: s as isize,
                end: Some(e as isize),
                step: step as isize,
            }
        } else {
            // Walk down from s (clamped into the axis) to just above e.
            let s = s.clamp(-1, dim - 1);
            let e = e.clamp(-1, dim - 1);
            if s <= e {
                SliceInfoElem::Slice {
                    start: 0,
                    end: Some(0),
                    step: 1,
                }
            } else {
                SliceInfoElem::Slice {
                    start: (e + 1) as isize,
                    end: Some((s + 1) as isize),
                    step: step as isize,
                }
            }
        };
    }
    ndarray::SliceInfo::<_, IxDyn, IxDyn>::try_from(elems).map_err(|e| e.to_string())
}

pub fn slice<S: Real>(
    x: &Tensor<S>,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> OpResult<S> {
    let info = slice_info(x.shape(), starts, ends, axes, steps)?;
    Ok(vec![
        each_storage!(x, a => a.slice(info.as_ref()).to_owned()),
    ])
}

pub fn gather<S: Real>(x: &Tensor<S>, idx: &Tensor<S>, axis_attr: i64) -> OpResult<S> {
    let sh = x.shape().to_vec();
    let ax = axis(axis_attr, sh.len())?;
    let indices = ints(idx, "indices")?;
    let dim = sh[ax] as i64;
    let resolved: Vec<usize> = indices
        .iter()
        .map(|&i| {
            let v = if i < 0 { i + dim } else { i };
            if (0..dim).contains(&v) {
                Ok(v as usize)
            } else {
                Err(format!("index {i} out of range for axis of size {dim}"))
            }
        })
        .collect::<Result<_, _>>()?;
    let mut out_shape = sh[..ax].to_vec();
    out_shape.extend(idx.shape());
    out_shape.extend(&sh[ax + 1..]);
    fn g<T: Clone>(
        a: &Arr<T>,
        ax: usize,
        idx: &[usize],
        out_shape: &[usize],
    ) -> Result<ArrayD<T>, String> {
        let sel = a.select(Axis(ax), idx);
        sel.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(out_shape))
            .map_err(|e| e.to_string())
    }
    Ok(vec![
        try_each_storage!(x, a => g(a, ax, &resolved, &out_shape)),
    ])
}

pub fn gather_elements<S: Real>(x: &Tensor<S>, idx: &Tensor<S>, axis_attr: i64) -> OpResult<S> {
    let sh = x.shape().to_vec();
    let ax = axis(axis_attr, sh.len())?;
    let ia = idx.as_int().ok_or("indices must be integers")?;
    if ia.ndim() != sh.len() {
        return Err("indices rank differs from data rank".into());
    }
    let dim = sh[ax] as i64;
    fn ge<T: Clone>(a: &Arr<T>, ia: &Arr<i64>, ax: usize, dim: i64) -> Result<ArrayD<T>, String> {
        let mut err = None;
        let out = ArrayD::from_shape_fn(ia.raw_dim(), |mut pos| {
            let i = ia[&pos];
            let v = if i < 0 { i + dim } else { i };
            if !(0..dim).contains(&v) {
                err = Some(format!("index {i} out of range"));
                return a.first().cloned().expect("non-empty");
            }
            pos[ax] = v as usize;
            a[&pos].clone()
        });
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
    if x.is_empty() && !idx.is_empty() {
        return Err("gather from an empty tensor".into());
    }
    Ok(vec![try_each_storage!(x, a => ge(a, ia, ax, dim))])
}

pub fn expand<S: Real>(x: &Tensor<S>, shape: &Tensor<S>) -> OpResult<S> {
    let spec: Vec<usize> = ints(shape, "shape")?
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| format!("negative dimension {v}")))
        .collect::<Result<_, _>>()?;
    let target = broadcast_shape(x.shape(), &spec)?;
    Ok(vec![
        try_each_storage!(x, a => view_as(a, &target).map(|v| v.to_owned())),
    ])
}

pub fn tile<S: Real>(x: &Tensor<S>, repeats: &Tensor<S>) -> OpResult<S> {
    let reps = ints(repeats, "repeats")?;
    let sh = x.shape().to_vec();
    if reps.len() != sh.len() || reps.iter().any(|&r| r < 0) {
        return Err(format!("repeats {reps:?} do not fit rank {}", sh.len()));
    }
    fn t<T: Clone>(a: &Arr<T>, reps: &[i64]) -> ArrayD<T> {
        let sh = a.shape();
        let out_shape: Vec<usize> = sh.iter().zip(reps).map(|(&d, &r)| d * r as usize).collect();
        ArrayD::from_shape_fn(IxDyn(&out_shape), |pos| {
            let src: Vec<usize> = (0..sh.len()).map(|i| pos[i] % sh[i]).collect();
            a[IxDyn(&src)].clone()
        })
    }
    Ok(vec![each_storage!(x, a => t(a, &reps))])
}

/// Per-axis (before, after) pads from ONNX's `pads` (begins then ends) over `axes`.
pub fn pad_amounts(
    r: usize,
    pads: &[i64],
    axes: Option<&[i64]>,
) -> Result<(Vec<i64>, Vec<i64>), String> {
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(v, r)).collect::<Result<_, _>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("pads {pads:?} do not fit {} axes", axes.len()));
    }
    let mut before = vec![0i64; r];
    let mut after = vec![0i64; r];
    for (i, &ax) in axes.iter().enumerate() {
        before[ax] = pads[i];
        after[ax] = pads[i + axes.len()];
    }
    Ok((before, after))
}

pub fn pad<S: Real>(
    x: &Tensor<S>,
    mode: PadMode,
    pads: &[i64],
    value: f64,
    axes: Option<&[i64]>,
) -> OpResult<S> {
    let sh = x.shape().to_vec();
    let r = sh.len();
    let (before, after) = pad_amounts(r, pads, axes)?;
    let out_shape: Vec<usize> = (0..r)
        .map(|i| {
            let d = sh[i] as i64 + before[i] + after[i];
            usize::try_from(d).map_err(|_| format!("pads {pads:?} remove more than axis {i} holds"))
        })
        .collect::<Result<_, _>>()?;
    if mode != PadMode::Constant && sh.iter().zip(&out_shape).any(|(&d, &o)| d == 0 && o > 0) {
        return Err("non-constant padding of an empty axis".into());
    }
    fn p<T: Copy + Send + Sync>(
        a: &Arr<T>,
        mode: PadMode,
        before: &[i64],
        after: &[i64],
        out_shape: &[usize],
        fill: T,
    ) -> ArrayD<T> {
        let std = standard(a);
        let v = super::layout::pad(
            std.as_slice().expect("standard"),
            a.shape(),
            before,
            after,
            mode,
            fill,
        );
        ArrayD::from_shape_vec(IxDyn(out_shape), v).expect("sized")
    }
    let data = match &x.data {
        Data::Float(a) => {
            Data::Float(p(a, mode, &before, &after, &out_shape, S::from_f64(value)).into_shared())
        }
        Data::Int(a) => {
            Data::Int(p(a, mode, &before, &after, &out_shape, value as i64).into_shared())
        }
        Data::Bool(a) => {
            Data::Bool(p(a, mode, &before, &after, &out_shape, value != 0.0).into_shared())
        }
    };
    Ok(vec![Tensor {
        dtype: x.dtype,
        data,
    }])
}

pub fn shape_of<S: Real>(x: &Tensor<S>, start: i64, end: Option<i64>) -> OpResult<S> {
    let sh = x.shape();
    let r = sh.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
    let v: Vec<i64> = sh[s..e.max(s)].iter().map(|&d| d as i64).collect();
    Ok(vec![Tensor::i64_vec(v)])
}

pub fn size<S: Real>(x: &Tensor<S>) -> OpResult<S> {
    Ok(vec![Tensor::i64(ArrayD::from_elem(
        IxDyn(&[]),
        x.len() as i64,
    ))])
}

pub fn range<S: Real>(start: &Tensor<S>, limit: &Tensor<S>, delta: &Tensor<S>) -> OpResult<S> {
    let (s, l, d) = (
        scalar_f64(start, "start")?,
        scalar_f64(limit, "limit")?,
        scalar_f64(delta, "delta")?,
    );
    if d == 0.0 {
        return Err("Range delta is 0".into());
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > 1e9 {
        return Err(format!("Range would hold {n} values"));
    }
    let n = n as usize;
    match &start.data {
        Data::Float(_) => {
            let (s, d) = (S::from_f64(s), S::from_f64(d));
            let mut v = Vec::with_capacity(n);
            let mut cur = s;
            for _ in 0..n {
                v.push(cur);
                cur += d;
            }
            Ok(vec![Tensor::float(
                start.dtype,
                ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"),
            )])
        }
        _ => {
            let v: Vec<i64> = (0..n as i64).map(|i| s as i64 + i * d as i64).collect();
            Ok(vec![Tensor::int(
                start.dtype,
                ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("1-D"),
            )])
        }
    }
}

pub fn constant_of_shape<S: Real>(
    shape: &Tensor<S>,
    value: Option<&crate::onnx::TensorProto>,
) -> OpResult<S> {
    let dims: Vec<usize> = ints(shape, "shape")?
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| format!("negative dimension {v}")))
        .collect::<Result<_, _>>()?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    if n > 1 << 32 {
        return Err(format!("ConstantOfShape of {n} values"));
    }
    let v: Tensor<S> = match value {
        Some(p) => tensor_from_proto(p)?,
        None => Tensor::f32(ArrayD::from_elem(IxDyn(&[1]), S::zero())),
    };
    if v.len() != 1 {
        return Err("ConstantOfShape value must hold one element".into());
    }
    let data = match &v.data {
        Data::Float(a) => {
            Data::Float(ArrayD::from_elem(IxDyn(&dims), *a.first().expect("one")).into_shared())
        }
        Data::Int(a) => {
            Data::Int(ArrayD::from_elem(IxDyn(&dims), *a.first().expect("one")).into_shared())
        }
        Data::Bool(a) => {
            Data::Bool(ArrayD::from_elem(IxDyn(&dims), *a.first().expect("one")).into_shared())
        }
    };
    Ok(vec![Tensor {
        dtype: v.dtype,
        data,
    }])
}

pub fn cast<S: Real>(x: &Tensor<S>, to: DType) -> OpResult<S> {
    Ok(vec![x.cast(to)])
}

#[cfg(test)]
mod tests {
    use super::{concat, resolve_reshape};
    use crate::tensor::Tensor;

    // Found by the fuzzer (a node's op type edited to Concat over a vector and a scalar):
    // ndarray's concatenate panicked on the scalar instead of the op failing.
    #[test]
    fn concat_of_different_ranks_is_an_error() {
        let v = Tensor::<f32>::i64_vec(vec![1, 2]);
        let s = Tensor::<f32>::i64(ndarray::ArrayD::from_elem(ndarray::IxDyn(&[]), 3));
        let e = concat(&[Some(&v), Some(&s)], 0).unwrap_err();
        assert!(e.contains("different ranks"), "{e}");
        let ok = concat(&[Some(&v), Some(&v)], 0).unwrap();
        assert_eq!(ok[0].shape(), &[4]);
    }

    // Found by the fuzzer (a mutated ViT reshape constant): the product of the requested
    // dimensions overflowed instead of being refused.
    #[test]
    fn a_reshape_whose_dimensions_overflow_is_an_error() {
        let e = resolve_reshape(&[1, 17, 64], &[-1, 17, i64::MAX / 4, 16], false).unwrap_err();
        assert!(e.contains("more elements"), "{e}");
        assert_eq!(
            resolve_reshape(&[1, 17, 64], &[-1, 17, 4, 16], false).unwrap(),
            vec![1, 17, 4, 16]
        );
    }
}
