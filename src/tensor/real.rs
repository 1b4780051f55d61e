//! The scalar type the interpreter computes in. Kernels are written once, generic over `Real`,
//! so the same code runs in f32 (speed), f64 (derivative tests) and, later, dual numbers
//! (forward-mode tangents through the backward pass give exact Hessian-vector products).

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// One matrix operand of [`Real::gemm`]: row-major with explicit strides (in elements), so a
/// transposed operand is just swapped strides.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub row_stride: isize,
    pub col_stride: isize,
}

impl<'a, T> MatRef<'a, T> {
    /// A contiguous row-major matrix with `cols` columns (transposed when `trans`).
    pub fn row_major(data: &'a [T], cols: usize, trans: bool) -> Self {
        if trans {
            MatRef {
                data,
                row_stride: 1,
                col_stride: cols as isize,
            }
        } else {
            MatRef {
                data,
                row_stride: cols as isize,
                col_stride: 1,
            }
        }
    }
}

pub trait Real:
    Copy
    + Default
    + Debug
    + Send
    + Sync
    + 'static
    + PartialEq
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    const NAME: &'static str;
    fn zero() -> Self;
    fn one() -> Self;
    fn from_f64(v: f64) -> Self;
    /// The primal value (for duals: without the tangent).
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn erf(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    /// Round half to even, as ONNX Round.
    fn round_even(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn is_nan(self) -> bool;
    fn infinity() -> Self;
    fn max_value() -> Self;
    fn recip(self) -> Self {
        Self::one() / self
    }
    fn max(self, o: Self) -> Self {
        if self.is_nan() || self >= o { self } else { o }
    }
    fn min(self, o: Self) -> Self {
        if self.is_nan() || self <= o { self } else { o }
    }
    fn sigmoid(self) -> Self {
        Self::one() / (Self::one() + (-self).exp())
    }
    /// c = alpha·c + beta·(a·b) for an m×k by k×n product into a row-major m×n `c` with row
    /// stride `ldc`. `accumulate` false ignores c's old contents. `parallel` lets the kernel use
    /// the rayon pool (off when the caller already parallelises over a batch).
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
    );
}

fn parallelism(parallel: bool, m: usize, n: usize, k: usize) -> gemm::Parallelism {
    // Below this size the fork/join costs more than it saves.
    if parallel && m * n * k >= 64 * 64 * 64 && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

macro_rules! impl_real {
    ($t:ty, $erf:path, $name:literal) => {
        impl Real for $t {
            const NAME: &'static str = $name;
            #[inline(always)]
            fn zero() -> Self {
                0.0
            }
            #[inline(always)]
            fn one() -> Self {
                1.0
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            #[inline(always)]
            fn ceil(self) -> Self {
                <$t>::ceil(self)
            }
            #[inline(always)]
            fn round_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            #[inline(always)]
            fn infinity() -> Self {
                <$t>::INFINITY
            }
            #[inline(always)]
            fn max_value() -> Self {
                <$t>::MAX
            }
            #[inline(always)]
            fn max(self, o: Self) -> Self {
                if self.is_nan() {
                    self
                } else {
                    <$t>::max(self, o)
                }
            }
            #[inline(always)]
            fn min(self, o: Self) -> Self {
                if self.is_nan() {
                    self
                } else {
                    <$t>::min(self, o)
                }
            }
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
                assert!(c.len() >= (m - 1) * ldc + n, "gemm: output too small");
                if k == 0 {
                    if !accumulate {
                        for r in 0..m {
                            c[r * ldc..r * ldc + n].fill(0.0);
                        }
                    }
                    return;
                }
                let last = |mr: &MatRef<Self>, rows: usize, cols: usize| {
                    (rows as isize - 1) * mr.row_stride + (cols as isize - 1) * mr.col_stride
                };
                assert!(
                    last(&a, m, k) < a.data.len() as isize
                        && last(&b, k, n) < b.data.len() as isize,
                    "gemm: operand too small"
                );
                // SAFETY: bounds of every operand were checked above; c is exclusively borrowed.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        ldc as isize,
                        accumulate,
                        a.data.as_ptr(),
                        a.col_stride,
                        a.row_stride,
                        b.data.as_ptr(),
                        b.col_stride,
                        b.row_stride,
                        1.0,
                        beta,
                        false,
                        false,
                        false,
                        parallelism(parallel, m, n, k),
                    );
                }
            }
        }
    };
}

impl_real!(f32, libm::erff, "f32");
impl_real!(f64, libm::erf, "f64");

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn gemm_matches_naive_with_transpose_and_accumulate() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        let want = naive(m, n, k, &a, &b);
        let mut c = vec![1.0; m * n];
        f64::gemm(
            m,
            n,
            k,
            MatRef::row_major(&a, k, false),
            MatRef::row_major(&b, n, false),
            &mut c,
            n,
            true,
            2.0,
            false,
        );
        for i in 0..m * n {
            assert!((c[i] - (1.0 + 2.0 * want[i])).abs() < 1e-12);
        }
        // bᵀ stored as n×k, read transposed
        let mut bt = vec![0.0; n * k];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        let mut c2 = vec![5.0; m * n];
        f64::gemm(
            m,
            n,
            k,
            MatRef::row_major(&a, k, false),
            MatRef::row_major(&bt, k, true),
            &mut c2,
            n,
            false,
            1.0,
            true,
        );
        for i in 0..m * n {
            assert!((c2[i] - want[i]).abs() < 1e-12);
        }
    }
}
