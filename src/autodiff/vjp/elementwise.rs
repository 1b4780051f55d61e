//! Backward rules of elementwise ops. Derivatives are written in `Real` arithmetic on the
//! forward values, so on dual numbers they carry second-order information too.

use super::util::*;
use crate::ir::op::{Binary, Unary, Variadic};
use crate::tensor::{Arr, Real, Tensor};
use ndarray::ArrayD;

/// dy/dx of an activation at input `x` with output `y`.
pub fn unary_deriv<S: Real>(u: Unary, x: S, y: S) -> S {
    let c = S::from_f64;
    let (zero, one) = (S::zero(), S::one());
    match u {
        Unary::Relu => {
            if x > zero {
                one
            } else {
                zero
            }
        }
        Unary::Sigmoid => y * (one - y),
        Unary::Tanh => one - y * y,
        Unary::Exp => y,
        Unary::Log => x.recip(),
        Unary::Sqrt => c(0.5) / y,
        Unary::Reciprocal => -(y * y),
        Unary::Neg => -one,
        Unary::Abs => {
            if x > zero {
                one
            } else if x < zero {
                -one
            } else {
                zero
            }
        }
        Unary::Erf => c(std::f64::consts::FRAC_2_SQRT_PI) * (-(x * x)).exp(),
        Unary::Floor | Unary::Ceil | Unary::Round | Unary::Sign => zero,
        Unary::Sin => x.cos(),
        Unary::Cos => -x.sin(),
        Unary::Softplus => x.sigmoid(),
        Unary::Softsign => {
            let d = one + x.abs();
            (d * d).recip()
        }
        Unary::HardSwish => {
            if x < c(-3.0) {
                zero
            } else if x > c(3.0) {
                one
            } else {
                (c(2.0) * x + c(3.0)) / c(6.0)
            }
        }
        Unary::LeakyRelu { alpha } => {
            if x < zero {
                c(alpha as f64)
            } else {
                one
            }
        }
        Unary::Elu { alpha } => {
            if x < zero {
                y + c(alpha as f64)
            } else {
                one
            }
        }
        Unary::Selu { alpha, gamma } => {
            if x <= zero {
                c(gamma as f64) * c(alpha as f64) * x.exp()
            } else {
                c(gamma as f64)
            }
        }
        Unary::Celu { alpha } => {
            if x > zero {
                one
            } else {
                (x / c(alpha as f64)).exp()
            }
        }
        Unary::HardSigmoid { alpha, beta } => {
            let z = c(alpha as f64) * x + c(beta as f64);
            if z > zero && z < one {
                c(alpha as f64)
            } else {
                zero
            }
        }
        Unary::ThresholdedRelu { alpha } => {
            if x > c(alpha as f64) {
                one
            } else {
                zero
            }
        }
        Unary::Gelu { tanh: false } => {
            let cdf = c(0.5) * (one + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf());
            let pdf = (-(x * x) * c(0.5)).exp() * c(1.0 / (2.0 * std::f64::consts::PI).sqrt());
            cdf + x * pdf
        }
        Unary::Gelu { tanh: true } => {
            let k = c((2.0 / std::f64::consts::PI).sqrt());
            let a = c(0.044715);
            let t = (k * (x + a * x * x * x)).tanh();
            c(0.5) * (one + t) + c(0.5) * x * (one - t * t) * k * (one + c(3.0) * a * x * x)
        }
    }
}

pub fn unary<S: Real>(u: Unary, x: &Arr<S>, y: &Arr<S>, g: &ArrayD<S>) -> VjpResult<S> {
    let d = ndarray::Zip::from(x)
        .and(y)
        .and(g)
        .map_collect(|&x, &y, &g| g * unary_deriv(u, x, y));
    Ok(vec![Some(d)])
}

pub fn binary<S: Real>(
    op: Binary,
    a: &Arr<S>,
    b: &Arr<S>,
    y: &Arr<S>,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let (ao, bo, yo) = (owned(a), owned(b), owned(y));
    let ga = if need[0] {
        Some(reduce_to(
            match op {
                Binary::Add | Binary::Sub => g.clone(),
                Binary::Mul => zip(g, &bo, |g, b| g * b)?,
                Binary::Div => zip(g, &bo, |g, b| g / b)?,
                // d(a^b)/da = b·a^(b−1)
                Binary::Pow => zip3(g, &ao, &bo, |g, a, b| g * b * a.powf(b - S::one()))?,
            },
            a.shape(),
        ))
    } else {
        None
    };
    let gb = if need.get(1).copied().unwrap_or(false) {
        Some(reduce_to(
            match op {
                Binary::Add => g.clone(),
                Binary::Sub => g.mapv(|v| -v),
                Binary::Mul => zip(g, &ao, |g, a| g * a)?,
                Binary::Div => zip3(g, &yo, &bo, |g, y, b| -(g * y / b))?,
                // d(a^b)/db = a^b·ln a
                Binary::Pow => zip3(g, &yo, &ao, |g, y, a| g * y * a.ln())?,
            },
            b.shape(),
        ))
    } else {
        None
    };
    Ok(vec![ga, gb])
}

pub fn variadic<S: Real>(
    op: Variadic,
    inputs: &[Option<&Tensor<S>>],
    y: &Arr<S>,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let n = inputs.iter().flatten().count();
    let yo = owned(y);
    let mut out = Vec::with_capacity(inputs.len());
    for (i, inp) in inputs.iter().enumerate() {
        if !need.get(i).copied().unwrap_or(false) || inp.is_none() {
            out.push(None);
            continue;
        }
        let x = owned(fin(inputs, i)?);
        let gi = match op {
            Variadic::Sum => g.clone(),
            Variadic::Mean => g.mapv(|v| v / S::from_f64(n as f64)),
            // The winner takes the gradient (every tied input, as the primal does not choose).
            Variadic::Max | Variadic::Min => {
                zip3(g, &x, &yo, |g, x, y| if x == y { g } else { S::zero() })?
            }
        };
        out.push(Some(reduce_to(gi, x.shape())));
    }
    Ok(out)
}

pub fn where_<S: Real>(
    cond: &Arr<bool>,
    x: &Arr<S>,
    yv: &Arr<S>,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let sh = g.shape().to_vec();
    let c = cond
        .broadcast(ndarray::IxDyn(&sh))
        .ok_or("Where condition does not broadcast")?;
    let pick = |take: bool| {
        ndarray::Zip::from(&c)
            .and(g)
            .map_collect(|&c, &g| if c == take { g } else { S::zero() })
    };
    Ok(vec![
        None,
        need.get(1)
            .copied()
            .unwrap_or(false)
            .then(|| reduce_to(pick(true), x.shape())),
        need.get(2)
            .copied()
            .unwrap_or(false)
            .then(|| reduce_to(pick(false), yv.shape())),
    ])
}

pub fn prelu<S: Real>(x: &Arr<S>, slope: &Arr<S>, g: &ArrayD<S>, need: &[bool]) -> VjpResult<S> {
    let (xo, so) = (owned(x), owned(slope));
    let gx = need[0]
        .then(|| zip3(g, &xo, &so, |g, x, s| if x < S::zero() { g * s } else { g }))
        .transpose()?;
    let gs = need
        .get(1)
        .copied()
        .unwrap_or(false)
        .then(|| {
            zip(g, &xo, |g, x| if x < S::zero() { g * x } else { S::zero() })
                .map(|v| reduce_to(v, slope.shape()))
        })
        .transpose()?;
    Ok(vec![gx, gs])
}

/// Clip passes the gradient where lo ≤ x ≤ hi; the bounds (when inputs) collect it where they
/// are the output. With lo > hi every value is hi.
pub fn clip<S: Real>(
    x: &Arr<S>,
    lo: Option<f64>,
    hi: Option<f64>,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let (lo, hi) = (lo.map(S::from_f64), hi.map(S::from_f64));
    let to_hi = |x: S| hi.is_some_and(|h| x > h || lo.is_some_and(|l| l > h));
    let to_lo = |x: S| !to_hi(x) && lo.is_some_and(|l| x < l);
    let d = ndarray::Zip::from(x)
        .and(g)
        .map_collect(|&x, &g| if to_hi(x) || to_lo(x) { S::zero() } else { g });
    let want = |i: usize| need.get(i).copied().unwrap_or(false);
    let sum_where = |f: &dyn Fn(S) -> bool| -> S {
        x.iter()
            .zip(g.iter())
            .filter(|(x, _)| f(**x))
            .map(|(_, &g)| g)
            .sum()
    };
    let scalar = |v: S| Some(ArrayD::from_elem(ndarray::IxDyn(&[]), v));
    Ok(vec![
        Some(d),
        if want(1) && lo.is_some() {
            scalar(sum_where(&to_lo))
        } else {
            None
        },
        if want(2) && hi.is_some() {
            scalar(sum_where(&to_hi))
        } else {
            None
        },
    ])
}
