//! Resize: nearest, linear and cubic interpolation, applied one axis at a time (all three are
//! separable), with every coordinate transformation mode of opsets 10–19.

use super::util::*;
use crate::ir::op::{AspectPolicy, CoordMode, NearestMode, ResizeAttrs, ResizeMode};
use crate::tensor::{Real, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Source taps of one output position along one axis: `None` = extrapolation value.
pub type Taps = Option<Vec<(usize, f64)>>;

fn cubic_coeffs(t: f64, a: f64) -> [f64; 4] {
    let near = |x: f64| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

fn axis_taps(
    r: &ResizeAttrs,
    in_len: usize,
    out_len: usize,
    scale: f64,
    roi: (f64, f64),
) -> Vec<Taps> {
    let n = in_len as f64;
    // The resized length as a real number (in · scale), as the ONNX reference uses it.
    let len_f = n * scale;
    let last = in_len as i64 - 1;
    (0..out_len)
        .map(|j| {
            let x = j as f64;
            let xo = match r.coord {
                CoordMode::HalfPixel => (x + 0.5) / scale - 0.5,
                CoordMode::HalfPixelSymmetric => {
                    let adj = out_len as f64 / len_f;
                    let center = n / 2.0;
                    center * (1.0 - adj) + (x + 0.5) / scale - 0.5
                }
                CoordMode::PytorchHalfPixel => {
                    if len_f == 1.0 {
                        -0.5
                    } else {
                        (x + 0.5) / scale - 0.5
                    }
                }
                CoordMode::AlignCorners => {
                    if len_f == 1.0 {
                        0.0
                    } else {
                        x * (n - 1.0) / (len_f - 1.0)
                    }
                }
                CoordMode::Asymmetric => x / scale,
                CoordMode::TfCropAndResize => {
                    if len_f != 1.0 {
                        roi.0 * (n - 1.0) + x * (roi.1 - roi.0) * (n - 1.0) / (len_f - 1.0)
                    } else {
                        0.5 * (roi.0 + roi.1) * (n - 1.0)
                    }
                }
            };
            if r.coord == CoordMode::TfCropAndResize && (xo < 0.0 || xo > n - 1.0) {
                return None;
            }
            let clamp = |i: i64| i.clamp(0, last) as usize;
            match r.mode {
                ResizeMode::Nearest => {
                    let i = match r.nearest {
                        NearestMode::RoundPreferFloor => {
                            if xo.fract() == 0.5 || xo.fract() == -0.5 {
                                xo.floor()
                            } else {
                                xo.round()
                            }
                        }
                        NearestMode::RoundPreferCeil => (xo + 0.5).floor(),
                        NearestMode::Floor => xo.floor(),
                        NearestMode::Ceil => xo.ceil(),
                    };
                    Some(vec![(clamp(i as i64), 1.0)])
                }
                ResizeMode::Linear => {
                    let b = xo.floor();
                    let t = xo - b;
                    let b = b as i64;
                    Some(vec![(clamp(b), 1.0 - t), (clamp(b + 1), t)])
                }
                ResizeMode::Cubic => {
                    let b = xo.floor();
                    let t = xo - b;
                    let b = b as i64;
                    let c = cubic_coeffs(t, r.cubic_a as f64);
                    let idx = [b - 1, b, b + 1, b + 2];
                    if r.exclude_outside {
                        let inside: Vec<(i64, f64)> = idx
                            .iter()
                            .zip(c)
                            .filter(|(i, _)| (0..=last).contains(*i))
                            .map(|(&i, w)| (i, w))
                            .collect();
                        let total: f64 = inside.iter().map(|(_, w)| w).sum();
                        Some(
                            inside
                                .into_iter()
                                .map(|(i, w)| (i as usize, w / total))
                                .collect(),
                        )
                    } else {
                        Some(idx.iter().zip(c).map(|(&i, w)| (clamp(i), w)).collect())
                    }
                }
            }
        })
        .collect()
}

/// Interpolates along one axis of a contiguous [outer, in_len, inner] buffer.
pub fn apply_axis<S: Real>(
    data: &[S],
    outer: usize,
    in_len: usize,
    inner: usize,
    taps: &[Taps],
    extrap: S,
) -> Vec<S> {
    let out_len = taps.len();
    let mut out = vec![S::zero(); outer * out_len * inner];
    let taps_s: Vec<Option<Vec<(usize, S)>>> = taps
        .iter()
        .map(|t| {
            t.as_ref()
                .map(|v| v.iter().map(|&(i, w)| (i, S::from_f64(w))).collect())
        })
        .collect();
    for o in 0..outer {
        let src = &data[o * in_len * inner..(o + 1) * in_len * inner];
        for (j, t) in taps_s.iter().enumerate() {
            let dst = &mut out[(o * out_len + j) * inner..(o * out_len + j + 1) * inner];
            match t {
                None => dst.fill(extrap),
                Some(t) => {
                    for &(i, w) in t {
                        let s = &src[i * inner..(i + 1) * inner];
                        for (d, &v) in dst.iter_mut().zip(s) {
                            *d += w * v;
                        }
                    }
                }
            }
        }
    }
    out
}

/// What Resize does to each axis: the output shape and, per axis, the source taps of every
/// output position (`None`: the axis is unchanged). Shared by the forward kernel and its adjoint.
pub struct ResizePlan {
    pub out_shape: Vec<usize>,
    pub axes: Vec<Option<Vec<Taps>>>,
    pub extrapolation: f64,
}

pub fn plan<S: Real>(
    sh: &[usize],
    inputs: &[Option<&Tensor<S>>],
    r: &ResizeAttrs,
) -> Result<ResizePlan, String> {
    let sh = sh.to_vec();
    let rank = sh.len();
    let nonempty = |i: usize| opt(inputs, i).filter(|t| !t.is_empty());
    let (roi_t, scales_t, sizes_t) = if r.v10 {
        (None, nonempty(1), None)
    } else {
        (nonempty(1), nonempty(2), nonempty(3))
    };
    let axes: Vec<usize> = match &r.axes {
        Some(a) => a.iter().map(|&v| axis(v, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    let mut out_shape = sh.clone();
    let mut scales = vec![1.0f64; rank];
    match (scales_t, sizes_t) {
        (_, Some(sz)) => {
            let sz = ints(sz, "sizes")?;
            if sz.len() != axes.len() {
                return Err(format!("sizes {sz:?} do not fit {} axes", axes.len()));
            }
            let ratio: Vec<f64> = axes
                .iter()
                .zip(&sz)
                .map(|(&a, &s)| s as f64 / sh[a] as f64)
                .collect();
            let policy_scale = match r.policy {
                AspectPolicy::Stretch => None,
                AspectPolicy::NotLarger => {
                    Some(ratio.iter().copied().fold(f64::INFINITY, f64::min))
                }
                AspectPolicy::NotSmaller => Some(ratio.iter().copied().fold(0.0, f64::max)),
            };
            for (i, &a) in axes.iter().enumerate() {
                match policy_scale {
                    None => {
                        out_shape[a] = sz[i] as usize;
                        scales[a] = ratio[i];
                    }
                    Some(s) => {
                        out_shape[a] = (s * sh[a] as f64).round() as usize;
                        scales[a] = s;
                    }
                }
            }
        }
        (Some(sc), None) => {
            let sc = sc.to_f64_vec();
            if sc.len() != axes.len() {
                return Err(format!("scales {sc:?} do not fit {} axes", axes.len()));
            }
            for (i, &a) in axes.iter().enumerate() {
                if sc[i] <= 0.0 {
                    return Err(format!("scale {} must be positive", sc[i]));
                }
                scales[a] = sc[i];
                out_shape[a] = (sh[a] as f64 * sc[i]).floor() as usize;
            }
        }
        (None, None) => return Err("Resize needs scales or sizes".into()),
    }
    let roi: Vec<(f64, f64)> = match roi_t {
        Some(t) if r.coord == CoordMode::TfCropAndResize => {
            let v = t.to_f64_vec();
            if v.len() != 2 * axes.len() {
                return Err(format!("roi {v:?} does not fit {} axes", axes.len()));
            }
            let mut full = vec![(0.0, 1.0); rank];
            for (i, &a) in axes.iter().enumerate() {
                full[a] = (v[i], v[i + axes.len()]);
            }
            full
        }
        _ => vec![(0.0, 1.0); rank],
    };
    let mut cur = sh.clone();
    let mut plans = Vec::with_capacity(rank);
    for a in 0..rank {
        let taps = axis_taps(r, cur[a], out_shape[a], scales[a], roi[a]);
        let identity = cur[a] == out_shape[a]
            && taps.iter().enumerate().all(|(j, t)| {
                matches!(t, Some(v) if v.iter().all(|&(i, w)| (i == j && w == 1.0) || w == 0.0))
            });
        if identity {
            plans.push(None);
            continue;
        }
        if cur[a] == 0 && out_shape[a] > 0 {
            return Err("Resize of an empty axis".into());
        }
        plans.push(Some(taps));
        cur[a] = out_shape[a];
    }
    Ok(ResizePlan {
        out_shape,
        axes: plans,
        extrapolation: r.extrapolation_value as f64,
    })
}

pub fn resize<S: Real>(inputs: &[Option<&Tensor<S>>], r: &ResizeAttrs) -> OpResult<S> {
    let x = req(inputs, 0)?;
    let xa = standard(float(x, "X")?);
    let p = plan(xa.shape(), inputs, r)?;
    let extrap = S::from_f64(p.extrapolation);
    let mut data = xa.as_slice().expect("standard").to_vec();
    let mut cur = xa.shape().to_vec();
    for (a, taps) in p.axes.iter().enumerate() {
        let Some(taps) = taps else { continue };
        let outer: usize = cur[..a].iter().product();
        let inner: usize = cur[a + 1..].iter().product();
        data = apply_axis(&data, outer, cur[a], inner, taps, extrap);
        cur[a] = taps.len();
    }
    Ok(vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&p.out_shape), data).expect("sized"),
    )])
}

/// The adjoint of `apply_axis`: spreads each output gradient back onto its source taps
/// (extrapolated positions have no source and get nothing).
pub fn apply_axis_adjoint<S: Real>(
    g: &[S],
    outer: usize,
    in_len: usize,
    inner: usize,
    taps: &[Taps],
) -> Vec<S> {
    let out_len = taps.len();
    let mut gx = vec![S::zero(); outer * in_len * inner];
    for o in 0..outer {
        let dst = &mut gx[o * in_len * inner..(o + 1) * in_len * inner];
        for (j, t) in taps.iter().enumerate() {
            let Some(t) = t else { continue };
            let src = &g[(o * out_len + j) * inner..(o * out_len + j + 1) * inner];
            for &(i, w) in t {
                let w = S::from_f64(w);
                for (d, &v) in dst[i * inner..(i + 1) * inner].iter_mut().zip(src) {
                    *d += w * v;
                }
            }
        }
    }
    gx
}
