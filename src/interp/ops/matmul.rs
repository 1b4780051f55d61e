//! Gemm and MatMul (batched, broadcast, 1-D operands).

use super::util::*;
use crate::tensor::{MatRef, Real, Tensor};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

pub fn gemm_op<S: Real>(
    a: &Tensor<S>,
    b: &Tensor<S>,
    c: Option<&Tensor<S>>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
) -> OpResult<S> {
    let aa = standard(float(a, "A")?);
    let ba = standard(float(b, "B")?);
    if aa.ndim() != 2 || ba.ndim() != 2 {
        return Err(format!(
            "Gemm needs 2-D A and B, got {:?} and {:?}",
            aa.shape(),
            ba.shape()
        ));
    }
    let (m, k) = if trans_a {
        (aa.shape()[1], aa.shape()[0])
    } else {
        (aa.shape()[0], aa.shape()[1])
    };
    let (kb, n) = if trans_b {
        (ba.shape()[1], ba.shape()[0])
    } else {
        (ba.shape()[0], ba.shape()[1])
    };
    if k != kb {
        return Err(format!(
            "Gemm inner dimensions differ: A {:?} (transA={trans_a}), B {:?} (transB={trans_b})",
            aa.shape(),
            ba.shape()
        ));
    }
    let mut out = match c {
        Some(c) if beta != 0.0 => {
            let ca = float(c, "C")?;
            let v = view_as(ca, &[m, n])?;
            let bt = S::from_f64(beta as f64);
            v.mapv(|x| x * bt).into_raw_vec_and_offset().0
        }
        _ => vec![S::zero(); m * n],
    };
    let accumulate = c.is_some() && beta != 0.0;
    S::gemm(
        m,
        n,
        k,
        MatRef::row_major(aa.as_slice().expect("standard"), aa.shape()[1], trans_a),
        MatRef::row_major(ba.as_slice().expect("standard"), ba.shape()[1], trans_b),
        &mut out,
        n,
        accumulate,
        S::from_f64(alpha as f64),
        true,
    );
    Ok(vec![Tensor::float(
        a.dtype,
        ArrayD::from_shape_vec(IxDyn(&[m, n]), out).expect("sized"),
    )])
}

/// Batched matrix product with numpy semantics.
pub fn matmul<S: Real>(a: &Tensor<S>, b: &Tensor<S>) -> OpResult<S> {
    let out = matmul_arr(float(a, "A")?, float(b, "B")?)?;
    Ok(vec![Tensor::float(a.dtype, out)])
}

pub fn matmul_arr<S: Real>(
    a: &crate::tensor::Arr<S>,
    b: &crate::tensor::Arr<S>,
) -> Result<ArrayD<S>, String> {
    let (ash, bsh) = (a.shape().to_vec(), b.shape().to_vec());
    if ash.is_empty() || bsh.is_empty() {
        return Err("MatMul does not take scalars".into());
    }
    // 1-D operands become matrices and lose that axis again in the result.
    let a2: Vec<usize> = if ash.len() == 1 {
        vec![1, ash[0]]
    } else {
        ash.clone()
    };
    let b2: Vec<usize> = if bsh.len() == 1 {
        vec![bsh[0], 1]
    } else {
        bsh.clone()
    };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(format!("MatMul inner dimensions differ: {ash:?} × {bsh:?}"));
    }
    let batch = broadcast_shape(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    let nb: usize = batch.iter().product();
    let mut out_shape = batch.clone();
    if ash.len() > 1 {
        out_shape.push(m);
    }
    if bsh.len() > 1 {
        out_shape.push(n);
    }
    let mut full_a = batch.clone();
    full_a.extend([m, k]);
    let mut full_b = batch.clone();
    full_b.extend([k, n]);
    let a_in = a.to_shape(IxDyn(&a2)).map_err(|e| e.to_string())?;
    let b_in = b.to_shape(IxDyn(&b2)).map_err(|e| e.to_string())?;
    let mut out = vec![S::zero(); nb * m * n];

    // A right operand without batch axes (a weight) folds A's batch into its rows: one GEMM.
    if b2.len() == 2 && a_in.is_standard_layout() {
        let bs = b_in.as_standard_layout();
        S::gemm(
            nb * m,
            n,
            k,
            MatRef::row_major(a_in.as_slice().expect("standard"), k, false),
            MatRef::row_major(bs.as_slice().expect("standard"), n, false),
            &mut out,
            n,
            false,
            S::one(),
            true,
        );
    } else {
        let av = a_in
            .broadcast(IxDyn(&full_a))
            .ok_or("MatMul batch shapes do not broadcast")?;
        let bv = b_in
            .broadcast(IxDyn(&full_b))
            .ok_or("MatMul batch shapes do not broadcast")?;
        let av = av.to_shape(IxDyn(&[nb, m, k])).map_err(|e| e.to_string())?;
        let bv = bv.to_shape(IxDyn(&[nb, k, n])).map_err(|e| e.to_string())?;
        let a3 = av.as_standard_layout();
        let b3 = bv.as_standard_layout();
        let (asl, bsl) = (
            a3.as_slice().expect("standard"),
            b3.as_slice().expect("standard"),
        );
        let par = nb > 1;
        out.par_chunks_mut((m * n).max(1))
            .enumerate()
            .for_each(|(i, o)| {
                S::gemm(
                    m,
                    n,
                    k,
                    MatRef::row_major(&asl[i * m * k..(i + 1) * m * k], k, false),
                    MatRef::row_major(&bsl[i * k * n..(i + 1) * k * n], n, false),
                    o,
                    n,
                    false,
                    S::one(),
                    !par,
                );
            });
    }
    Ok(ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("sized"))
}
