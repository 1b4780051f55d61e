//! Scalar objectives of a forward pass: cross-entropy against labels, KL divergence to a
//! teacher's (the dense model's) outputs, and mean-squared reconstruction of any value.
//! Each gives its value, its gradient with respect to the value it reads (the seed of the
//! reverse sweep) and, for Gauss-Newton products, its Hessian with respect to that value.

use super::backward::Tape;
use crate::error::{Error, Result};
use crate::ir::{Graph, ValueId};
use crate::tensor::Real;
use ndarray::{ArrayD, Axis, IxDyn};

/// Targets and teachers: reference-counted, so that restricting an objective to a micro-batch
/// shares their storage.
pub type Shared = ndarray::ArcArray<f64, IxDyn>;

/// Whether a classifier output holds logits or probabilities (some exports end in Softmax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Logits,
    Probabilities,
}

impl OutputKind {
    /// Probabilities when every row along the last axis is non-negative and sums to 1.
    pub fn detect(out: &ArrayD<f64>) -> OutputKind {
        let Some(&k) = out.shape().last() else {
            return OutputKind::Logits;
        };
        if k == 0 || out.iter().any(|&v| !(0.0..=1.0 + 1e-6).contains(&v)) {
            return OutputKind::Logits;
        }
        let flat = out.as_standard_layout();
        let rows_sum_to_one = flat
            .as_slice()
            .expect("std")
            .chunks(k)
            .all(|r| (r.iter().sum::<f64>() - 1.0).abs() < 1e-3);
        if rows_sum_to_one {
            OutputKind::Probabilities
        } else {
            OutputKind::Logits
        }
    }
}

/// Gradients of an objective with respect to the values it reads: the reverse sweep's seeds.
pub type Seeds<S> = Vec<(ValueId, ArrayD<S>)>;

#[derive(Debug, Clone)]
pub enum Objective {
    /// Mean cross-entropy of `value` ([N, classes]) against integer labels. With logits, the
    /// softmax is taken of `value / temperature` (1: the plain cross-entropy; the pruning-at-
    /// initialisation criteria use 200 to keep an untrained model's gradients informative).
    CrossEntropy {
        value: ValueId,
        labels: Vec<i64>,
        kind: OutputKind,
        temperature: f64,
    },
    /// Mean KL(teacher ‖ model) over rows of `value`; `teacher` holds the teacher's probabilities.
    Kl {
        value: ValueId,
        teacher: Shared,
        kind: OutputKind,
    },
    /// ½ · (1/N) · Σ ‖value − target‖² (N = the batch, axis 0): layer-wise reconstruction.
    Mse { value: ValueId, target: Shared },
    /// The mean over all elements of (value − target)² (PyTorch's `MSELoss`): one term of the
    /// SNOWS K-ops-ahead reconstruction, where every hooked output counts equally whatever
    /// its size.
    MseMean { value: ValueId, target: Shared },
    /// The sum of several objectives (each may read a different value).
    Sum(Vec<Objective>),
}

fn softmax_rows(z: &[f64], k: usize) -> Vec<f64> {
    let mut p = z.to_vec();
    for row in p.chunks_mut(k) {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row
            .iter_mut()
            .map(|v| {
                *v = (*v - m).exp();
                *v
            })
            .sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    p
}

impl Objective {
    /// The values this objective reads, one per term (a value may repeat).
    pub fn values(&self) -> Vec<ValueId> {
        match self {
            Objective::CrossEntropy { value, .. }
            | Objective::Kl { value, .. }
            | Objective::Mse { value, .. }
            | Objective::MseMean { value, .. } => vec![*value],
            Objective::Sum(terms) => terms.iter().flat_map(|t| t.values()).collect(),
        }
    }

    /// The SNOWS reconstruction objective: Σ_k mean (value_k − target_k)².
    pub fn reconstruction(terms: Vec<(ValueId, ArrayD<f64>)>) -> Objective {
        Objective::Sum(
            terms
                .into_iter()
                .map(|(value, target)| Objective::MseMean {
                    value,
                    target: target.into_shared(),
                })
                .collect(),
        )
    }

    /// KL to a teacher output (logits or probabilities, detected) of the same graph value.
    pub fn kl_to(value: ValueId, teacher_out: &ArrayD<f64>) -> Objective {
        let kind = OutputKind::detect(teacher_out);
        let k = *teacher_out.shape().last().unwrap_or(&1);
        let flat = teacher_out.as_standard_layout();
        let probs = match kind {
            OutputKind::Probabilities => flat.iter().copied().collect(),
            OutputKind::Logits => softmax_rows(flat.as_slice().expect("std"), k),
        };
        Objective::Kl {
            value,
            teacher: ArrayD::from_shape_vec(teacher_out.raw_dim(), probs)
                .expect("same size")
                .into_shared(),
            kind,
        }
    }

    /// The same objective restricted to samples `range` of the batch.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Objective {
        // Views of the same storage: an HVP pass restricts the objective to each micro-batch,
        // and copying the targets every time was a tenth of a SNOWS run on PP-LCNet.
        let rows = |a: &Shared| {
            a.clone()
                .slice_axis_move(Axis(0), ndarray::Slice::from(range.clone()))
        };
        match self {
            Objective::CrossEntropy {
                value,
                labels,
                kind,
                temperature,
            } => Objective::CrossEntropy {
                temperature: *temperature,
                value: *value,
                labels: labels[range.clone()].to_vec(),
                kind: *kind,
            },
            Objective::Kl {
                value,
                teacher,
                kind,
            } => Objective::Kl {
                value: *value,
                teacher: rows(teacher),
                kind: *kind,
            },
            Objective::Mse { value, target } => Objective::Mse {
                value: *value,
                target: rows(target),
            },
            Objective::MseMean { value, target } => Objective::MseMean {
                value: *value,
                target: rows(target),
            },
            Objective::Sum(terms) => {
                Objective::Sum(terms.iter().map(|t| t.slice(range.clone())).collect())
            }
        }
    }

    fn check(&self, g: &Graph, value: ValueId, y: &ndarray::ArrayViewD<impl Real>) -> Result<()> {
        let at = || format!("value {:?}", g.name(value));
        let n = y.shape().first().copied().unwrap_or(0);
        match self {
            Objective::CrossEntropy { labels, .. } => {
                if y.ndim() != 2 || labels.len() != n {
                    return Err(Error::graph(
                        at(),
                        format!(
                            "cross-entropy needs [N, classes] outputs and N labels; got {:?} and {} labels",
                            y.shape(),
                            labels.len()
                        ),
                    ));
                }
                if let Some(&l) = labels
                    .iter()
                    .find(|&&l| l < 0 || l as usize >= y.shape()[1])
                {
                    return Err(Error::Data(format!(
                        "label {l} is outside the {} classes",
                        y.shape()[1]
                    )));
                }
            }
            Objective::Kl { teacher, .. } => {
                if teacher.shape() != y.shape() {
                    return Err(Error::graph(
                        at(),
                        format!(
                            "teacher output {:?} differs from {:?}",
                            teacher.shape(),
                            y.shape()
                        ),
                    ));
                }
            }
            Objective::Mse { target, .. } | Objective::MseMean { target, .. } => {
                if target.shape() != y.shape() {
                    return Err(Error::graph(
                        at(),
                        format!("target {:?} differs from {:?}", target.shape(), y.shape()),
                    ));
                }
            }
            Objective::Sum(_) => {}
        }
        Ok(())
    }

    /// The objective's value and its gradient with respect to each value it reads (the seeds of
    /// the reverse sweep), in the compute type (on dual numbers the gradient's tangent is the
    /// objective's Hessian times the values' tangents).
    pub fn evaluate<S: Real>(&self, g: &Graph, tape: &Tape<S>) -> Result<(S, Seeds<S>)> {
        match self {
            Objective::Sum(terms) => {
                let mut total = S::zero();
                let mut seeds = Vec::new();
                for t in terms {
                    let (l, s) = t.evaluate(g, tape)?;
                    total += l;
                    seeds.extend(s);
                }
                Ok((total, seeds))
            }
            Objective::CrossEntropy { value, .. }
            | Objective::Kl { value, .. }
            | Objective::Mse { value, .. }
            | Objective::MseMean { value, .. } => {
                let (l, s) = self.evaluate_term(g, *value, tape)?;
                Ok((l, vec![(*value, s)]))
            }
        }
    }

    fn evaluate_term<S: Real>(
        &self,
        g: &Graph,
        value: ValueId,
        tape: &Tape<S>,
    ) -> Result<(S, ArrayD<S>)> {
        let y = tape.float_view(g, value)?;
        self.check(g, value, &y)?;
        let y = y.as_standard_layout();
        let n = y.shape().first().copied().unwrap_or(1).max(1);
        let inv_n = S::from_f64(1.0 / n as f64);
        let k = *y.shape().last().unwrap_or(&1);
        let ys = y.as_slice().expect("std");
        let mut grad = vec![S::zero(); ys.len()];
        let mut total = S::zero();
        match self {
            Objective::CrossEntropy {
                labels,
                kind,
                temperature,
                ..
            } => {
                let inv_t = S::from_f64(1.0 / temperature);
                for (r, (row, gr)) in ys.chunks(k).zip(grad.chunks_mut(k)).enumerate() {
                    let l = labels[r] as usize;
                    match kind {
                        OutputKind::Logits => {
                            let z: Vec<S> = row.iter().map(|&v| v * inv_t).collect();
                            let (lse, p) = log_softmax(&z);
                            total += lse - z[l];
                            for j in 0..k {
                                gr[j] = p[j] * inv_n * inv_t;
                            }
                            gr[l] -= inv_n * inv_t;
                        }
                        OutputKind::Probabilities => {
                            total -= row[l].ln();
                            gr[l] = -(inv_n / row[l]);
                        }
                    }
                }
            }
            Objective::Kl { teacher, kind, .. } => {
                let t: Vec<S> = teacher
                    .as_standard_layout()
                    .iter()
                    .map(|&v| S::from_f64(v))
                    .collect();
                for ((row, gr), tr) in ys.chunks(k).zip(grad.chunks_mut(k)).zip(t.chunks(k)) {
                    match kind {
                        OutputKind::Logits => {
                            let (lse, p) = log_softmax(row);
                            for j in 0..k {
                                if tr[j] > S::zero() {
                                    total += tr[j] * (tr[j].ln() - (row[j] - lse));
                                }
                                gr[j] = (p[j] - tr[j]) * inv_n;
                            }
                        }
                        OutputKind::Probabilities => {
                            for j in 0..k {
                                if tr[j] > S::zero() {
                                    total += tr[j] * (tr[j].ln() - row[j].ln());
                                    gr[j] = -(tr[j] / row[j]) * inv_n;
                                }
                            }
                        }
                    }
                }
            }
            Objective::Mse { target, .. } => {
                let t = target.as_standard_layout();
                // Slices, not ndarray's n-d iterators: this loop runs over every horizon
                // output on every HVP pass.
                let ts = t.as_slice().expect("standard layout");
                for ((&yv, &tv), gr) in ys.iter().zip(ts).zip(grad.iter_mut()) {
                    let d = yv - S::from_f64(tv);
                    total += S::from_f64(0.5) * d * d;
                    *gr = d * inv_n;
                }
            }
            Objective::MseMean { target, .. } => {
                // Returned as total·(1/N): fold the per-sample element count in here.
                let per = S::from_f64(1.0 / (ys.len() / n).max(1) as f64);
                let t = target.as_standard_layout();
                let ts = t.as_slice().expect("standard layout");
                for ((&yv, &tv), gr) in ys.iter().zip(ts).zip(grad.iter_mut()) {
                    let d = yv - S::from_f64(tv);
                    total += per * d * d;
                    *gr = S::from_f64(2.0) * per * d * inv_n;
                }
            }
            Objective::Sum(_) => unreachable!("Sum is evaluated term by term"),
        }
        Ok((
            total * inv_n,
            ArrayD::from_shape_vec(IxDyn(y.shape()), grad).expect("sized"),
        ))
    }

    /// The Hessian of the objective with respect to the values it reads applied to `u` (one
    /// array per entry of `values()`): the middle factor of a Gauss-Newton product Jᵀ·Λ·J.
    /// Terms are independent, so Λ is block diagonal over them.
    pub fn output_hessian<S: Real>(
        &self,
        g: &Graph,
        tape: &Tape<S>,
        u: &[ArrayD<S>],
    ) -> Result<Vec<ArrayD<S>>> {
        self.output_factor(g, tape, u, false)
    }

    /// A square root L of the output Hessian (Λ = L·Lᵀ) applied to `u`: with u Rademacher,
    /// Jᵀ·L·u has covariance Jᵀ·Λ·J, so its square is a nonnegative, unbiased sketch of the
    /// Gauss-Newton diagonal from one backward pass.
    pub fn output_hessian_sqrt<S: Real>(
        &self,
        g: &Graph,
        tape: &Tape<S>,
        u: &[ArrayD<S>],
    ) -> Result<Vec<ArrayD<S>>> {
        self.output_factor(g, tape, u, true)
    }

    /// Λ·u, or L·u with `sqrt`, term by term.
    fn output_factor<S: Real>(
        &self,
        g: &Graph,
        tape: &Tape<S>,
        u: &[ArrayD<S>],
        sqrt: bool,
    ) -> Result<Vec<ArrayD<S>>> {
        let vals = self.values();
        if u.len() != vals.len() {
            return Err(Error::Usage(format!(
                "{} directions for an objective of {} terms",
                u.len(),
                vals.len()
            )));
        }
        match self {
            Objective::Sum(terms) => {
                let mut out = Vec::with_capacity(u.len());
                let mut at = 0;
                for t in terms {
                    let k = t.values().len();
                    out.extend(t.output_factor(g, tape, &u[at..at + k], sqrt)?);
                    at += k;
                }
                Ok(out)
            }
            _ => Ok(vec![
                self.output_hessian_term(g, vals[0], tape, &u[0], sqrt)?,
            ]),
        }
    }

    fn output_hessian_term<S: Real>(
        &self,
        g: &Graph,
        value: ValueId,
        tape: &Tape<S>,
        u: &ArrayD<S>,
        sqrt: bool,
    ) -> Result<ArrayD<S>> {
        let y = tape.float_view(g, value)?;
        let y = y.as_standard_layout();
        let n = y.shape().first().copied().unwrap_or(1).max(1);
        let inv_n = S::from_f64(1.0 / n as f64);
        // Every Λ below is a scale times a per-row factor; the square root takes √scale.
        let root = |s: S| if sqrt { s.sqrt() } else { s };
        let k = *y.shape().last().unwrap_or(&1);
        let us = u.as_standard_layout();
        let (ys, usl) = (y.as_slice().expect("std"), us.as_slice().expect("std"));
        let mut out = vec![S::zero(); ys.len()];
        let kind = match self {
            Objective::CrossEntropy { kind, .. } | Objective::Kl { kind, .. } => Some(*kind),
            Objective::Mse { .. } | Objective::MseMean { .. } | Objective::Sum(_) => None,
        };
        // Logits divided by T: Λ(z) = Λ_softmax(z/T) / T², L(z) = L_softmax(z/T) / T.
        let inv_t = match self {
            Objective::CrossEntropy { temperature, .. } => S::from_f64(1.0 / temperature),
            _ => S::one(),
        };
        // MSELoss's Λ = 2/(N·d)·I; ½‖·‖²/N's is 1/N·I.
        let mse_scale = match self {
            Objective::MseMean { .. } => S::from_f64(2.0 / (y.len() / n).max(1) as f64),
            _ => S::one(),
        };
        let (inv_n_r, mse_r) = (root(inv_n), root(mse_scale));
        match kind {
            // Softmax cross-entropy: diag(p) − p·pᵀ per row.
            Some(OutputKind::Logits) => {
                for ((row, ur), or) in ys.chunks(k).zip(usl.chunks(k)).zip(out.chunks_mut(k)) {
                    let z: Vec<S> = row.iter().map(|&v| v * inv_t).collect();
                    let (_, p) = log_softmax(&z);
                    if sqrt {
                        // L = diag(√p) − p·√pᵀ: L·Lᵀ = diag(p) − p·pᵀ since Σp = 1.
                        let s: Vec<S> = p.iter().map(|&v| v.sqrt()).collect();
                        let su: S = s.iter().zip(ur).map(|(&a, &b)| a * b).sum();
                        for j in 0..k {
                            or[j] = (s[j] * ur[j] - p[j] * su) * inv_n_r * inv_t;
                        }
                    } else {
                        let pu: S = p.iter().zip(ur).map(|(&a, &b)| a * b).sum();
                        for j in 0..k {
                            or[j] = (p[j] * ur[j] - p[j] * pu) * inv_n * inv_t * inv_t;
                        }
                    }
                }
            }
            Some(OutputKind::Probabilities) => {
                let weights: Vec<S> = match self {
                    // −log p_y: 1/p_y² at the label.
                    Objective::CrossEntropy { labels, .. } => {
                        let mut w = vec![S::zero(); ys.len()];
                        for (r, &l) in labels.iter().enumerate() {
                            let p = ys[r * k + l as usize];
                            w[r * k + l as usize] = (p * p).recip();
                        }
                        w
                    }
                    // −Σ t log p: t/p².
                    Objective::Kl { teacher, .. } => teacher
                        .iter()
                        .zip(ys)
                        .map(|(&t, &p)| S::from_f64(t) / (p * p))
                        .collect(),
                    _ => unreachable!("kind is None for the squared errors"),
                };
                for ((o, &w), &uv) in out.iter_mut().zip(&weights).zip(usl) {
                    *o = root(w) * uv * inv_n_r;
                }
            }
            None => {
                for (o, &uv) in out.iter_mut().zip(usl) {
                    *o = mse_r * uv * inv_n_r;
                }
            }
        }
        Ok(ArrayD::from_shape_vec(IxDyn(y.shape()), out).expect("sized"))
    }
}

/// (log Σ exp z, softmax z) of one row.
fn log_softmax<S: Real>(z: &[S]) -> (S, Vec<S>) {
    let m = z.iter().copied().fold(-S::infinity(), |a, b| a.max(b));
    let e: Vec<S> = z.iter().map(|&v| (v - m).exp()).collect();
    let s: S = e.iter().copied().sum();
    let lse = m + s.ln();
    (lse, e.into_iter().map(|v| v / s).collect())
}
