//! Conv and ConvTranspose (1-D and 2-D, groups, strides, dilations, pads, auto_pad) as
//! im2col/col2im around one GEMM per image and group; depthwise convs take a direct loop.

use super::elementwise::{Act, apply_act};
use super::util::*;
use crate::ir::op::{AutoPad, ConvTransposeAttrs, Window};
use crate::tensor::{MatRef, Real, Tensor};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

/// Geometry of one 2-D window op (1-D ops use h = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geom {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pt: usize,
    pub pl: usize,
    pub pb: usize,
    pub pr: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub fn out_len(&self) -> usize {
        self.oh * self.ow
    }
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.pt + self.pl + self.pb + self.pr == 0
    }
}

/// Per-axis window settings for `nd` spatial axes with ONNX defaults filled in.
pub struct Axes {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
}

pub fn fill_defaults(w: &Window, kernel: &[usize], nd: usize) -> Result<Axes, String> {
    let pick = |v: &Vec<usize>, n: usize, d: usize, what: &str| -> Result<Vec<usize>, String> {
        if v.is_empty() {
            Ok(vec![d; n])
        } else if v.len() == n {
            Ok(v.clone())
        } else {
            Err(format!("{what} has {} values, expected {n}", v.len()))
        }
    };
    if kernel.len() != nd {
        return Err(format!(
            "kernel has {} spatial axes, input has {nd}",
            kernel.len()
        ));
    }
    Ok(Axes {
        kernel: kernel.to_vec(),
        strides: pick(&w.strides, nd, 1, "strides")?,
        dilations: pick(&w.dilations, nd, 1, "dilations")?,
        pads: pick(&w.pads, 2 * nd, 0, "pads")?,
    })
}

/// Output size and pads of one axis for Conv/pools (`ceil` for pools' ceil_mode).
pub fn axis_out(
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pads: (usize, usize),
    auto: AutoPad,
    ceil: bool,
) -> Result<(usize, usize, usize), String> {
    let ek = (k - 1) * d + 1;
    let (pb, pe) = match auto {
        AutoPad::NotSet => pads,
        AutoPad::Valid => (0, 0),
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(s);
            let total = ((out - 1) * s + ek).saturating_sub(input);
            if auto == AutoPad::SameUpper {
                (total / 2, total - total / 2)
            } else {
                (total - total / 2, total / 2)
            }
        }
    };
    let span = input + pb + pe;
    if span < ek {
        return Err(format!(
            "window {ek} (kernel {k}, dilation {d}) is larger than the padded input {span}"
        ));
    }
    let mut out = if ceil {
        (span - ek).div_ceil(s) + 1
    } else {
        (span - ek) / s + 1
    };
    // A ceil-mode window must start inside the input or its left padding.
    if ceil && (out - 1) * s >= input + pb {
        out -= 1;
    }
    Ok((out, pb, pe))
}

/// Builds the 2-D geometry for an input of spatial shape `spatial` (1 or 2 axes).
pub fn geom(spatial: &[usize], w: &Window, kernel: &[usize], ceil: bool) -> Result<Geom, String> {
    let nd = spatial.len();
    if !(1..=2).contains(&nd) {
        return Err(format!(
            "{nd}-D windows are not supported (1-D and 2-D are)"
        ));
    }
    let ax = fill_defaults(w, kernel, nd)?;
    let mut g = Geom {
        h: 1,
        w: 1,
        kh: 1,
        kw: 1,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        pt: 0,
        pl: 0,
        pb: 0,
        pr: 0,
        oh: 1,
        ow: 1,
    };
    for (i, &len) in spatial.iter().enumerate() {
        let (o, b, e) = axis_out(
            len,
            ax.kernel[i],
            ax.strides[i],
            ax.dilations[i],
            (ax.pads[i], ax.pads[i + nd]),
            w.auto_pad,
            ceil,
        )?;
        // The last spatial axis is W; a 1-D op keeps H = 1.
        if i + 1 == nd {
            (g.w, g.kw, g.sw, g.dw, g.pl, g.pr, g.ow) = (
                spatial[i],
                ax.kernel[i],
                ax.strides[i],
                ax.dilations[i],
                b,
                e,
                o,
            );
        } else {
            (g.h, g.kh, g.sh, g.dh, g.pt, g.pb, g.oh) = (
                spatial[i],
                ax.kernel[i],
                ax.strides[i],
                ax.dilations[i],
                b,
                e,
                o,
            );
        }
    }
    Ok(g)
}

/// Unfolds `c` channels of one image (c×h×w) into columns ((c·kh·kw) × (oh·ow)).
pub fn im2col<S: Real>(x: &[S], c: usize, g: &Geom, col: &mut [S]) {
    let ohw = g.out_len();
    let mut row = 0;
    for ch in 0..c {
        let plane = &x[ch * g.h * g.w..(ch + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let dst = &mut col[row * ohw..(row + 1) * ohw];
                row += 1;
                let x_off = (kj * g.dw) as isize - g.pl as isize;
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
                    let out_row = &mut dst[oy * g.ow..(oy + 1) * g.ow];
                    if iy < 0 || iy >= g.h as isize {
                        out_row.fill(S::zero());
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    if g.sw == 1 {
                        // Contiguous run: zero the padded ends, copy the middle.
                        let lo = (-x_off).max(0) as usize;
                        let hi = ((g.w as isize - x_off).max(0) as usize).min(g.ow);
                        let lo = lo.min(hi);
                        out_row[..lo].fill(S::zero());
                        let start = (lo as isize + x_off) as usize;
                        out_row[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                        out_row[hi..].fill(S::zero());
                    } else {
                        for (ox, o) in out_row.iter_mut().enumerate() {
                            let ix = (ox * g.sw) as isize + x_off;
                            *o = if ix < 0 || ix >= g.w as isize {
                                S::zero()
                            } else {
                                src[ix as usize]
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Folds columns ((c·kh·kw) × (h·w) in input-grid order) back onto an output image (c×oh×ow),
/// accumulating overlaps: the adjoint of `im2col` with the roles of the grids swapped.
pub fn col2im<S: Real>(col: &[S], c: usize, g: &Geom, out: &mut [S]) {
    let ohw = g.out_len();
    let mut row = 0;
    for ch in 0..c {
        let plane = &mut out[ch * g.h * g.w..(ch + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let src = &col[row * ohw..(row + 1) * ohw];
                row += 1;
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for ox in 0..g.ow {
                        let ix = (ox * g.sw + kj * g.dw) as isize - g.pl as isize;
                        if ix >= 0 && ix < g.w as isize {
                            plane[iy as usize * g.w + ix as usize] += src[oy * g.ow + ox];
                        }
                    }
                }
            }
        }
    }
}

/// Stride-1 depthwise convolution of one plane on the padded grid: every kernel tap is one
/// long contiguous multiply-add over the flattened padded plane (vectorises regardless of the
/// image width); the extra columns are dropped at the end. `scratch` is reused across planes.
fn depthwise_plane_s1<S: Real>(x: &[S], k: &[S], g: &Geom, out: &mut [S], scratch: &mut Vec<S>) {
    let (hp, wp) = (g.h + g.pt + g.pb, g.w + g.pl + g.pr);
    let n = g.oh * wp;
    // Padded plane, with slack for the last taps' overrun into dropped columns, then the
    // accumulator on the padded grid.
    let pad_len = hp * wp + g.kw * g.dw;
    scratch.clear();
    scratch.resize(pad_len + n, S::zero());
    let (pad, acc) = scratch.split_at_mut(pad_len);
    for r in 0..g.h {
        let dst = (r + g.pt) * wp + g.pl;
        pad[dst..dst + g.w].copy_from_slice(&x[r * g.w..(r + 1) * g.w]);
    }
    for ki in 0..g.kh {
        for kj in 0..g.kw {
            let kv = k[ki * g.kw + kj];
            let off = ki * g.dh * wp + kj * g.dw;
            for (a, &v) in acc.iter_mut().zip(&pad[off..off + n]) {
                *a += kv * v;
            }
        }
    }
    for (o, a) in out.chunks_mut(g.ow).zip(acc.chunks(wp)) {
        o.copy_from_slice(&a[..g.ow]);
    }
}

/// Direct depthwise convolution of one channel plane: one shifted multiply-add of a whole
/// output row per kernel tap, with the padded borders cut off the row range instead of tested
/// per element (stride-1 rows are contiguous and vectorise).
fn depthwise_plane<S: Real>(x: &[S], k: &[S], g: &Geom, out: &mut [S]) {
    out.fill(S::zero());
    for kj in 0..g.kw {
        let x_off = (kj * g.dw) as isize - g.pl as isize;
        // Output columns whose input column ox·sw + x_off lies inside [0, w).
        let lo = if x_off >= 0 {
            0
        } else {
            ((-x_off) as usize).div_ceil(g.sw)
        };
        let hi = if g.w as isize - x_off <= 0 {
            0
        } else {
            ((g.w as isize - x_off) as usize).div_ceil(g.sw).min(g.ow)
        };
        if lo >= hi {
            continue;
        }
        for ki in 0..g.kh {
            let kv = k[ki * g.kw + kj];
            for oy in 0..g.oh {
                let iy = (oy * g.sh + ki * g.dh) as isize - g.pt as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let row = &x[iy as usize * g.w..(iy as usize + 1) * g.w];
                let orow = &mut out[oy * g.ow + lo..oy * g.ow + hi];
                let start = (lo * g.sw) as isize + x_off;
                if g.sw == 1 {
                    let src = &row[start as usize..start as usize + orow.len()];
                    for (o, &v) in orow.iter_mut().zip(src) {
                        *o += kv * v;
                    }
                } else {
                    for (i, o) in orow.iter_mut().enumerate() {
                        *o += kv * row[start as usize + i * g.sw];
                    }
                }
            }
        }
    }
}

/// The GEMM operand of a conv of one image (c×h×w) built from phase planes (see
/// `conv_phased`): rows (channel, tap), columns the output grid at the phase-plane width `wq`
/// (returned), whose columns past `ow` hold values that belong to no output.
pub fn phased_cols<S: Real>(x: &[S], c: usize, g: &Geom) -> (Vec<S>, usize) {
    let (hp, wp) = (g.h + g.pt + g.pb, g.w + g.pl + g.pr);
    let (hq, wq) = (hp.div_ceil(g.sh), wp.div_ceil(g.sw));
    let phases = g.sh * g.sw;
    let plane = hq * wq;
    // Slack after the last plane: a window may run up to a row past its plane's end.
    let mut pad = vec![S::zero(); c * phases * plane + wq + g.kw * g.dw];
    for ch in 0..c {
        for r in 0..g.h {
            let (pr, py) = ((r + g.pt) / g.sh, (r + g.pt) % g.sh);
            let src = &x[(ch * g.h + r) * g.w..(ch * g.h + r + 1) * g.w];
            if g.sw == 1 {
                let dst = (ch * phases + py) * plane + pr * wq + g.pl;
                pad[dst..dst + g.w].copy_from_slice(src);
            } else {
                for (q, &v) in src.iter().enumerate() {
                    let (pc, px) = ((q + g.pl) / g.sw, (q + g.pl) % g.sw);
                    pad[(ch * phases + py * g.sw + px) * plane + pr * wq + pc] = v;
                }
            }
        }
    }
    let n = g.oh * wq;
    let taps = g.kh * g.kw;
    let mut col = vec![S::zero(); c * taps * n];
    for ch in 0..c {
        for ki in 0..g.kh {
            let dy = ki * g.dh;
            for kj in 0..g.kw {
                let dx = kj * g.dw;
                let phase = (dy % g.sh) * g.sw + dx % g.sw;
                let off = (ch * phases + phase) * plane + (dy / g.sh) * wq + dx / g.sw;
                let row = (ch * taps + ki * g.kw + kj) * n;
                col[row..row + n].copy_from_slice(&pad[off..off + n]);
            }
        }
    }
    (col, wq)
}

/// One image and group of a convolution (any stride, dilation and padding; used for stride 1,
/// where there is one phase) as a single GEMM
/// over windows that are plain memory copies. The padded input is split into stride×stride
/// phase planes; in its phase plane every kernel tap's input window is then one contiguous run,
/// so building the GEMM operand is one memcpy per (channel, tap) instead of im2col's per-pixel
/// gather. The output is computed on the phase planes' width and the extra columns dropped.
fn conv_phased<S: Real>(
    x: &[S],
    c: usize,
    g: &Geom,
    w: &[S],
    m: usize,
    y: &mut [S],
    parallel: bool,
) {
    let (col, wq) = phased_cols(x, c, g);
    let n = g.oh * wq;
    let taps = g.kh * g.kw;
    let k = c * taps;
    let mut acc = vec![S::zero(); m * n];
    S::gemm(
        m,
        n,
        k,
        MatRef::row_major(w, k, false),
        MatRef::row_major(&col, n, false),
        &mut acc,
        n,
        false,
        S::one(),
        parallel,
    );
    for (yr, ar) in y.chunks_mut(g.ow).zip(acc.chunks(wq)) {
        yr.copy_from_slice(&ar[..g.ow]);
    }
}

/// Resolved shapes of a convolution call.
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub group: usize,
    pub g: Geom,
    /// The output shape [N, M, *spatial].
    pub out_shape: Vec<usize>,
}

pub fn conv_shape(
    xs: &[usize],
    ws: &[usize],
    window: &Window,
    group: usize,
) -> Result<ConvShape, String> {
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "input {xs:?} and weight {ws:?} ranks do not fit a convolution"
        ));
    }
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if c % group != 0 || m % group != 0 || ws[1] * group != c {
        return Err(format!(
            "input channels {c}, weight {ws:?} and group {group} are inconsistent"
        ));
    }
    let kernel = if window.kernel.is_empty() {
        ws[2..].to_vec()
    } else {
        window.kernel.clone()
    };
    if kernel != ws[2..] {
        return Err(format!(
            "kernel_shape {kernel:?} does not match weight {ws:?}"
        ));
    }
    let g = geom(&xs[2..], window, &kernel, false)?;
    let mut out_shape = vec![n, m];
    if xs.len() == 4 {
        out_shape.extend([g.oh, g.ow]);
    } else {
        out_shape.push(g.ow);
    }
    Ok(ConvShape {
        n,
        c,
        m,
        group,
        g,
        out_shape,
    })
}

pub fn conv<S: Real>(
    x: &Tensor<S>,
    w: &Tensor<S>,
    b: Option<&Tensor<S>>,
    window: &Window,
    group: usize,
) -> OpResult<S> {
    let xa = standard(float(x, "X")?);
    let wa = standard(float(w, "W")?);
    let sh = conv_shape(xa.shape(), wa.shape(), window, group)?;
    let bias = match b {
        Some(b) => {
            let v: Vec<S> = float(b, "B")?.iter().copied().collect();
            if v.len() != sh.m {
                return Err(format!(
                    "bias has {} values for {} output channels",
                    v.len(),
                    sh.m
                ));
            }
            Some(v)
        }
        None => None,
    };
    let out = conv_raw(
        xa.as_slice().expect("standard"),
        wa.as_slice().expect("standard"),
        bias.as_deref(),
        &sh,
        None,
        Vec::new(),
    );
    Ok(vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&sh.out_shape), out).expect("sized"),
    )])
}

/// Convolution on contiguous buffers: x [N,C,H,W], w [M,C/group,kh,kw] → [N,M,oh,ow].
/// `act` is applied to each image's output while it is still in cache (a fused activation).
/// `out` is a recycled buffer: every element is overwritten, so its contents do not matter.
pub fn conv_raw<S: Real>(
    x: &[S],
    w: &[S],
    bias: Option<&[S]>,
    sh: &ConvShape,
    act: Option<Act>,
    mut out: Vec<S>,
) -> Vec<S> {
    let ConvShape {
        n, c, m, group, g, ..
    } = *sh;
    let (cg, mg) = (c / group, m / group);
    let (hw, ohw) = (g.h * g.w, g.out_len());
    let kk = cg * g.kh * g.kw;
    out.truncate(n * m * ohw);
    out.resize(n * m * ohw, S::zero());
    let depthwise = cg == 1 && mg == 1 && group > 1;
    let batch_parallel = n > 1;
    let image = |img: usize, y: &mut [S]| {
        let xi = &x[img * c * hw..(img + 1) * c * hw];
        if depthwise {
            let kk = g.kh * g.kw;
            let run = |scratch: &mut Vec<S>, (ch, yc): (usize, &mut [S])| {
                let (xp, kp) = (&xi[ch * hw..(ch + 1) * hw], &w[ch * kk..(ch + 1) * kk]);
                if g.sh == 1 && g.sw == 1 {
                    depthwise_plane_s1(xp, kp, &g, yc, scratch);
                } else {
                    depthwise_plane(xp, kp, &g, yc);
                }
            };
            if batch_parallel {
                let mut scratch = Vec::new();
                y.chunks_mut(ohw)
                    .enumerate()
                    .for_each(|p| run(&mut scratch, p));
            } else {
                y.par_chunks_mut(ohw)
                    .enumerate()
                    .for_each_init(Vec::new, run);
            }
        } else {
            let mut col: Option<Vec<S>> = None;
            for gi in 0..group {
                let xg = &xi[gi * cg * hw..(gi + 1) * cg * hw];
                let wg = &w[gi * mg * kk..(gi + 1) * mg * kk];
                let yg = &mut y[gi * mg * ohw..(gi + 1) * mg * ohw];
                if g.is_pointwise() {
                    S::gemm(
                        mg,
                        ohw,
                        kk,
                        MatRef::row_major(wg, kk, false),
                        MatRef::row_major(xg, ohw, false),
                        yg,
                        ohw,
                        false,
                        S::one(),
                        !batch_parallel,
                    );
                } else if g.sh == 1 && g.sw == 1 {
                    conv_phased(xg, cg, &g, wg, mg, yg, !batch_parallel);
                } else {
                    // Strided: the phase split would copy planes no tap reads; gather instead.
                    let col = col.get_or_insert_with(|| vec![S::zero(); kk * ohw]);
                    im2col(xg, cg, &g, col);
                    S::gemm(
                        mg,
                        ohw,
                        kk,
                        MatRef::row_major(wg, kk, false),
                        MatRef::row_major(col, ohw, false),
                        yg,
                        ohw,
                        false,
                        S::one(),
                        !batch_parallel,
                    );
                }
            }
        }
        if let Some(bias) = bias {
            for (yc, &bv) in y.chunks_mut(ohw).zip(bias) {
                yc.iter_mut().for_each(|v| *v += bv);
            }
        }
        if let Some(act) = act {
            apply_act(act, y);
        }
    };
    if batch_parallel {
        out.par_chunks_mut(m * ohw)
            .enumerate()
            .for_each(|(i, y)| image(i, y));
    } else if n == 1 {
        image(0, &mut out);
    }
    out
}

/// ConvTranspose's resolved shapes: `g` is the geometry of the equivalent conv whose *input*
/// grid is this op's output (col2im folds onto it), and whose output grid is this op's input.
pub struct ConvTPlan {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    pub mg: usize,
    pub group: usize,
    pub g: Geom,
    pub out_shape: Vec<usize>,
}

pub fn convt_plan(xs: &[usize], ws: &[usize], a: &ConvTransposeAttrs) -> Result<ConvTPlan, String> {
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(format!(
            "input {xs:?} and weight {ws:?} ranks do not fit ConvTranspose"
        ));
    }
    let nd = xs.len() - 2;
    if nd > 2 {
        return Err(format!(
            "{nd}-D ConvTranspose is not supported (1-D and 2-D are)"
        ));
    }
    let (n, c) = (xs[0], xs[1]);
    let group = a.group;
    if ws[0] != c || c % group != 0 {
        return Err(format!(
            "weight {ws:?} does not fit {c} input channels in {group} groups"
        ));
    }
    let mg = ws[1];
    let m = mg * group;
    let kernel = if a.window.kernel.is_empty() {
        ws[2..].to_vec()
    } else {
        a.window.kernel.clone()
    };
    let ax = fill_defaults(&a.window, &kernel, nd)?;
    let opad = if a.output_padding.is_empty() {
        vec![0; nd]
    } else {
        a.output_padding.clone()
    };
    if opad.len() != nd {
        return Err("output_padding length does not match the spatial rank".into());
    }
    let mut outs = Vec::with_capacity(nd);
    let mut pads_b = Vec::with_capacity(nd);
    for i in 0..nd {
        let ek = (ax.kernel[i] - 1) * ax.dilations[i] + 1;
        let full = ax.strides[i] * (xs[2 + i] - 1) + opad[i] + ek;
        let target = if !a.output_shape.is_empty() {
            let os = &a.output_shape;
            Some(os[os.len() - nd + i])
        } else if matches!(a.window.auto_pad, AutoPad::SameUpper | AutoPad::SameLower) {
            Some(xs[2 + i] * ax.strides[i])
        } else {
            None
        };
        let (pb, out) = match target {
            Some(t) => {
                // Signed: an output_shape past the full output extends it with bias-only values.
                let total = full as i64 - t as i64;
                let pb = if a.window.auto_pad == AutoPad::SameUpper {
                    total.div_euclid(2)
                } else {
                    total - total.div_euclid(2)
                };
                let pb = usize::try_from(pb)
                    .map_err(|_| format!("output_shape {t} needs a negative begin pad"))?;
                (pb, t)
            }
            None => {
                let (pb, pe) = (ax.pads[i], ax.pads[i + nd]);
                let out = full
                    .checked_sub(pb + pe)
                    .ok_or("pads are larger than the output")?;
                (pb, out)
            }
        };
        pads_b.push(pb);
        outs.push(out);
    }
    // The transposed conv's output grid plays the role of conv's input grid in col2im.
    let (oh, ow, ih, iw) = if nd == 2 {
        (outs[0], outs[1], xs[2], xs[3])
    } else {
        (1, outs[0], 1, xs[2])
    };
    let g = Geom {
        h: oh,
        w: ow,
        kh: if nd == 2 { ax.kernel[0] } else { 1 },
        kw: ax.kernel[nd - 1],
        sh: if nd == 2 { ax.strides[0] } else { 1 },
        sw: ax.strides[nd - 1],
        dh: if nd == 2 { ax.dilations[0] } else { 1 },
        dw: ax.dilations[nd - 1],
        pt: if nd == 2 { pads_b[0] } else { 0 },
        pl: pads_b[nd - 1],
        pb: 0,
        pr: 0,
        oh: ih,
        ow: iw,
    };
    let mut out_shape = vec![n, m];
    out_shape.extend(&outs);
    Ok(ConvTPlan {
        n,
        c,
        m,
        mg,
        group,
        g,
        out_shape,
    })
}

pub fn conv_transpose<S: Real>(
    x: &Tensor<S>,
    w: &Tensor<S>,
    b: Option<&Tensor<S>>,
    a: &ConvTransposeAttrs,
) -> OpResult<S> {
    let xa = standard(float(x, "X")?);
    let wa = standard(float(w, "W")?);
    let ConvTPlan {
        n,
        c,
        m,
        mg,
        group,
        g,
        out_shape,
    } = convt_plan(xa.shape(), wa.shape(), a)?;
    let (ih, iw, oh, ow) = (g.oh, g.ow, g.h, g.w);
    let cg = c / group;
    let kk = mg * g.kh * g.kw;
    let (ihw, ohw) = (ih * iw, oh * ow);
    let bias: Option<Vec<S>> = match b {
        Some(b) => Some(float(b, "B")?.iter().copied().collect()),
        None => None,
    };
    if bias.as_ref().is_some_and(|v| v.len() != m) {
        return Err(format!("bias does not have {m} values"));
    }
    let xsl = xa.as_slice().expect("standard");
    let wsl = wa.as_slice().expect("standard");
    let mut out = vec![S::zero(); n * m * ohw];
    out.par_chunks_mut(m * ohw)
        .enumerate()
        .for_each(|(img, y)| {
            let xi = &xsl[img * c * ihw..(img + 1) * c * ihw];
            let mut col = vec![S::zero(); kk * ihw];
            for gi in 0..group {
                let wg = &wsl[gi * cg * kk..(gi + 1) * cg * kk];
                let xg = &xi[gi * cg * ihw..(gi + 1) * cg * ihw];
                // col = W_gᵀ (kk × cg) · x_g (cg × ihw)
                S::gemm(
                    kk,
                    ihw,
                    cg,
                    MatRef::row_major(wg, kk, true),
                    MatRef::row_major(xg, ihw, false),
                    &mut col,
                    ihw,
                    false,
                    S::one(),
                    n == 1,
                );
                col2im(&col, mg, &g, &mut y[gi * mg * ohw..(gi + 1) * mg * ohw]);
            }
            if let Some(bias) = &bias {
                for (yc, &bv) in y.chunks_mut(ohw).zip(bias) {
                    yc.iter_mut().for_each(|v| *v += bv);
                }
            }
        });
    Ok(vec![Tensor::float(
        x.dtype,
        ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("sized"),
    )])
}
