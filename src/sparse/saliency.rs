//! Per-weight saliencies for the masks: magnitude |w|, and the scalable diagonal second-order
//! criteria ½·d_i·w_i² with d the Fisher diagonal (the Gauss-Newton diagonal of the
//! objective, sketched from output-space probes: for softmax outputs it is the model's Fisher)
//! or the Hutchinson diagonal of the Hessian (|z ⊙ Hz|, as the Hessian's diagonal can be
//! negative away from a minimum).

use super::layers::Target;
use crate::autodiff::{Curvature, HutchinsonOptions, Objective};
use crate::error::Result;
use crate::interp::Feeds;
use crate::ir::Graph;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MaskKind {
    /// |w|.
    Magnitude,
    /// Layer-wise OBS saliency w²/[H⁻¹]_qq on the layer Hessian XᵀX, chosen as the OBS pass
    /// goes (SparseGPT-style; uniform per layer or N:M).
    Obs,
    /// WoodFisher: w²/(2[F⁻¹]_qq) with the empirical Fisher of per-sample gradients
    /// (`--fisher-samples`, `--fisher-block`, `--fisher-damp`).
    Woodfisher,
    /// ½·F_ii·w_i² with the Fisher diagonal.
    FisherDiag,
    /// ½·|H_ii|·w_i² with the Hutchinson estimate of the Hessian diagonal.
    HutchinsonDiag,
}

impl std::fmt::Display for MaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = clap::ValueEnum::to_possible_value(self).expect("named");
        f.write_str(v.get_name())
    }
}

/// A weight-shaped array in the rows × cols layout of `t` (outputs × inputs·taps).
pub fn to_rows(t: &Target, a: &ArrayD<f64>) -> Vec<f64> {
    if t.out_major {
        a.iter().copied().collect()
    } else {
        a.t().iter().copied().collect()
    }
}

/// Rows × cols back to the weight's own shape.
pub fn from_rows(t: &Target, shape: &[usize], rows: &[f64]) -> ArrayD<f32> {
    let v: Vec<f32> = rows.iter().map(|&x| x as f32).collect();
    if t.out_major {
        ArrayD::from_shape_vec(ndarray::IxDyn(shape), v).expect("sized")
    } else {
        ndarray::Array2::from_shape_vec((t.rows, t.cols), v)
            .expect("sized")
            .t()
            .as_standard_layout()
            .into_owned()
            .into_dyn()
    }
}

/// Saliencies (rows layout) of every target.
#[allow(clippy::too_many_arguments)]
pub fn saliencies(
    g: &Graph,
    targets: &[Target],
    kind: MaskKind,
    feeds: &Feeds<f32>,
    obj: &Objective,
    probes: usize,
    seed: u64,
    micro_batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<f64>>> {
    let w: Vec<ArrayD<f64>> = targets
        .iter()
        .map(|t| {
            g.weights[&t.weight]
                .tensor
                .as_float()
                .expect("float weight")
                .mapv(|v| v as f64)
        })
        .collect();
    let diag: Option<Vec<ArrayD<f64>>> = match kind {
        MaskKind::Magnitude | MaskKind::Obs | MaskKind::Woodfisher => None,
        MaskKind::FisherDiag | MaskKind::HutchinsonDiag => {
            let wrt: Vec<usize> = targets.iter().map(|t| t.weight).collect();
            let mut cur = Curvature::<f32>::new(g, micro_batch)?;
            Some(if kind == MaskKind::FisherDiag {
                cur.gauss_newton_diagonal(feeds, obj, &wrt, probes, seed, progress)?
            } else {
                cur.hutchinson_observed(
                    feeds,
                    obj,
                    &wrt,
                    HutchinsonOptions {
                        seed,
                        min_probes: probes,
                        max_probes: probes,
                        tol: 0.0,
                    },
                    &mut |k| progress(k, probes),
                )?
                .diagonals
            })
        }
    };
    Ok(targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let s = match &diag {
                None => w[i].mapv(f64::abs),
                Some(d) => ndarray::Zip::from(&w[i])
                    .and(&d[i])
                    .map_collect(|&w, &d| 0.5 * d.abs() * w * w),
            };
            to_rows(t, &s)
        })
        .collect())
}
