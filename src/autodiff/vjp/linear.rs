//! Backward rules of the linear ops: Conv, ConvTranspose, Gemm, MatMul.

use super::util::*;
use crate::interp::ops::conv::{
    ConvShape, Geom, col2im, conv_raw, conv_shape, convt_plan, im2col, phased_cols,
};
use crate::interp::ops::util::{broadcast_shape, standard};
use crate::ir::op::{ConvTransposeAttrs, Window};
use crate::tensor::{Arr, MatRef, Real};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

fn sum_vecs<S: Real>(a: Vec<S>, b: Vec<S>) -> Vec<S> {
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
        if let Some(t) = transposed_conv_shape(&sh) {
            // Stride 1: dX is the convolution of dY with the flipped, transposed kernel.
            let wt = flip_transpose(wsl, m, cg, group, geo.kh, geo.kw);
            let dx = conv_raw(gsl, &wt, None, &t, None, Vec::new());
            return ArrayD::from_shape_vec(IxDyn(xs.shape()), dx).expect("sized");
        }
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
        // Fixed chunks of images, summed in order: the same bits whatever the thread count
        // (the CLI promises identical reports under one seed).
        const IMAGES_PER_CHUNK: usize = 4;
        let partial = |imgs: std::ops::Range<usize>| {
            let mut acc = vec![S::zero(); m * kk];
            let mut col = vec![S::zero(); if pointwise { 0 } else { kk * ohw }];
            for img in imgs {
                for gi in 0..group {
                    let xg = &xsl[(img * c + gi * cg) * hw..(img * c + (gi + 1) * cg) * hw];
                    let gyg = &gsl[(img * m + gi * mg) * ohw..(img * m + (gi + 1) * mg) * ohw];
                    let dwg = &mut acc[gi * mg * kk..(gi + 1) * mg * kk];
                    if !pointwise && geo.sh == 1 && geo.sw == 1 {
                        // The operand on the padded width (memcpy-built); dY widened with zeros
                        // in the columns that belong to no output.
                        let (cols, wq) = phased_cols(xg, cg, &geo);
                        let nn = geo.oh * wq;
                        let mut wide = vec![S::zero(); mg * nn];
                        for (wr, gr) in wide.chunks_mut(wq).zip(gyg.chunks(geo.ow)) {
                            wr[..geo.ow].copy_from_slice(gr);
                        }
                        S::gemm(
                            mg,
                            kk,
                            nn,
                            MatRef::row_major(&wide, nn, false),
                            MatRef::row_major(&cols, nn, true),
                            dwg,
                            kk,
                            true,
                            S::one(),
                            false,
                        );
                        continue;
                    }
                    let cols: &[S] = if pointwise {
                        xg
                    } else {
                        im2col(xg, cg, &geo, &mut col);
                        &col
                    };
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
            }
            acc
        };
        let chunks: Vec<Vec<S>> = (0..n.div_ceil(IMAGES_PER_CHUNK))
            .into_par_iter()
            .map(|ci| partial(ci * IMAGES_PER_CHUNK..((ci + 1) * IMAGES_PER_CHUNK).min(n)))
            .collect();
        let total = chunks
            .into_iter()
            .reduce(sum_vecs)
            .unwrap_or_else(|| vec![S::zero(); m * kk]);
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

/// The geometry of dX = conv(dY, flipped Wᵀ) for a stride-1 conv: dY padded by
/// d·(k−1) − p on each side. None when a pad would be negative (then col2im is used).
fn transposed_conv_shape(sh: &ConvShape) -> Option<ConvShape> {
    let g = sh.g;
    if g.sh != 1 || g.sw != 1 {
        return None;
    }
    let ext = |k: usize, d: usize, p: usize| (d * (k - 1)).checked_sub(p);
    let t = Geom {
        h: g.oh,
        w: g.ow,
        kh: g.kh,
        kw: g.kw,
        sh: 1,
        sw: 1,
        dh: g.dh,
        dw: g.dw,
        pt: ext(g.kh, g.dh, g.pt)?,
        pl: ext(g.kw, g.dw, g.pl)?,
        pb: ext(g.kh, g.dh, g.pb)?,
        pr: ext(g.kw, g.dw, g.pr)?,
        oh: g.h,
        ow: g.w,
    };
    // The result is the conv's input: [n, c, h, w] (or [n, c, w] for 1-D).
    let mut out_shape = vec![sh.n, sh.c];
    if sh.out_shape.len() == 4 {
        out_shape.push(g.h);
    }
    out_shape.push(g.w);
    Some(ConvShape {
        n: sh.n,
        c: sh.m,
        m: sh.c,
        group: sh.group,
        g: t,
        out_shape,
    })
}

/// W [m][cg][kh][kw] (groups of mg) → W' [c][mg][kh][kw] with W'[g·cg + i][j][a][b] =
/// W[g·mg + j][i][kh−1−a][kw−1−b].
fn flip_transpose<S: Real>(
    w: &[S],
    m: usize,
    cg: usize,
    group: usize,
    kh: usize,
    kw: usize,
) -> Vec<S> {
    let mg = m / group;
    let taps = kh * kw;
    let mut out = vec![S::zero(); w.len()];
    for gi in 0..group {
        for j in 0..mg {
            for i in 0..cg {
                for a in 0..kh {
                    for b in 0..kw {
                        let src =
                            (((gi * mg + j) * cg + i) * kh + (kh - 1 - a)) * kw + (kw - 1 - b);
                        let dst = ((gi * cg + i) * mg + j) * taps + a * kw + b;
                        out[dst] = w[src];
                    }
                }
            }
        }
    }
    out
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
