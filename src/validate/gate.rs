//! The validation of an emitted model: the original and the compressed model run in
//! onnxruntime on the same held-out inputs; agreement, accuracy, latency; the accuracy gate.

use super::metrics::{OutputAgreement, accuracy, agreement};
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::runtime::{Device, OrtSession};
use crate::tensor::Tensor;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub batch: usize,
    pub threads: usize,
    pub runs: usize,
    pub dense_ms: f64,
    pub pruned_ms: f64,
    /// pruned / dense.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub device: String,
    pub samples: usize,
    pub outputs: Vec<OutputAgreement>,
    /// The output that accuracy, KL and the drop are computed on.
    pub scored_output: String,
    /// Mean KL(dense ‖ pruned) of the softmax of the scored output, for classifiers.
    pub kl: Option<f64>,
    pub accuracy_dense: Option<f64>,
    pub accuracy_pruned: Option<f64>,
    pub latency: Option<Latency>,
    /// The quantity the gate compares with --max-drop, and what it is.
    pub drop: f64,
    pub drop_metric: String,
}

/// Mean over rows of KL(softmax(a) ‖ softmax(b)) along the last axis.
pub fn mean_kl(a: &Tensor<f32>, b: &Tensor<f32>) -> Option<f64> {
    let (x, y) = (a.as_float()?, b.as_float()?);
    if x.ndim() != 2 || x.shape() != y.shape() {
        return None;
    }
    let k = x.shape()[1];
    let (xs, ys): (Vec<f64>, Vec<f64>) = (
        x.iter().map(|&v| v as f64).collect(),
        y.iter().map(|&v| v as f64).collect(),
    );
    let soft = |r: &[f64]| -> Vec<f64> {
        // Already probabilities (an exported Softmax): use as they are.
        if r.iter().all(|&v| (0.0..=1.0).contains(&v)) && (r.iter().sum::<f64>() - 1.0).abs() < 1e-3
        {
            return r.to_vec();
        }
        let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = r.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    };
    let rows = xs.len() / k;
    let mut total = 0.0;
    for (rx, ry) in xs.chunks(k).zip(ys.chunks(k)) {
        let (p, q) = (soft(rx), soft(ry));
        total += p
            .iter()
            .zip(&q)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, q)| p * (p / q.max(1e-30)).ln())
            .sum::<f64>();
    }
    Some(total / rows.max(1) as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median milliseconds of `runs` timings of each model, measured alone: in rounds, each model
/// gets a fresh session, an untimed warm-up run and a block of timed runs, and is dropped before
/// the other's turn. Two live sessions interfere through onnxruntime's spinning worker threads
/// (the dense ResNet fixture measured 6.7 ms next to a live pruned session, 2.7 ms alone), and
/// rounds share drifts in the machine's load between both models.
pub fn time_pair(
    a: &[u8],
    b: &[u8],
    dir: Option<&Path>,
    o: &ValidateOptions,
    feeds: &Feeds<f32>,
) -> Result<(f64, f64)> {
    const BLOCK: usize = 5;
    let timed = |m: &[u8], n: usize, t: &mut Vec<f64>| -> Result<()> {
        let mut s = OrtSession::new(m, dir, o.device, o.threads)?;
        s.run(feeds)?;
        for _ in 0..n {
            let t0 = std::time::Instant::now();
            s.run(feeds)?;
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    };
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let mut left = o.latency_runs.max(1);
    while left > 0 {
        let n = left.min(BLOCK);
        timed(a, n, &mut ta)?;
        timed(b, n, &mut tb)?;
        left -= n;
    }
    Ok((median(ta), median(tb)))
}

pub struct ValidateOptions {
    pub device: Device,
    pub threads: usize,
    /// Timed runs per model (0: no latency measurement).
    pub latency_runs: usize,
    /// Samples per timed run.
    pub latency_batch: usize,
    /// The output the gate scores (--score-output); None: the first float output.
    pub score_output: Option<String>,
    /// What --max-drop compares (--drop-metric).
    pub drop_metric: DropMetric,
}

/// What the gate compares with --max-drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DropMetric {
    /// Accuracy with labels, else top-1 disagreement for a 2-D output, else 1 − cosine.
    #[default]
    Auto,
    /// Top-1 disagreement with the original (classifiers without labels).
    Top1,
    /// 1 − cosine similarity to the original (embeddings, dense outputs): labels then only
    /// feed the report's accuracy.
    Cosine,
}

/// Which of a run's outputs the gate scores: the named one, else the first float output (int
/// outputs may pass inputs through, as MiniLM's export does).
pub fn scored_index(y: &[(String, Tensor<f32>)], name: Option<&str>) -> Result<usize> {
    match name {
        Some(n) => {
            let i = y.iter().position(|(m, _)| m == n).ok_or_else(|| {
                let all: Vec<&str> = y.iter().map(|(m, _)| m.as_str()).collect();
                Error::Usage(format!(
                    "--score-output {n:?} is not an output of the model (outputs: {all:?})"
                ))
            })?;
            if y[i].1.as_float().is_none() {
                return Err(Error::Usage(format!(
                    "--score-output {n:?} is not a float output"
                )));
            }
            Ok(i)
        }
        None => Ok(y
            .iter()
            .position(|(_, t)| t.as_float().is_some())
            .unwrap_or(0)),
    }
}

/// What the gate compares with --max-drop: under `Auto` the accuracy drop with labels, else
/// the top-1 disagreement for a 2-D output (a classifier's logits, as far as a shape tells),
/// else 1 − cosine similarity of the scored output; `Top1` and `Cosine` force one.
pub fn drop_of(
    dense: &Tensor<f32>,
    pruned: &Tensor<f32>,
    labels: Option<&[i64]>,
    metric: DropMetric,
) -> Result<(f64, String)> {
    if let (Some(l), DropMetric::Auto) = (labels, metric) {
        let (a, b) = (
            accuracy(dense, l).map_err(Error::Data)?,
            accuracy(pruned, l).map_err(Error::Data)?,
        );
        return Ok((a - b, "accuracy drop".into()));
    }
    let agg = agreement("output", dense, pruned).map_err(Error::Runtime)?;
    let top1 = match (metric, agg.top1_agreement) {
        (DropMetric::Cosine, _) => None,
        (DropMetric::Top1, None) => {
            return Err(Error::Usage(format!(
                "--drop-metric top1 needs an output with a class axis; the scored one is {:?}",
                dense.shape()
            )));
        }
        (DropMetric::Top1, t) => t,
        (DropMetric::Auto, t) => t.filter(|_| dense.shape().len() == 2),
    };
    Ok(match top1 {
        Some(t) => (1.0 - t, "top-1 disagreement with the original".into()),
        None => (
            1.0 - agg.cosine,
            "1 − cosine similarity to the original".into(),
        ),
    })
}

/// The gate's drop of a candidate model against the dense model's outputs on `eval`.
pub fn quick_drop(
    candidate: &[u8],
    dir: Option<&Path>,
    dense_out: &Tensor<f32>,
    eval: &Feeds<f32>,
    labels: Option<&[i64]>,
    o: &ValidateOptions,
) -> Result<f64> {
    let mut s = OrtSession::new(candidate, dir, o.device, o.threads)?;
    let y = s.run(eval)?;
    let i = scored_index(&y, o.score_output.as_deref())?;
    Ok(drop_of(dense_out, &y[i].1, labels, o.drop_metric)?.0)
}

/// Runs both models (bytes; `dir` resolves external data) on `eval` and compares them.
pub fn validate(
    dense: &[u8],
    pruned: &[u8],
    dir: Option<&Path>,
    eval: &Feeds<f32>,
    labels: Option<&[i64]>,
    o: &ValidateOptions,
) -> Result<Validation> {
    let mut sd = OrtSession::new(dense, dir, o.device, o.threads)?;
    let mut sp = OrtSession::new(pruned, dir, o.device, o.threads).map_err(|e| {
        Error::Runtime(format!(
            "the pruned model does not load in onnxruntime: {e}"
        ))
    })?;
    let yd = sd.run(eval)?;
    let yp = sp.run(eval)?;
    if yd.len() != yp.len() {
        return Err(Error::Runtime(format!(
            "the pruned model has {} outputs, the original {}",
            yp.len(),
            yd.len()
        )));
    }
    let mut outputs = Vec::new();
    for ((n, a), (m, b)) in yd.iter().zip(&yp) {
        if n != m {
            return Err(Error::Runtime(format!(
                "output names differ: {n:?} vs {m:?}"
            )));
        }
        outputs.push(agreement(n, a, b).map_err(Error::Runtime)?);
    }
    let samples = crate::autodiff::curvature::batch_size(eval)?;
    let fi = scored_index(&yd, o.score_output.as_deref())?;
    let (accuracy_dense, accuracy_pruned) = match labels {
        Some(l) => (
            Some(accuracy(&yd[fi].1, l).map_err(Error::Data)?),
            Some(accuracy(&yp[fi].1, l).map_err(Error::Data)?),
        ),
        None => (None, None),
    };
    let kl = mean_kl(&yd[fi].1, &yp[fi].1);
    let (drop, drop_metric) = drop_of(&yd[fi].1, &yp[fi].1, labels, o.drop_metric)?;
    let latency = if o.latency_runs > 0 {
        let b = o.latency_batch.clamp(1, samples);
        let feeds = crate::calib::head(eval, b)?;
        std::mem::drop((sd, sp));
        let (dense_ms, pruned_ms) = time_pair(dense, pruned, dir, o, &feeds)?;
        Some(Latency {
            batch: b,
            threads: o.threads,
            runs: o.latency_runs,
            dense_ms,
            pruned_ms,
            ratio: pruned_ms / dense_ms,
        })
    } else {
        None
    };
    Ok(Validation {
        device: o.device.to_string(),
        samples,
        scored_output: yd[fi].0.clone(),
        outputs,
        kl,
        accuracy_dense,
        accuracy_pruned,
        latency,
        drop,
        drop_metric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    fn t(v: Vec<f32>, s: &[usize]) -> Tensor<f32> {
        Tensor::f32(ArrayD::from_shape_vec(IxDyn(s), v).unwrap())
    }

    #[test]
    fn drop_metric_choices() {
        // Row 0 keeps its argmax, row 1 loses it: top-1 disagreement 0.5.
        let a = t(vec![1.0, 2.0, 3.0, 0.0], &[2, 2]);
        let b = t(vec![1.0, 2.5, 1.0, 4.0], &[2, 2]);
        let cos = agreement("y", &a, &b).unwrap().cosine;
        let labels = [1i64, 0];
        let (d, what) = drop_of(&a, &b, Some(&labels), DropMetric::Auto).unwrap();
        assert_eq!((d, what.as_str()), (0.5, "accuracy drop"));
        let (d, _) = drop_of(&a, &b, None, DropMetric::Auto).unwrap();
        assert_eq!(d, 0.5);
        for labels in [None, Some(&labels[..])] {
            let (d, what) = drop_of(&a, &b, labels, DropMetric::Cosine).unwrap();
            assert!((d - (1.0 - cos)).abs() < 1e-12 && what.contains("cosine"));
            let (d, what) = drop_of(&a, &b, labels, DropMetric::Top1).unwrap();
            assert!(d == 0.5 && what.contains("top-1"));
        }
        // A 1-D output: auto falls back to cosine, top1 is refused.
        let (x, y) = (t(vec![1.0, 2.0], &[2]), t(vec![2.0, 1.0], &[2]));
        let (_, what) = drop_of(&x, &y, None, DropMetric::Auto).unwrap();
        assert!(what.contains("cosine"));
        assert!(drop_of(&x, &y, None, DropMetric::Top1).is_err());
    }

    #[test]
    fn scored_index_by_name_or_first_float() {
        let y = vec![
            ("ids".to_string(), Tensor::i64_vec(vec![0, 0])),
            ("tokens".to_string(), t(vec![0.0; 4], &[2, 2])),
            ("sentence".to_string(), t(vec![0.0; 2], &[2])),
        ];
        assert_eq!(scored_index(&y, None).unwrap(), 1);
        assert_eq!(scored_index(&y, Some("sentence")).unwrap(), 2);
        assert!(scored_index(&y, Some("ids")).is_err());
        let e = scored_index(&y, Some("nope")).unwrap_err().to_string();
        assert!(e.contains("\"tokens\""), "{e}");
    }
}
