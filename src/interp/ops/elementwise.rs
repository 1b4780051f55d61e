//! Elementwise ops: activations, arithmetic with broadcasting, comparisons, logic, Where.

use super::util::*;
use crate::ir::op::{Binary, Compare, Logic, Unary, Variadic};
use crate::tensor::{Data, Real, Tensor};
use ndarray::{ArrayD, IxDyn, Zip};

/// One activation applied to one scalar. Callers pass a variant built from constants inside
/// their loop (see `apply_unary_inplace`), so the match folds away and the loop vectorises.
#[inline(always)]
pub fn unary_scalar<S: Real>(u: Unary, x: S) -> S {
    let c = S::from_f64;
    match u {
        Unary::Relu => x.max(S::zero()),
        Unary::Sigmoid => x.sigmoid(),
        Unary::Tanh => x.tanh(),
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Reciprocal => x.recip(),
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Erf => x.erf(),
        Unary::Floor => x.floor(),
        Unary::Ceil => x.ceil(),
        Unary::Round => x.round_even(),
        Unary::Sign => {
            if x > S::zero() {
                S::one()
            } else if x < S::zero() {
                -S::one()
            } else {
                x
            }
        }
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        // ln(1 + e^x) without overflow for large x.
        Unary::Softplus => {
            if x > S::zero() {
                x + (S::one() + (-x).exp()).ln()
            } else {
                (S::one() + x.exp()).ln()
            }
        }
        Unary::Softsign => x / (S::one() + x.abs()),
        Unary::HardSwish => x * (x * c(1.0 / 6.0) + c(0.5)).max(S::zero()).min(S::one()),
        Unary::LeakyRelu { alpha } => {
            if x < S::zero() {
                x * c(alpha as f64)
            } else {
                x
            }
        }
        Unary::Elu { alpha } => {
            if x < S::zero() {
                c(alpha as f64) * (x.exp() - S::one())
            } else {
                x
            }
        }
        Unary::Selu { alpha, gamma } => {
            let g = c(gamma as f64);
            if x <= S::zero() {
                g * c(alpha as f64) * (x.exp() - S::one())
            } else {
                g * x
            }
        }
        Unary::Celu { alpha } => {
            let a = c(alpha as f64);
            x.max(S::zero()) + (a * ((x / a).exp() - S::one())).min(S::zero())
        }
        Unary::HardSigmoid { alpha, beta } => (c(alpha as f64) * x + c(beta as f64))
            .max(S::zero())
            .min(S::one()),
        Unary::ThresholdedRelu { alpha } => {
            if x > c(alpha as f64) {
                x
            } else {
                S::zero()
            }
        }
        Unary::Gelu { tanh: false } => {
            c(0.5) * x * (S::one() + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf())
        }
        Unary::Gelu { tanh: true } => {
            let k = c((2.0 / std::f64::consts::PI).sqrt());
            c(0.5) * x * (S::one() + (k * (x + c(0.044715) * x * x * x)).tanh())
        }
    }
}

/// Applies an activation over a slice in place. Each arm rebuilds the variant from constants
/// so the compiler specialises (and vectorises) the loop per activation.
pub fn apply_unary_inplace<S: Real>(u: Unary, xs: &mut [S]) {
    macro_rules! go {
        ($v:expr) => {{
            let v = $v;
            xs.iter_mut().for_each(|x| *x = unary_scalar(v, *x))
        }};
    }
    match u {
        Unary::Relu => go!(Unary::Relu),
        Unary::Sigmoid => go!(Unary::Sigmoid),
        Unary::Tanh => go!(Unary::Tanh),
        Unary::Exp => go!(Unary::Exp),
        Unary::Log => go!(Unary::Log),
        Unary::Sqrt => go!(Unary::Sqrt),
        Unary::Reciprocal => go!(Unary::Reciprocal),
        Unary::Neg => go!(Unary::Neg),
        Unary::Abs => go!(Unary::Abs),
        Unary::Erf => go!(Unary::Erf),
        Unary::Floor => go!(Unary::Floor),
        Unary::Ceil => go!(Unary::Ceil),
        Unary::Round => go!(Unary::Round),
        Unary::Sign => go!(Unary::Sign),
        Unary::Sin => go!(Unary::Sin),
        Unary::Cos => go!(Unary::Cos),
        Unary::Softplus => go!(Unary::Softplus),
        Unary::Softsign => go!(Unary::Softsign),
        Unary::HardSwish => go!(Unary::HardSwish),
        Unary::LeakyRelu { alpha } => go!(Unary::LeakyRelu { alpha }),
        Unary::Elu { alpha } => go!(Unary::Elu { alpha }),
        Unary::Selu { alpha, gamma } => go!(Unary::Selu { alpha, gamma }),
        Unary::Celu { alpha } => go!(Unary::Celu { alpha }),
        Unary::HardSigmoid { alpha, beta } => go!(Unary::HardSigmoid { alpha, beta }),
        Unary::ThresholdedRelu { alpha } => go!(Unary::ThresholdedRelu { alpha }),
        Unary::Gelu { tanh: true } => go!(Unary::Gelu { tanh: true }),
        Unary::Gelu { tanh: false } => go!(Unary::Gelu { tanh: false }),
    }
}

/// An activation fused into the op that produces its input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    Unary(Unary),
    Clip { lo: f64, hi: f64 },
}

pub fn apply_act<S: Real>(act: Act, ys: &mut [S]) {
    match act {
        Act::Unary(u) => apply_unary_inplace(u, ys),
        Act::Clip { lo, hi } => {
            let (lo, hi) = (S::from_f64(lo), S::from_f64(hi));
            // Lower bound first, then upper: with lo > hi every value becomes hi, as ONNX says.
            ys.iter_mut().for_each(|v| {
                if *v < lo {
                    *v = lo;
                }
                if *v > hi {
                    *v = hi;
                }
            });
        }
    }
}

pub fn unary<S: Real>(u: Unary, x: &Tensor<S>) -> OpResult<S> {
    match &x.data {
        Data::Float(a) => {
            let mut v = a
                .as_standard_layout()
                .into_owned()
                .into_raw_vec_and_offset()
                .0;
            if v.len() >= PAR_MIN {
                use rayon::prelude::*;
                v.par_chunks_mut(PAR_MIN / 4)
                    .for_each(|c| apply_unary_inplace(u, c));
            } else {
                apply_unary_inplace(u, &mut v);
            }
            Ok(vec![Tensor::float(
                x.dtype,
                ArrayD::from_shape_vec(IxDyn(a.shape()), v).expect("sized"),
            )])
        }
        Data::Int(a) => {
            let f: fn(i64) -> i64 = match u {
                Unary::Neg => |v| v.wrapping_neg(),
                Unary::Abs => |v| v.wrapping_abs(),
                Unary::Sign => i64::signum,
                Unary::Relu => |v| v.max(0),
                _ => return Err(format!("{u:?} needs a float input, got {}", x.dtype)),
            };
            Ok(vec![Tensor::int(
                x.dtype,
                map1(a, |v| x.dtype.wrap_int(f(v))),
            )])
        }
        Data::Bool(_) => Err(format!("{u:?} does not take bool input")),
    }
}

pub fn binary<S: Real>(op: Binary, a: &Tensor<S>, b: &Tensor<S>) -> OpResult<S> {
    match (&a.data, &b.data) {
        (Data::Float(x), Data::Float(y)) => {
            let out = match op {
                Binary::Add => zip2(x, y, |p, q| p + q)?,
                Binary::Sub => zip2(x, y, |p, q| p - q)?,
                Binary::Mul => zip2(x, y, |p, q| p * q)?,
                Binary::Div => zip2(x, y, |p, q| p / q)?,
                Binary::Pow => zip2(x, y, pow::<S>)?,
            };
            Ok(vec![Tensor::float(a.dtype, out)])
        }
        (Data::Float(x), Data::Int(y)) if op == Binary::Pow => {
            let out = zip2(x, y, |p, q| pow(p, S::from_f64(q as f64)))?;
            Ok(vec![Tensor::float(a.dtype, out)])
        }
        (Data::Int(x), Data::Float(y)) if op == Binary::Pow => {
            let out = zip2(x, y, |p, q| {
                a.dtype.wrap_int((p as f64).powf(q.to_f64()) as i64)
            })?;
            Ok(vec![Tensor::int(a.dtype, out)])
        }
        (Data::Int(x), Data::Int(y)) => {
            if op == Binary::Div && y.iter().any(|&v| v == 0) {
                return Err("integer division by zero".into());
            }
            let dt = a.dtype;
            let out = match op {
                Binary::Add => zip2(x, y, |p, q| dt.wrap_int(p.wrapping_add(q)))?,
                Binary::Sub => zip2(x, y, |p, q| dt.wrap_int(p.wrapping_sub(q)))?,
                Binary::Mul => zip2(x, y, |p, q| dt.wrap_int(p.wrapping_mul(q)))?,
                Binary::Div => zip2(x, y, |p, q| dt.wrap_int(p.wrapping_div(q)))?,
                Binary::Pow => zip2(x, y, |p, q| dt.wrap_int((p as f64).powf(q as f64) as i64))?,
            };
            Ok(vec![Tensor::int(dt, out)])
        }
        _ => Err(format!(
            "{op:?} of {} and {} is not supported",
            a.dtype, b.dtype
        )),
    }
}

fn pow<S: Real>(p: S, q: S) -> S {
    // Integer exponents by repeated multiplication: exact for negative bases, as numpy.
    let qf = q.to_f64();
    if qf == qf.trunc() && qf.abs() <= 64.0 {
        let mut r = S::one();
        for _ in 0..qf.abs() as u32 {
            r *= p;
        }
        if qf < 0.0 { r.recip() } else { r }
    } else {
        p.powf(q)
    }
}

pub fn compare<S: Real>(op: Compare, a: &Tensor<S>, b: &Tensor<S>) -> OpResult<S> {
    fn cmp<T: PartialOrd + Copy + Send + Sync>(
        op: Compare,
        x: &crate::tensor::Arr<T>,
        y: &crate::tensor::Arr<T>,
    ) -> Result<ArrayD<bool>, String> {
        match op {
            Compare::Equal => zip2(x, y, |p, q| p == q),
            Compare::Less => zip2(x, y, |p, q| p < q),
            Compare::Greater => zip2(x, y, |p, q| p > q),
            Compare::LessOrEqual => zip2(x, y, |p, q| p <= q),
            Compare::GreaterOrEqual => zip2(x, y, |p, q| p >= q),
        }
    }
    let out = match (&a.data, &b.data) {
        (Data::Float(x), Data::Float(y)) => cmp(op, x, y)?,
        (Data::Int(x), Data::Int(y)) => cmp(op, x, y)?,
        (Data::Bool(x), Data::Bool(y)) => cmp(op, x, y)?,
        _ => return Err(format!("{op:?} of {} and {}", a.dtype, b.dtype)),
    };
    Ok(vec![Tensor::bool(out)])
}

pub fn logic<S: Real>(op: Logic, a: &Tensor<S>, b: &Tensor<S>) -> OpResult<S> {
    let (Data::Bool(x), Data::Bool(y)) = (&a.data, &b.data) else {
        return Err(format!(
            "{op:?} needs bool inputs, got {} and {}",
            a.dtype, b.dtype
        ));
    };
    let out = match op {
        Logic::And => zip2(x, y, |p, q| p && q)?,
        Logic::Or => zip2(x, y, |p, q| p || q)?,
        Logic::Xor => zip2(x, y, |p, q| p != q)?,
    };
    Ok(vec![Tensor::bool(out)])
}

pub fn not<S: Real>(a: &Tensor<S>) -> OpResult<S> {
    let x = a
        .as_bool()
        .ok_or_else(|| format!("Not needs a bool input, got {}", a.dtype))?;
    Ok(vec![Tensor::bool(map1(x, |v| !v))])
}

pub fn variadic<S: Real>(op: Variadic, inputs: &[Option<&Tensor<S>>]) -> OpResult<S> {
    let ts: Vec<&Tensor<S>> = inputs.iter().flatten().copied().collect();
    let first = *ts.first().ok_or("needs at least one input")?;
    let mut acc = first.clone();
    for t in &ts[1..] {
        acc = match (&acc.data, &t.data) {
            (Data::Float(x), Data::Float(y)) => Tensor::float(
                acc.dtype,
                match op {
                    Variadic::Sum | Variadic::Mean => zip2(x, y, |p, q| p + q)?,
                    Variadic::Max => {
                        zip2(x, y, |p: S, q: S| if q.is_nan() { q } else { p.max(q) })?
                    }
                    Variadic::Min => {
                        zip2(x, y, |p: S, q: S| if q.is_nan() { q } else { p.min(q) })?
                    }
                },
            ),
            (Data::Int(x), Data::Int(y)) => Tensor::int(
                acc.dtype,
                match op {
                    Variadic::Sum | Variadic::Mean => zip2(x, y, |p, q| p.wrapping_add(q))?,
                    Variadic::Max => zip2(x, y, |p: i64, q: i64| p.max(q))?,
                    Variadic::Min => zip2(x, y, |p: i64, q: i64| p.min(q))?,
                },
            ),
            _ => return Err(format!("{op:?} of {} and {}", acc.dtype, t.dtype)),
        };
    }
    if op == Variadic::Mean {
        let n = S::from_f64(ts.len() as f64);
        let x = float(&acc, "Mean input")?;
        acc = Tensor::float(acc.dtype, map1(x, |v| v / n));
    }
    // A single input still needs the broadcast shape of… itself; copy to own the result.
    Ok(vec![acc])
}

pub fn where_<S: Real>(c: &Tensor<S>, x: &Tensor<S>, y: &Tensor<S>) -> OpResult<S> {
    let cond = c
        .as_bool()
        .ok_or_else(|| format!("Where condition must be bool, got {}", c.dtype))?;
    let shape = broadcast_shape(&broadcast_shape(c.shape(), x.shape())?, y.shape())?;
    let cv = view_as(cond, &shape)?;
    fn sel<T: Copy + Send + Sync>(
        cv: &ndarray::ArrayViewD<bool>,
        a: &crate::tensor::Arr<T>,
        b: &crate::tensor::Arr<T>,
        shape: &[usize],
    ) -> Result<ArrayD<T>, String> {
        let av = view_as(a, shape)?;
        let bv = view_as(b, shape)?;
        Ok(Zip::from(cv)
            .and(&av)
            .and(&bv)
            .map_collect(|&c, &p, &q| if c { p } else { q }))
    }
    let data = match (&x.data, &y.data) {
        (Data::Float(a), Data::Float(b)) => Data::Float(sel(&cv, a, b, &shape)?.into_shared()),
        (Data::Int(a), Data::Int(b)) => Data::Int(sel(&cv, a, b, &shape)?.into_shared()),
        (Data::Bool(a), Data::Bool(b)) => Data::Bool(sel(&cv, a, b, &shape)?.into_shared()),
        _ => return Err(format!("Where of {} and {}", x.dtype, y.dtype)),
    };
    Ok(vec![Tensor {
        dtype: x.dtype,
        data,
    }])
}

pub fn prelu<S: Real>(x: &Tensor<S>, slope: &Tensor<S>) -> OpResult<S> {
    let a = float(x, "X")?;
    let s = float(slope, "slope")?;
    let sv = view_as(s, a.shape())?;
    let out = Zip::from(a)
        .and(&sv)
        .map_collect(|&v, &k| if v < S::zero() { v * k } else { v });
    Ok(vec![Tensor::float(x.dtype, out)])
}

pub fn clip<S: Real>(x: &Tensor<S>, lo: Option<f64>, hi: Option<f64>) -> OpResult<S> {
    match &x.data {
        Data::Float(a) => {
            let lo = lo.map(S::from_f64);
            let hi = hi.map(S::from_f64);
            Ok(vec![Tensor::float(
                x.dtype,
                map1(a, move |v| {
                    let v = match lo {
                        Some(l) if v < l => l,
                        _ => v,
                    };
                    match hi {
                        Some(h) if v > h => h,
                        _ => v,
                    }
                }),
            )])
        }
        Data::Int(a) => {
            let lo = lo.map(|v| v as i64).unwrap_or(i64::MIN);
            let hi = hi.map(|v| v as i64).unwrap_or(i64::MAX);
            Ok(vec![Tensor::int(
                x.dtype,
                map1(a, move |v| v.max(lo).min(hi)),
            )])
        }
        Data::Bool(_) => Err("Clip does not take bool input".into()),
    }
}

/// A scalar shape-[] tensor of the same storage, for tests and folding.
pub fn scalar<S: Real>(v: S) -> Tensor<S> {
    Tensor::f32(ArrayD::from_elem(IxDyn(&[]), v))
}
