//! Normalisations and Softmax: BatchNormalization (inference), LayerNormalization,
//! InstanceNormalization, LRN, Softmax/LogSoftmax.

use super::util::*;
use crate::tensor::{Real, Tensor};
use ndarray::{ArrayD, Axis, IxDyn};
use rayon::prelude::*;

fn channel_vec<S: Real>(t: &Tensor<S>, c: usize, what: &str) -> Result<Vec<S>, String> {
    let a = float(t, what)?;
    if a.len() != c {
        return Err(format!("{what} has {} values for {c} channels", a.len()));
    }
    Ok(a.iter().copied().collect())
}

/// y = (x − mean)/√(var + ε)·scale + bias per channel (axis 1), as one scale and shift.
pub fn batch_norm<S: Real>(inputs: &[Option<&Tensor<S>>], epsilon: f32) -> OpResult<S> {
    let x = req(inputs, 0)?;
    let xa = standard(float(x, "X")?);
    let sh = xa.shape();
    if sh.len() < 2 {
        return Err(format!("BatchNormalization needs rank ≥ 2, got {sh:?}"));
    }
    let c = sh[1];
    let scale = channel_vec(req(inputs, 1)?, c, "scale")?;
    let bias = channel_vec(req(inputs, 2)?, c, "B")?;
    let mean = channel_vec(req(inputs, 3)?, c, "mean")?;
    let var = channel_vec(req(inputs, 4)?, c, "var")?;
    let eps = S::from_f64(epsilon as f64);
    let mul: Vec<S> = (0..c).map(|i| scale[i] / (var[i] + eps).sqrt()).collect();
    let add: Vec<S> = (0..c).map(|i| bias[i] - mean[i] * mul[i]).collect();
    let plane: usize = sh[2..].iter().product();
    let mut out = xa.as_slice().expect("standard").to_vec();
    let f = |(i, chunk): (usize, &mut [S])| {
        let ch = i % c;
        let (m, a) = (mul[ch], add[ch]);
        chunk.iter_mut().for_each(|v| *v = *v * m + a);
    };
    if plane > 0 {
        if out.len() >= PAR_MIN {
            out.par_chunks_mut(plane).enumerate().for_each(f);
        } else {
            out.chunks_mut(plane).enumerate().for_each(f);
        }
    }
    Ok(vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(sh), out).expect("sized"),
    )])
}

/// LayerNormalization over axes [axis, rank); optional Mean and InvStdDev outputs.
pub fn layer_norm<S: Real>(
    inputs: &[Option<&Tensor<S>>],
    axis_attr: i64,
    epsilon: f32,
    n_out: usize,
) -> OpResult<S> {
    let x = req(inputs, 0)?;
    let xa = standard(float(x, "X")?);
    let sh = xa.shape().to_vec();
    let ax = axis(axis_attr, sh.len())?;
    let d: usize = sh[ax..].iter().product();
    let rows: usize = sh[..ax].iter().product();
    let tail = &sh[ax..];
    let scale = float(req(inputs, 1)?, "Scale")?;
    let scale = view_as(scale, tail)?.as_standard_layout().into_owned();
    let bias = match opt(inputs, 2) {
        Some(b) => Some(
            view_as(float(b, "B")?, tail)?
                .as_standard_layout()
                .into_owned(),
        ),
        None => None,
    };
    let (sc, bs) = (
        scale.as_slice().expect("std"),
        bias.as_ref().map(|b| b.as_slice().expect("std")),
    );
    let eps = S::from_f64(epsilon as f64);
    let xs = xa.as_slice().expect("standard");
    let mut out = vec![S::zero(); xs.len()];
    let mut means = vec![S::zero(); rows];
    let mut inv = vec![S::zero(); rows];
    let dn = S::from_f64(d as f64);
    out.par_chunks_mut(d.max(1))
        .zip(means.par_iter_mut().zip(inv.par_iter_mut()))
        .with_min_len((PAR_MIN / d.max(1)).max(1))
        .enumerate()
        .for_each(|(r, (y, (mu_out, inv_out)))| {
            let row = &xs[r * d..(r + 1) * d];
            let mu = row.iter().copied().sum::<S>() / dn;
            let var = row.iter().map(|&v| (v - mu) * (v - mu)).sum::<S>() / dn;
            let is = (var + eps).sqrt().recip();
            for j in 0..d {
                let mut v = (row[j] - mu) * is * sc[j];
                if let Some(b) = bs {
                    v += b[j];
                }
                y[j] = v;
            }
            *mu_out = mu;
            *inv_out = is;
        });
    let mut res = vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&sh), out).expect("sized"),
    )];
    if n_out > 1 {
        let mut stat_shape = sh[..ax].to_vec();
        stat_shape.extend(std::iter::repeat_n(1, sh.len() - ax));
        res.push(Tensor::float(
            x.dtype,
            ArrayD::from_shape_vec(IxDyn(&stat_shape), means).expect("sized"),
        ));
        res.push(Tensor::float(
            x.dtype,
            ArrayD::from_shape_vec(IxDyn(&stat_shape), inv).expect("sized"),
        ));
    }
    Ok(res)
}

pub fn instance_norm<S: Real>(inputs: &[Option<&Tensor<S>>], epsilon: f32) -> OpResult<S> {
    let x = req(inputs, 0)?;
    let xa = standard(float(x, "X")?);
    let sh = xa.shape().to_vec();
    if sh.len() < 3 {
        return Err(format!("InstanceNormalization needs rank ≥ 3, got {sh:?}"));
    }
    let c = sh[1];
    let scale = channel_vec(req(inputs, 1)?, c, "scale")?;
    let bias = channel_vec(req(inputs, 2)?, c, "B")?;
    let plane: usize = sh[2..].iter().product();
    let eps = S::from_f64(epsilon as f64);
    let dn = S::from_f64(plane as f64);
    let mut out = xa.as_slice().expect("standard").to_vec();
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, p)| {
            let ch = i % c;
            let mu = p.iter().copied().sum::<S>() / dn;
            let var = p.iter().map(|&v| (v - mu) * (v - mu)).sum::<S>() / dn;
            let is = (var + eps).sqrt().recip();
            p.iter_mut()
                .for_each(|v| *v = (*v - mu) * is * scale[ch] + bias[ch]);
        });
    Ok(vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&sh), out).expect("sized"),
    )])
}

/// Local response normalisation across channels.
pub fn lrn<S: Real>(x: &Tensor<S>, size: usize, alpha: f32, beta: f32, bias: f32) -> OpResult<S> {
    let xa = standard(float(x, "X")?);
    let sh = xa.shape().to_vec();
    if sh.len() < 3 {
        return Err(format!("LRN needs rank ≥ 3, got {sh:?}"));
    }
    let c = sh[1];
    let plane: usize = sh[2..].iter().product();
    let xs = xa.as_slice().expect("standard");
    let (lo, hi) = ((size - 1) / 2, size - 1 - (size - 1) / 2);
    let (al, be, bi) = (
        S::from_f64(alpha as f64 / size as f64),
        S::from_f64(beta as f64),
        S::from_f64(bias as f64),
    );
    let mut out = vec![S::zero(); xs.len()];
    out.par_chunks_mut(c * plane)
        .enumerate()
        .for_each(|(img, y)| {
            let xi = &xs[img * c * plane..(img + 1) * c * plane];
            for ch in 0..c {
                let from = ch.saturating_sub(lo);
                let to = (ch + hi).min(c - 1);
                for p in 0..plane {
                    let mut sq = S::zero();
                    for k in from..=to {
                        let v = xi[k * plane + p];
                        sq += v * v;
                    }
                    y[ch * plane + p] = xi[ch * plane + p] / (bi + al * sq).powf(be);
                }
            }
        });
    Ok(vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&sh), out).expect("sized"),
    )])
}

/// Softmax or LogSoftmax. Legacy (opset < 13) normalises over the flattened tail from `axis`.
pub fn softmax<S: Real>(x: &Tensor<S>, axis_attr: i64, legacy: bool, log: bool) -> OpResult<S> {
    let xa = float(x, "X")?;
    let sh = xa.shape().to_vec();
    if sh.is_empty() {
        return Err("Softmax needs rank ≥ 1".into());
    }
    let ax = axis(axis_attr, sh.len())?;
    let row = |lane: &mut [S]| {
        let mx = lane.iter().copied().fold(-S::infinity(), |a, b| a.max(b));
        if log {
            // log p = x − max − log Σ exp(x − max): no exp/ln round trip, no underflow to −inf.
            let ls = lane.iter().map(|&v| (v - mx).exp()).sum::<S>().ln();
            lane.iter_mut().for_each(|v| *v = *v - mx - ls);
        } else {
            let mut sum = S::zero();
            for v in lane.iter_mut() {
                *v = (*v - mx).exp();
                sum += *v;
            }
            lane.iter_mut().for_each(|v| *v /= sum);
        }
    };
    let d: usize = if legacy {
        sh[ax..].iter().product()
    } else {
        sh[ax]
    };
    if legacy || ax + 1 == sh.len() {
        // Rows are contiguous.
        let mut out = xa
            .as_standard_layout()
            .into_owned()
            .into_raw_vec_and_offset()
            .0;
        if d > 0 {
            if out.len() >= PAR_MIN {
                out.par_chunks_mut(d).for_each(row);
            } else {
                out.chunks_mut(d).for_each(row);
            }
        }
        return Ok(vec![Tensor::float(
            x.dtype,
            ArrayD::from_shape_vec(IxDyn(&sh), out).expect("sized"),
        )]);
    }
    let mut out = xa.to_owned();
    let mut buf = vec![S::zero(); d];
    for mut lane in out.lanes_mut(Axis(ax)) {
        for (b, v) in buf.iter_mut().zip(lane.iter()) {
            *b = *v;
        }
        row(&mut buf);
        for (v, b) in lane.iter_mut().zip(&buf) {
            *v = *b;
        }
    }
    Ok(vec![Tensor::float(x.dtype, out)])
}
