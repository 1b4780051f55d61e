use crate::tensor::{Data, Tensor};
use serde::Serialize;

/// How closely `got` reproduces `reference` (same shape required).
#[derive(Debug, Clone, Serialize)]
pub struct OutputAgreement {
    pub name: String,
    pub max_abs: f64,
    /// max |got − ref| / max |ref|.
    pub rel: f64,
    /// Cosine similarity of the flattened outputs.
    pub cosine: f64,
    /// Share of rows whose argmax over the last axis agrees (rank ≥ 2 float outputs).
    pub top1_agreement: Option<f64>,
}

pub fn agreement(
    name: &str,
    reference: &Tensor<f32>,
    got: &Tensor<f32>,
) -> Result<OutputAgreement, String> {
    if reference.shape() != got.shape() {
        return Err(format!(
            "output {name:?}: shapes differ ({:?} vs {:?})",
            reference.shape(),
            got.shape()
        ));
    }
    let (r, g) = (reference.to_f64_vec(), got.to_f64_vec());
    let mut max_abs: f64 = 0.0;
    let mut max_ref: f64 = 0.0;
    let (mut dot, mut nr, mut ng) = (0.0, 0.0, 0.0);
    for (a, b) in r.iter().zip(&g) {
        let d = (a - b).abs();
        // NaN in one and not the other is total disagreement.
        max_abs = if d.is_nan() && !(a.is_nan() && b.is_nan()) {
            f64::INFINITY
        } else {
            max_abs.max(d)
        };
        max_ref = max_ref.max(a.abs());
        dot += a * b;
        nr += a * a;
        ng += b * b;
    }
    let cosine = if nr == 0.0 && ng == 0.0 {
        1.0
    } else if nr == 0.0 || ng == 0.0 {
        0.0
    } else {
        dot / (nr.sqrt() * ng.sqrt())
    };
    let top1_agreement = match (top1(reference), top1(got)) {
        (Some(a), Some(b)) if !a.is_empty() => {
            Some(a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64)
        }
        _ => None,
    };
    Ok(OutputAgreement {
        name: name.to_string(),
        max_abs,
        rel: if max_ref > 0.0 {
            max_abs / max_ref
        } else {
            max_abs
        },
        cosine,
        top1_agreement,
    })
}

/// Argmax over the last axis for every row of a float tensor of rank ≥ 2.
pub fn top1(t: &Tensor<f32>) -> Option<Vec<usize>> {
    let Data::Float(a) = &t.data else { return None };
    let sh = a.shape();
    if sh.len() < 2 || *sh.last()? == 0 {
        return None;
    }
    let k = *sh.last()?;
    let v: Vec<f32> = a.iter().copied().collect();
    Some(
        v.chunks(k)
            .map(|row| {
                let mut best = 0;
                for (i, &x) in row.iter().enumerate() {
                    if x > row[best] {
                        best = i;
                    }
                }
                best
            })
            .collect(),
    )
}

/// Top-1 accuracy of a logits tensor [N, classes] against integer labels [N].
pub fn accuracy(logits: &Tensor<f32>, labels: &[i64]) -> Result<f64, String> {
    let pred = top1(logits).ok_or("accuracy needs a float output of rank ≥ 2")?;
    if pred.len() != labels.len() {
        return Err(format!(
            "{} predictions but {} labels",
            pred.len(),
            labels.len()
        ));
    }
    if labels.is_empty() {
        return Err("no labels".into());
    }
    Ok(pred
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p as i64 == **l)
        .count() as f64
        / labels.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn t(v: Vec<f32>, s: &[usize]) -> Tensor<f32> {
        Tensor::f32(ArrayD::from_shape_vec(IxDyn(s), v).unwrap())
    }

    #[test]
    fn agreement_figures() {
        let a = t(vec![1.0, 2.0, 3.0, 0.0], &[2, 2]);
        let b = t(vec![1.0, 2.5, 3.0, 4.0], &[2, 2]);
        let m = agreement("y", &a, &b).unwrap();
        assert_eq!(m.max_abs, 4.0);
        assert!((m.rel - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.top1_agreement, Some(0.5));
        assert!(m.cosine < 1.0);
        assert_eq!(accuracy(&a, &[1, 0]).unwrap(), 1.0);
        assert_eq!(accuracy(&b, &[1, 0]).unwrap(), 0.5);
    }
}
