//! Backward rules of the linear ops: Conv, ConvTranspose, Gemm, MatMul.

use super::util::*;
use crate::interp::ops::conv::{col2im, conv_shape, convt_plan, im2col};
use crate::interp::ops::util::{broadcast_shape, standard};
use crate::ir::op::{ConvTransposeAttrs, Window};
use crate::tensor::{Arr, MatRef, Real};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

fn sum_vecs<S: Real>(a: Vec<S>, b: Vec<S>) -> Vec<S> {
    if a.is_empty() {
        return b;
    }
    a.into_iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Conv: dX = col2im(Wᵀ·dY), dW = Σ_images dY·colᵀ, dB = Σ dY.
pub fn conv<S: Real>(
    x: &Arr<S>,
    w: &Arr<S>,
    window: &Window,
    group: usize,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let xs = standard(x);
    let ws = standard(w);
    let sh = conv_shape(xs.shape(), ws.shape(), window, group)?;
    let gy = contiguous(g);
    let (xsl, wsl, gsl) = (
        xs.as_slice().expect("std"),
        ws.as_slice().expect("std"),
        gy.as_slice().expect("std"),
    );
    let (n, c, m, geo) = (sh.n, sh.c, sh.m, sh.g);
    let (cg, mg) = (c / group, m / group);
    let (hw, ohw) = (geo.h * geo.w, geo.out_len());
    let kk = cg * geo.kh * geo.kw;
    let pointwise = geo.is_pointwise();
    let need_x = need[0];
    let need_w = need.get(1).copied().unwrap_or(false);
    let need_b = need.get(2).copied().unwrap_or(false);

    let gx = need_x.then(|| {
        let mut gx = vec![S::zero(); n * c * hw];
        gx.par_chunks_mut(c * hw).enumerate().for_each(|(img, dx)| {
            let mut dcol = vec![S::zero(); kk * ohw];
            for gi in 0..group {
                let wg = &wsl[gi * mg * kk..(gi + 1) * mg * kk];
                let gyg = &gsl[(img * m + gi * mg) * ohw..(img * m + (gi + 1) * mg) * ohw];
                let dxg = &mut dx[gi * cg * hw..(gi + 1) * cg * hw];
                if pointwise {
                    S::gemm(
                        kk,
                        ohw,
                        mg,
                        MatRef::row_major(wg, kk, true),
                        MatRef::row_major(gyg, ohw, false),
                        dxg,
                        ohw,
                        false,
                        S::one(),
                        false,
                    );
                } else {
                    S::gemm(
                        kk,
                        ohw,
                        mg,
                        MatRef::row_major(wg, kk, true),
                        MatRef::row_major(gyg, ohw, false),
                        &mut dcol,
                        ohw,
                        false,
                        S::one(),
                        false,
                    );
                    col2im(&dcol, cg, &geo, dxg);
                }
            }
        });
        ArrayD::from_shape_vec(IxDyn(xs.shape()), gx).expect("sized")
    });

    let gw = need_w.then(|| {
        let total = (0..n)
            .into_par_iter()
            .fold(Vec::new, |acc: Vec<S>, img| {
                let mut acc = if acc.is_empty() {
                    vec![S::zero(); m * kk]
                } else {
                    acc
                };
                let mut col = vec![S::zero(); if pointwise { 0 } else { kk * ohw }];
                for gi in 0..group {
                    let xg = &xsl[(img * c + gi * cg) * hw..(img * c + (gi + 1) * cg) * hw];
                    let cols: &[S] = if pointwise {
                        xg
                    } else {
                        im2col(xg, cg, &geo, &mut col);
                        &col
                    };
                    let gyg = &gsl[(img * m + gi * mg) * ohw..(img * m + (gi + 1) * mg) * ohw];
                    let dwg = &mut acc[gi * mg * kk..(gi + 1) * mg * kk];
                    S::gemm(
                        mg,
                        kk,
                        ohw,
                        MatRef::row_major(gyg, ohw, false),
                        MatRef::row_major(cols, ohw, true),
                        dwg,
                        kk,
                        true,
                        S::one(),
                        false,
                    );
                }
                acc
            })
            .reduce(Vec::new, sum_vecs);
        let total = if total.is_empty() {
            vec![S::zero(); m * kk]
        } else {
            total
        };
        ArrayD::from_shape_vec(IxDyn(ws.shape()), total).expect("sized")
    });

    let gb = need_b.then(|| {
        let mut b = vec![S::zero(); m];
        for img in 0..n {
            for (ch, bv) in b.iter_mut().enumerate() {
                *bv += gsl[(img * m + ch) * ohw..(img * m + ch + 1) * ohw]
                    .iter()
                    .copied()
                    .sum::<S>();
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[m]), b).expect("sized")
    });
    Ok(vec![gx, gw, gb])
}

/// ConvTranspose: y = col2im(W_gᵀ·x_g) per group, so dcol = im2col(dY), dX_g = W_g·dcol,
/// dW_g = Σ_images x_g·dcolᵀ, dB = Σ dY.
pub fn conv_transpose<S: Real>(
    x: &Arr<S>,
    w: &Arr<S>,
    a: &ConvTransposeAttrs,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let xs = standard(x);
    let ws = standard(w);
    let p = convt_plan(xs.shape(), ws.shape(), a)?;
    let gy = contiguous(g);
    let (xsl, wsl, gsl) = (
        xs.as_slice().expect("std"),
        ws.as_slice().expect("std"),
        gy.as_slice().expect("std"),
    );
    let geo = p.g;
    let (n, c, m, mg, group) = (p.n, p.c, p.m, p.mg, p.group);
    let cg = c / group;
    let kk = mg * geo.kh * geo.kw;
    let (ihw, ohw) = (geo.oh * geo.ow, geo.h * geo.w);
    let dcols: Vec<Vec<S>> = (0..n)
        .into_par_iter()
        .map(|img| {
            let mut all = vec![S::zero(); group * kk * ihw];
            for gi in 0..group {
                let gyg = &gsl[(img * m + gi * mg) * ohw..(img * m + (gi + 1) * mg) * ohw];
                im2col(gyg, mg, &geo, &mut all[gi * kk * ihw..(gi + 1) * kk * ihw]);
            }
            all
        })
        .collect();
    let gx = need[0].then(|| {
        let mut gx = vec![S::zero(); n * c * ihw];
        gx.par_chunks_mut(c * ihw)
            .enumerate()
            .for_each(|(img, dx)| {
                for gi in 0..group {
                    let wg = &wsl[gi * cg * kk..(gi + 1) * cg * kk];
                    let dcol = &dcols[img][gi * kk * ihw..(gi + 1) * kk * ihw];
                    S::gemm(
                        cg,
                        ihw,
                        kk,
                        MatRef::row_major(wg, kk, false),
                        MatRef::row_major(dcol, ihw, false),
                        &mut dx[gi * cg * ihw..(gi + 1) * cg * ihw],
                        ihw,
                        false,
                        S::one(),
                        false,
                    );
                }
            });
        ArrayD::from_shape_vec(IxDyn(xs.shape()), gx).expect("sized")
    });
    let gw = need.get(1).copied().unwrap_or(false).then(|| {
        let mut gw = vec![S::zero(); c * kk];
        for (img, dcol_img) in dcols.iter().enumerate() {
            for gi in 0..group {
                let xg = &xsl[(img * c + gi * cg) * ihw..(img * c + (gi + 1) * cg) * ihw];
                let dcol = &dcol_img[gi * kk * ihw..(gi + 1) * kk * ihw];
                S::gemm(
                    cg,
                    kk,
                    ihw,
                    MatRef::row_major(xg, ihw, false),
                    MatRef::row_major(dcol, ihw, true),
                    &mut gw[gi * cg * kk..(gi + 1) * cg * kk],
                    kk,
                    true,
                    S::one(),
                    true,
                );
            }
        }
        ArrayD::from_shape_vec(IxDyn(ws.shape()), gw).expect("sized")
    });
    let gb = need.get(2).copied().unwrap_or(false).then(|| {
        let mut b = vec![S::zero(); m];
        for img in 0..n {
            for (ch, bv) in b.iter_mut().enumerate() {
                *bv += gsl[(img * m + ch) * ohw..(img * m + ch + 1) * ohw]
                    .iter()
                    .copied()
                    .sum::<S>();
            }
        }
        ArrayD::from_shape_vec(IxDyn(&[m]), b).expect("sized")
    });
    Ok(vec![gx, gw, gb])
}

/// Gemm: Y = α·op(A)·op(B) + β·C.
#[allow(clippy::too_many_arguments)]
pub fn gemm<S: Real>(
    a: &Arr<S>,
    b: &Arr<S>,
    c_shape: Option<&[usize]>,
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
    g: &ArrayD<S>,
    need: &[bool],
) -> VjpResult<S> {
    let (aa, bb, gy) = (standard(a), standard(b), contiguous(g));
    let (asl, bsl, gsl) = (
        aa.as_slice().expect("std"),
        bb.as_slice().expect("std"),
        gy.as_slice().expect("std"),
    );
    let (ar, ac) = (aa.shape()[0], aa.shape()[1]);
    let (br, bc) = (bb.shape()[0], bb.shape()[1]);
    let (m, n) = (gy.shape()[0], gy.shape()[1]);
    let k = if trans_a { ar } else { ac };
    let al = S::from_f64(alpha as f64);
    // op(A) is m×k, op(B) is k×n; dop(A) = α·dY·op(B)ᵀ, dop(B) = α·op(A)ᵀ·dY.
    let op_b = MatRef::row_major(bsl, bc, trans_b);
    let op_a = MatRef::row_major(asl, ac, trans_a);
    let ga = need[0].then(|| {
        let mut d = vec![S::zero(); ar * ac];
        if trans_a {
            // dA (k×m) = α·op(B)·dYᵀ
            S::gemm(
                k,
                m,
                n,
                op_b,
                MatRef::row_major(gsl, n, true),
                &mut d,
                m,
                false,
                al,
                true,
            );
        } else {
            S::gemm(
                m,
                k,
                n,
                MatRef::row_major(gsl, n, false),
                transpose(op_b),
                &mut d,
                k,
                false,
                al,
                true,
            );
        }
        ArrayD::from_shape_vec(IxDyn(&[ar, ac]), d).expect("sized")
    });
    let gb = need.get(1).copied().unwrap_or(false).then(|| {
        let mut d = vec![S::zero(); br * bc];
        if trans_b {
            // dB (n×k) = α·dYᵀ·op(A)
            S::gemm(
                n,
                k,
                m,
                MatRef::row_major(gsl, n, true),
                op_a,
                &mut d,
                k,
                false,
                al,
                true,
            );
        } else {
            S::gemm(
                k,
                n,
                m,
                transpose(op_a),
                MatRef::row_major(gsl, n, false),
                &mut d,
                n,
                false,
                al,
                true,
            );
        }
        ArrayD::from_shape_vec(IxDyn(&[br, bc]), d).expect("sized")
    });
    let gc = match (need.get(2).copied().unwrap_or(false), c_shape) {
        (true, Some(cs)) => {
            let bt = S::from_f64(beta as f64);
            Some(reduce_to(gy.mapv(|v| v * bt), cs))
        }
        _ => None,
    };
    Ok(vec![ga, gb, gc])
}

fn transpose<S>(m: MatRef<'_, S>) -> MatRef<'_, S> {
    MatRef {
        data: m.data,
        row_stride: m.col_stride,
        col_stride: m.row_stride,
    }
}

/// MatMul with numpy broadcasting: dA = dY·Bᵀ, dB = Aᵀ·dY, summed over broadcast batch axes.
pub fn matmul<S: Real>(a: &Arr<S>, b: &Arr<S>, g: &ArrayD<S>, need: &[bool]) -> VjpResult<S> {
    let (ash, bsh) = (a.shape().to_vec(), b.shape().to_vec());
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
    let n = b2[b2.len() - 1];
    let batch = broadcast_shape(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    let nb: usize = batch.iter().product();
    let full = |mut s: Vec<usize>, r: usize, c: usize| {
        s.extend([r, c]);
        s
    };
    let av = a.to_shape(IxDyn(&a2)).map_err(|e| e.to_string())?;
    let bv = b.to_shape(IxDyn(&b2)).map_err(|e| e.to_string())?;
    let a3 = av
        .broadcast(IxDyn(&full(batch.clone(), m, k)))
        .ok_or("broadcast")?
        .as_standard_layout()
        .into_owned();
    let b3 = bv
        .broadcast(IxDyn(&full(batch.clone(), k, n)))
        .ok_or("broadcast")?
        .as_standard_layout()
        .into_owned();
    let gy = contiguous(g)
        .into_shape_with_order(IxDyn(&full(batch.clone(), m, n)))
        .map_err(|e| e.to_string())?;
    let (asl, bsl, gsl) = (
        a3.as_slice().expect("std"),
        b3.as_slice().expect("std"),
        gy.as_slice().expect("std"),
    );
    let ga = need[0].then(|| {
        let mut d = vec![S::zero(); nb * m * k];
        d.par_chunks_mut((m * k).max(1))
            .enumerate()
            .for_each(|(i, o)| {
                S::gemm(
                    m,
                    k,
                    n,
                    MatRef::row_major(&gsl[i * m * n..], n, false),
                    MatRef::row_major(&bsl[i * k * n..], n, true),
                    o,
                    k,
                    false,
                    S::one(),
                    false,
                );
            });
        let d = ArrayD::from_shape_vec(IxDyn(&full(batch.clone(), m, k)), d).expect("sized");
        reduce_to(d, &a2)
            .into_shape_with_order(IxDyn(&ash))
            .expect("a's shape")
    });
    let gb = need.get(1).copied().unwrap_or(false).then(|| {
        let mut d = vec![S::zero(); nb * k * n];
        d.par_chunks_mut((k * n).max(1))
            .enumerate()
            .for_each(|(i, o)| {
                S::gemm(
                    k,
                    n,
                    m,
                    MatRef::row_major(&asl[i * m * k..], k, true),
                    MatRef::row_major(&gsl[i * m * n..], n, false),
                    o,
                    n,
                    false,
                    S::one(),
                    false,
                );
            });
        let d = ArrayD::from_shape_vec(IxDyn(&full(batch.clone(), k, n)), d).expect("sized");
        reduce_to(d, &b2)
            .into_shape_with_order(IxDyn(&bsh))
            .expect("b's shape")
    });
    Ok(vec![ga, gb])
}
