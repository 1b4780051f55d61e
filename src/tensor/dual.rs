//! Dual numbers: a value and its directional derivative (tangent). Every kernel written over
//! `Real` therefore also computes Jacobian-vector products; run the backward rules on duals and
//! the tangent of the gradient is an exact Hessian-vector product (forward-over-reverse).

use super::real::{MatRef, Real};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// `v + t·ε` with ε² = 0.
#[derive(Clone, Copy, Default)]
pub struct Dual<T> {
    pub v: T,
    pub t: T,
}

impl<T: Real> Dual<T> {
    pub fn new(v: T, t: T) -> Self {
        Dual { v, t }
    }
    pub fn constant(v: T) -> Self {
        Dual { v, t: T::zero() }
    }
    /// f(v) with derivative f'(v): the chain rule for a scalar function.
    #[inline(always)]
    fn chain(self, f: T, df: T) -> Self {
        Dual {
            v: f,
            t: df * self.t,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Dual<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}+{:?}ε", self.v, self.t)
    }
}

/// Comparisons look at values only: branches (ReLU, max, clip) and Equal follow the primal.
impl<T: Real> PartialEq for Dual<T> {
    fn eq(&self, o: &Self) -> bool {
        self.v == o.v
    }
}

impl<T: Real> PartialOrd for Dual<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        self.v.partial_cmp(&o.v)
    }
}

impl<T: Real> Add for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Dual {
            v: self.v + o.v,
            t: self.t + o.t,
        }
    }
}
impl<T: Real> Sub for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Dual {
            v: self.v - o.v,
            t: self.t - o.t,
        }
    }
}
impl<T: Real> Mul for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        Dual {
            v: self.v * o.v,
            t: self.t * o.v + self.v * o.t,
        }
    }
}
impl<T: Real> Div for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn div(self, o: Self) -> Self {
        let q = self.v / o.v;
        Dual {
            v: q,
            t: (self.t - q * o.t) / o.v,
        }
    }
}
impl<T: Real> Neg for Dual<T> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Dual {
            v: -self.v,
            t: -self.t,
        }
    }
}
impl<T: Real> AddAssign for Dual<T> {
    #[inline(always)]
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}
impl<T: Real> SubAssign for Dual<T> {
    #[inline(always)]
    fn sub_assign(&mut self, o: Self) {
        *self = *self - o;
    }
}
impl<T: Real> MulAssign for Dual<T> {
    #[inline(always)]
    fn mul_assign(&mut self, o: Self) {
        *self = *self * o;
    }
}
impl<T: Real> DivAssign for Dual<T> {
    #[inline(always)]
    fn div_assign(&mut self, o: Self) {
        *self = *self / o;
    }
}
impl<T: Real> Sum for Dual<T> {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::zero(), |a, b| a + b)
    }
}

impl<T: Real> Real for Dual<T> {
    const NAME: &'static str = "dual";
    fn zero() -> Self {
        Dual::constant(T::zero())
    }
    fn one() -> Self {
        Dual::constant(T::one())
    }
    fn from_f64(v: f64) -> Self {
        Dual::constant(T::from_f64(v))
    }
    fn to_f64(self) -> f64 {
        self.v.to_f64()
    }
    fn exp(self) -> Self {
        let e = self.v.exp();
        self.chain(e, e)
    }
    fn ln(self) -> Self {
        self.chain(self.v.ln(), self.v.recip())
    }
    fn sqrt(self) -> Self {
        let r = self.v.sqrt();
        self.chain(r, T::from_f64(0.5) / r)
    }
    fn tanh(self) -> Self {
        let th = self.v.tanh();
        self.chain(th, T::one() - th * th)
    }
    fn erf(self) -> Self {
        let d = T::from_f64(std::f64::consts::FRAC_2_SQRT_PI) * (-(self.v * self.v)).exp();
        self.chain(self.v.erf(), d)
    }
    fn abs(self) -> Self {
        let s = if self.v < T::zero() {
            -T::one()
        } else {
            T::one()
        };
        self.chain(self.v.abs(), s)
    }
    fn powf(self, e: Self) -> Self {
        // d(a^b) = b·a^(b−1)·da + ln(a)·a^b·db (the second term only when b varies).
        let p = self.v.powf(e.v);
        let da = e.v * self.v.powf(e.v - T::one());
        let db = if e.t == T::zero() {
            T::zero()
        } else {
            self.v.ln() * p
        };
        Dual {
            v: p,
            t: da * self.t + db * e.t,
        }
    }
    fn floor(self) -> Self {
        self.chain(self.v.floor(), T::zero())
    }
    fn ceil(self) -> Self {
        self.chain(self.v.ceil(), T::zero())
    }
    fn round_even(self) -> Self {
        self.chain(self.v.round_even(), T::zero())
    }
    fn sin(self) -> Self {
        self.chain(self.v.sin(), self.v.cos())
    }
    fn cos(self) -> Self {
        self.chain(self.v.cos(), -self.v.sin())
    }
    fn is_nan(self) -> bool {
        self.v.is_nan()
    }
    fn infinity() -> Self {
        Dual::constant(T::infinity())
    }
    fn max_value() -> Self {
        Dual::constant(T::max_value())
    }
    fn max(self, o: Self) -> Self {
        if self.v.is_nan() || self.v >= o.v {
            self
        } else {
            o
        }
    }
    fn min(self, o: Self) -> Self {
        if self.v.is_nan() || self.v <= o.v {
            self
        } else {
            o
        }
    }

    /// Product rule on three real GEMMs: (A + εA')(B + εB') = AB + ε(A'B + AB').
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: MatRef<Self>,
        b: MatRef<Self>,
        c: &mut [Self],
        ldc: usize,
        accumulate: bool,
        beta: Self,
        parallel: bool,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        // Values and tangents apart, in the operand's own layout when it is packed (row- or
        // column-major: a linear pass), else gathered row-major. Gathering a transposed
        // operand element by element was a tenth of a SNOWS run.
        let split = |x: MatRef<Self>, rows: usize, cols: usize| -> (Vec<T>, Vec<T>, isize, isize) {
            let len = rows * cols;
            let packed = (x.row_stride == cols as isize && x.col_stride == 1)
                || (x.row_stride == 1 && x.col_stride == rows as isize);
            if packed && x.data.len() >= len {
                let (v, t) = x.data[..len].iter().map(|e| (e.v, e.t)).unzip();
                return (v, t, x.row_stride, x.col_stride);
            }
            let mut v = Vec::with_capacity(len);
            let mut t = Vec::with_capacity(len);
            for i in 0..rows {
                for j in 0..cols {
                    let e =
                        x.data[(i as isize * x.row_stride + j as isize * x.col_stride) as usize];
                    v.push(e.v);
                    t.push(e.t);
                }
            }
            (v, t, cols as isize, 1)
        };
        let (av, at, ars, acs) = split(a, m, k);
        let (bv, bt, brs, bcs) = split(b, k, n);
        let mut cv = vec![T::zero(); m * n];
        let mut ct = vec![T::zero(); m * n];
        let (ra, rb) = (view(&av, ars, acs), view(&bv, brs, bcs));
        T::gemm(m, n, k, ra, rb, &mut cv, n, false, T::one(), parallel);
        T::gemm(
            m,
            n,
            k,
            view(&at, ars, acs),
            rb,
            &mut ct,
            n,
            false,
            T::one(),
            parallel,
        );
        T::gemm(
            m,
            n,
            k,
            ra,
            view(&bt, brs, bcs),
            &mut ct,
            n,
            true,
            T::one(),
            parallel,
        );
        for i in 0..m {
            for j in 0..n {
                let p = Dual {
                    v: cv[i * n + j],
                    t: ct[i * n + j],
                } * beta;
                let dst = &mut c[i * ldc + j];
                *dst = if accumulate { *dst + p } else { p };
            }
        }
    }
}

/// A matrix over `data` with the given strides.
fn view<T>(data: &[T], row_stride: isize, col_stride: isize) -> MatRef<'_, T> {
    MatRef {
        data,
        row_stride,
        col_stride,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: f64, t: f64) -> Dual<f64> {
        Dual::new(v, t)
    }

    #[test]
    fn tangents_are_derivatives() {
        let x = d(0.7, 1.0);
        let h = 1e-7;
        type Check = (Dual<f64>, fn(f64) -> f64);
        let checks: Vec<Check> = vec![
            (x.exp(), f64::exp),
            (x.ln(), f64::ln),
            (x.sqrt(), f64::sqrt),
            (x.tanh(), f64::tanh),
            (x.erf(), libm::erf),
            (x.sin(), f64::sin),
            (x.cos(), f64::cos),
            (x.powf(Dual::constant(2.5)), |v| v.powf(2.5)),
            (x.sigmoid(), |v| 1.0 / (1.0 + (-v).exp())),
            (x / d(1.3, 0.0), |v| v / 1.3),
        ];
        for (i, (got, f)) in checks.iter().enumerate() {
            let fd = (f(0.7 + h) - f(0.7 - h)) / (2.0 * h);
            assert!((got.t - fd).abs() < 1e-6, "check {i}: {} vs {fd}", got.t);
        }
    }

    /// Transposed (column-major) and strided operands give the same product as the naive
    /// sum over their elements.
    #[test]
    fn gemm_reads_transposed_and_strided_operands() {
        let (m, n, k) = (3, 4, 5);
        let big: Vec<Dual<f64>> = (0..64)
            .map(|i| d((i as f64 * 0.7).sin(), (i as f64 * 0.3).cos()))
            .collect();
        let cases = [
            // A transposed (k×m stored row-major), B packed row-major.
            (
                MatRef {
                    data: &big[..],
                    row_stride: 1,
                    col_stride: m as isize,
                },
                MatRef {
                    data: &big[20..],
                    row_stride: n as isize,
                    col_stride: 1,
                },
            ),
            // A row-major, B transposed.
            (
                MatRef {
                    data: &big[..],
                    row_stride: k as isize,
                    col_stride: 1,
                },
                MatRef {
                    data: &big[30..],
                    row_stride: 1,
                    col_stride: k as isize,
                },
            ),
            // Both strided, neither packed.
            (
                MatRef {
                    data: &big[..],
                    row_stride: 2 * k as isize,
                    col_stride: 2,
                },
                MatRef {
                    data: &big[1..],
                    row_stride: 1,
                    col_stride: 2 * k as isize,
                },
            ),
        ];
        for (ci, (a, b)) in cases.into_iter().enumerate() {
            let at = |i: usize, j: usize| {
                a.data[(i as isize * a.row_stride + j as isize * a.col_stride) as usize]
            };
            let bt = |i: usize, j: usize| {
                b.data[(i as isize * b.row_stride + j as isize * b.col_stride) as usize]
            };
            let mut c = vec![Dual::constant(0.0); m * n];
            Dual::gemm(m, n, k, a, b, &mut c, n, false, Dual::constant(1.0), false);
            for i in 0..m {
                for j in 0..n {
                    let mut want = Dual::constant(0.0);
                    for p in 0..k {
                        want += at(i, p) * bt(p, j);
                    }
                    let got = c[i * n + j];
                    assert!(
                        (got.v - want.v).abs() < 1e-12 && (got.t - want.t).abs() < 1e-12,
                        "case {ci} ({i},{j})"
                    );
                }
            }
        }
    }

    #[test]
    fn gemm_applies_the_product_rule() {
        let a: Vec<Dual<f64>> = (0..6)
            .map(|i| d(i as f64 * 0.3, (i as f64).sin()))
            .collect();
        let b: Vec<Dual<f64>> = (0..6)
            .map(|i| d(1.0 - i as f64 * 0.2, (i as f64).cos()))
            .collect();
        let mut c = vec![Dual::constant(1.0); 4];
        Dual::gemm(
            2,
            2,
            3,
            MatRef::row_major(&a, 3, false),
            MatRef::row_major(&b, 2, false),
            &mut c,
            2,
            true,
            Dual::constant(2.0),
            false,
        );
        for i in 0..2 {
            for j in 0..2 {
                let mut want = Dual::constant(0.0);
                for p in 0..3 {
                    want += a[i * 3 + p] * b[p * 2 + j];
                }
                let want = Dual::constant(1.0) + Dual::constant(2.0) * want;
                assert!(
                    (c[i * 2 + j].v - want.v).abs() < 1e-12
                        && (c[i * 2 + j].t - want.t).abs() < 1e-12
                );
            }
        }
    }
}
