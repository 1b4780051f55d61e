//! Helpers shared by the op kernels: input access, axis normalisation, broadcasting.

use crate::tensor::{Arr, DType, Data, Real, Tensor};
use ndarray::{ArrayD, ArrayViewD, IxDyn, Zip};

pub type OpResult<S> = Result<Vec<Tensor<S>>, String>;

/// Elements above which elementwise kernels split work across the rayon pool.
pub const PAR_MIN: usize = 1 << 15;

pub fn req<'a, S>(inputs: &[Option<&'a Tensor<S>>], i: usize) -> Result<&'a Tensor<S>, String> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is required"))
}

pub fn opt<'a, S>(inputs: &[Option<&'a Tensor<S>>], i: usize) -> Option<&'a Tensor<S>> {
    inputs.get(i).copied().flatten()
}

pub fn float<'a, S: Real>(t: &'a Tensor<S>, what: &str) -> Result<&'a Arr<S>, String> {
    t.as_float()
        .ok_or_else(|| format!("{what} must be a float tensor, got {}", t.dtype))
}

pub fn ints<S: Real>(t: &Tensor<S>, what: &str) -> Result<Vec<i64>, String> {
    match &t.data {
        Data::Int(a) => Ok(a.iter().copied().collect()),
        _ => Err(format!("{what} must be an integer tensor, got {}", t.dtype)),
    }
}

/// A scalar (or one-element tensor) as f64.
pub fn scalar_f64<S: Real>(t: &Tensor<S>, what: &str) -> Result<f64, String> {
    if t.len() != 1 {
        return Err(format!("{what} must hold one value, got shape {:?}", t.shape()));
    }
    Ok(t.to_f64_vec()[0])
}

/// Resolves a possibly negative axis against a rank.
pub fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

pub fn view_as<'a, T>(a: &'a Arr<T>, shape: &[usize]) -> Result<ArrayViewD<'a, T>, String> {
    a.broadcast(IxDyn(shape))
        .ok_or_else(|| format!("shape {:?} does not broadcast to {shape:?}", a.shape()))
}

/// Elementwise binary map with broadcasting; parallel for large outputs.
pub fn zip2<A, B, C>(a: &Arr<A>, b: &Arr<B>, f: impl Fn(A, B) -> C + Sync + Send) -> Result<ArrayD<C>, String>
where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    C: Copy + Send + Sync,
{
    if a.shape() == b.shape() {
        if let (Some(xs), Some(ys)) = (a.as_slice(), b.as_slice()) {
            let v: Vec<C> = if xs.len() >= PAR_MIN {
                use rayon::prelude::*;
                xs.par_iter().zip(ys.par_iter()).map(|(&x, &y)| f(x, y)).collect()
            } else {
                xs.iter().zip(ys).map(|(&x, &y)| f(x, y)).collect()
            };
            return Ok(ArrayD::from_shape_vec(IxDyn(a.shape()), v).expect("same size"));
        }
    }
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let av = view_as(a, &shape)?;
    let bv = view_as(b, &shape)?;
    let z = Zip::from(&av).and(&bv);
    Ok(if shape.iter().product::<usize>() >= PAR_MIN {
        z.par_map_collect(|&x, &y| f(x, y))
    } else {
        z.map_collect(|&x, &y| f(x, y))
    })
}

/// Elementwise unary map; parallel for large inputs.
pub fn map1<A, C>(a: &Arr<A>, f: impl Fn(A) -> C + Sync + Send) -> ArrayD<C>
where
    A: Copy + Send + Sync,
    C: Copy + Send + Sync,
{
    if let Some(xs) = a.as_slice() {
        let v: Vec<C> = if xs.len() >= PAR_MIN {
            use rayon::prelude::*;
            xs.par_iter().map(|&x| f(x)).collect()
        } else {
            xs.iter().map(|&x| f(x)).collect()
        };
        return ArrayD::from_shape_vec(IxDyn(a.shape()), v).expect("same size");
    }
    if a.len() >= PAR_MIN {
        Zip::from(a).par_map_collect(|&x| f(x))
    } else {
        a.map(|&x| f(x))
    }
}

/// The float dtype an op's result carries: that of its first float input.
pub fn float_dtype<S: Real>(inputs: &[Option<&Tensor<S>>]) -> DType {
    inputs
        .iter()
        .flatten()
        .find(|t| t.dtype.is_float())
        .map(|t| t.dtype)
        .unwrap_or(DType::F32)
}

/// Applies `$body` to whichever storage `$t` has, rebuilding a tensor of the same storage and
/// dtype. `$a` names the array inside the body.
#[macro_export]
macro_rules! each_storage {
    ($t:expr, $a:ident => $body:expr) => {{
        let t = $t;
        let data = match &t.data {
            $crate::tensor::Data::Float($a) => $crate::tensor::Data::Float($body.into_shared()),
            $crate::tensor::Data::Int($a) => $crate::tensor::Data::Int($body.into_shared()),
            $crate::tensor::Data::Bool($a) => $crate::tensor::Data::Bool($body.into_shared()),
        };
        $crate::tensor::Tensor {
            dtype: t.dtype,
            data,
        }
    }};
}

/// Like `each_storage!` but the body returns `Result<ArrayD<_>, String>`.
#[macro_export]
macro_rules! try_each_storage {
    ($t:expr, $a:ident => $body:expr) => {{
        let t = $t;
        let data = match &t.data {
            $crate::tensor::Data::Float($a) => $crate::tensor::Data::Float($body?.into_shared()),
            $crate::tensor::Data::Int($a) => $crate::tensor::Data::Int($body?.into_shared()),
            $crate::tensor::Data::Bool($a) => $crate::tensor::Data::Bool($body?.into_shared()),
        };
        $crate::tensor::Tensor {
            dtype: t.dtype,
            data,
        }
    }};
}
