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
        return Err(format!(
            "{what} must hold one value, got shape {:?}",
            t.shape()
        ));
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
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
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

/// How one operand of a broadcast elementwise op is read, row by row, along a contiguous
/// output split into rows of `row` elements: each row reads either a contiguous run of the
/// operand or one operand element repeated.
#[derive(Debug, Clone)]
enum RowAccess {
    /// Row r reads operand[(r·row) % period ..][..row].
    Run { period: usize },
    /// Row r reads the single element operand[index(r)], where `index` walks the output's
    /// leading dims `dims` with the operand's `strides` (0 on broadcast axes); `group` output
    /// rows share one element.
    Repeat {
        dims: Vec<usize>,
        strides: Vec<usize>,
        group: usize,
    },
}

impl RowAccess {
    #[inline]
    fn start(&self, r: usize, row: usize) -> usize {
        match self {
            RowAccess::Run { period } => (r * row) % period,
            RowAccess::Repeat {
                dims,
                strides,
                group,
            } => {
                let mut q = r / group;
                let mut idx = 0;
                for (d, s) in dims.iter().zip(strides).rev() {
                    idx += (q % d) * s;
                    q /= d;
                }
                idx
            }
        }
    }
}

/// The row length and access pattern for reading `operand` (contiguous) broadcast to `out`, or
/// None when the pattern needs the general strided path.
fn row_access(out: &[usize], operand: &[usize]) -> Option<(usize, RowAccess)> {
    let n = out.len();
    if operand.len() > n {
        return None;
    }
    let b: Vec<usize> = std::iter::repeat_n(1, n - operand.len())
        .chain(operand.iter().copied())
        .collect();
    let total: usize = out.iter().product();
    if operand.iter().product::<usize>() == 1 {
        return Some((
            total.max(1),
            RowAccess::Repeat {
                dims: Vec::new(),
                strides: Vec::new(),
                group: 1,
            },
        ));
    }
    // Leading broadcast axes, then the operand's full trailing axes: it repeats with a period.
    let lead = b.iter().position(|&d| d != 1).unwrap_or(n);
    if b[lead..] == out[lead..] {
        let period: usize = out[lead..].iter().product();
        return Some((
            period.max(1).min(total.max(1)),
            RowAccess::Run {
                period: period.max(1),
            },
        ));
    }
    // Trailing broadcast axes: each operand element covers a run of the output.
    let k = (0..n)
        .rev()
        .find(|&i| b[i] != 1)
        .map(|i| i + 1)
        .unwrap_or(0);
    if b[..k]
        .iter()
        .zip(&out[..k])
        .all(|(&x, &o)| x == o || x == 1)
    {
        let inner: usize = out[k..].iter().product();
        let mut strides = vec![0; k];
        let mut s = 1;
        for i in (0..k).rev() {
            if b[i] != 1 {
                strides[i] = s;
                s *= b[i];
            }
        }
        return Some((
            inner.max(1),
            RowAccess::Repeat {
                dims: out[..k].to_vec(),
                strides,
                group: 1,
            },
        ));
    }
    None
}

/// Picks one row length that suits both operands' access patterns.
fn joint_rows(out: &[usize], a: &[usize], b: &[usize]) -> Option<(usize, RowAccess, RowAccess)> {
    let (ra, pa) = row_access(out, a)?;
    let (rb, pb) = row_access(out, b)?;
    let row = ra.min(rb);
    if row == 0 || ra % row != 0 || rb % row != 0 {
        return None;
    }
    let fix = |r: usize, p: RowAccess| match p {
        RowAccess::Repeat { dims, strides, .. } => RowAccess::Repeat {
            dims,
            strides,
            group: r / row,
        },
        run => run,
    };
    Some((row, fix(ra, pa), fix(rb, pb)))
}

/// Elementwise binary map with numpy broadcasting. Contiguous operands go through a row kernel
/// (runs and repeated scalars vectorise); anything else takes ndarray's strided Zip.
pub fn zip2<A, B, C>(
    a: &Arr<A>,
    b: &Arr<B>,
    f: impl Fn(A, B) -> C + Sync + Send,
) -> Result<ArrayD<C>, String>
where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
    C: Copy + Send + Sync + Default,
{
    let shape = broadcast_shape(a.shape(), b.shape())?;
    let total: usize = shape.iter().product();
    if let (Some(xs), Some(ys)) = (a.as_slice(), b.as_slice())
        && let Some((row, pa, pb)) = joint_rows(&shape, a.shape(), b.shape())
    {
        let mut out = vec![C::default(); total];
        let kernel = |(r, o): (usize, &mut [C])| {
            let (sa, sb) = (pa.start(r, row), pb.start(r, row));
            match (&pa, &pb) {
                (RowAccess::Run { .. }, RowAccess::Run { .. }) => {
                    for ((o, &x), &y) in o.iter_mut().zip(&xs[sa..sa + row]).zip(&ys[sb..sb + row])
                    {
                        *o = f(x, y);
                    }
                }
                (RowAccess::Run { .. }, RowAccess::Repeat { .. }) => {
                    let y = ys[sb];
                    for (o, &x) in o.iter_mut().zip(&xs[sa..sa + row]) {
                        *o = f(x, y);
                    }
                }
                (RowAccess::Repeat { .. }, RowAccess::Run { .. }) => {
                    let x = xs[sa];
                    for (o, &y) in o.iter_mut().zip(&ys[sb..sb + row]) {
                        *o = f(x, y);
                    }
                }
                (RowAccess::Repeat { .. }, RowAccess::Repeat { .. }) => o.fill(f(xs[sa], ys[sb])),
            }
        };
        if total >= PAR_MIN {
            use rayon::prelude::*;
            out.par_chunks_mut(row).enumerate().for_each(kernel);
        } else {
            out.chunks_mut(row).enumerate().for_each(kernel);
        }
        return Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).expect("sized"));
    }
    let av = view_as(a, &shape)?;
    let bv = view_as(b, &shape)?;
    let z = Zip::from(&av).and(&bv);
    Ok(if total >= PAR_MIN {
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

/// `a[i] = f(a[i], b[i])` with `b` (contiguous, shape `b_shape`) broadcast to `a`'s shape, which
/// must be the result shape; returns false, leaving `a` alone, when `b` does not broadcast that
/// way.
pub fn zip_assign<A, B>(
    a: &mut [A],
    a_shape: &[usize],
    ys: &[B],
    b_shape: &[usize],
    f: impl Fn(A, B) -> A + Sync + Send,
) -> bool
where
    A: Copy + Send + Sync,
    B: Copy + Send + Sync,
{
    if broadcast_shape(a_shape, b_shape).ok().as_deref() != Some(a_shape) {
        return false;
    }
    let Some((row, pb)) = row_access(a_shape, b_shape) else {
        return false;
    };
    let kernel = |(r, xs): (usize, &mut [A])| {
        let sb = pb.start(r, row);
        match pb {
            RowAccess::Run { .. } => {
                for (x, &y) in xs.iter_mut().zip(&ys[sb..sb + row]) {
                    *x = f(*x, y);
                }
            }
            RowAccess::Repeat { .. } => {
                let y = ys[sb];
                xs.iter_mut().for_each(|x| *x = f(*x, y));
            }
        }
    };
    if a.len() >= PAR_MIN {
        use rayon::prelude::*;
        a.par_chunks_mut(row).enumerate().for_each(kernel);
    } else {
        a.chunks_mut(row).enumerate().for_each(kernel);
    }
    true
}

/// The order of `a`'s axes from outermost to innermost in memory, when `a` is one contiguous
/// buffer in that order (standard layout, or a permutation of one, as a lazy Transpose gives).
pub fn memory_order<T>(a: &Arr<T>) -> Option<Vec<usize>> {
    let r = a.ndim();
    if a.is_standard_layout() {
        return Some((0..r).collect());
    }
    a.as_slice_memory_order()?;
    let strides = a.strides();
    let mut order: Vec<usize> = (0..r).collect();
    // Length-1 axes have arbitrary strides; put them first, they do not move data.
    order.sort_by_key(|&ax| (a.shape()[ax] != 1, std::cmp::Reverse(strides[ax])));
    let mut expect = 1isize;
    for &ax in order.iter().rev() {
        if a.shape()[ax] != 1 {
            if strides[ax] != expect {
                return None;
            }
            expect *= a.shape()[ax] as isize;
        }
    }
    Some(order)
}

/// `b`'s shape seen in the memory order `order` of a rank-`r` result, when `b`'s contiguous data
/// can be read that way unchanged (its non-1 axes keep their relative order).
pub fn reorder_broadcast(b_shape: &[usize], r: usize, order: &[usize]) -> Option<Vec<usize>> {
    if b_shape.len() > r {
        return None;
    }
    let aligned: Vec<usize> = std::iter::repeat_n(1, r - b_shape.len())
        .chain(b_shape.iter().copied())
        .collect();
    let non1: Vec<usize> = (0..r).filter(|&i| aligned[i] != 1).collect();
    let seen: Vec<usize> = order.iter().copied().filter(|&i| aligned[i] != 1).collect();
    (non1 == seen).then(|| order.iter().map(|&ax| aligned[ax]).collect())
}

/// `a` in standard (row-major) layout: borrowed when it already is; a lazily transposed tensor
/// (one contiguous buffer in another axis order) is permuted with the tiled kernel, which is much
/// faster than an element-wise strided copy.
pub fn standard<T: Copy + Send + Sync>(a: &Arr<T>) -> ndarray::CowArray<'_, T, IxDyn> {
    if a.is_standard_layout() {
        return ndarray::CowArray::from(a.view());
    }
    if let Some(order) = memory_order(a) {
        let mem_shape: Vec<usize> = order.iter().map(|&ax| a.shape()[ax]).collect();
        let inv: Vec<usize> = (0..order.len())
            .map(|i| order.iter().position(|&o| o == i).expect("permutation"))
            .collect();
        let v = super::layout::permute(
            a.as_slice_memory_order().expect("contiguous"),
            &mem_shape,
            &inv,
        );
        return ndarray::CowArray::from(ArrayD::from_shape_vec(a.raw_dim(), v).expect("sized"));
    }
    a.as_standard_layout()
}
