//! `--target latency`: onnxruntime latency is not proportional to parameters or FLOPs (vector
//! blocks of 16 channels, per-node overheads), so the FLOPs target that removes the requested
//! share of the measured latency is searched for, timing each candidate's rewrite against the
//! dense model in the same onnxruntime (`validate::gate::time_pair`).

use super::allocate::{AllocOptions, Target, allocate};
use crate::analysis::{Analysis, Probe};
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::ir::Model;
use crate::rewrite::{self, Edit};
use crate::validate::gate::{ValidateOptions, time_pair};
use prost::Message;
use serde::Serialize;
use std::collections::HashMap;

/// One timed candidate of the search.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStep {
    /// The FLOPs target tried (fraction of the model's FLOPs).
    pub flops_target: f64,
    pub dense_ms: f64,
    pub pruned_ms: f64,
    pub ratio: f64,
}

pub struct LatencySearch {
    pub removed: Vec<Vec<bool>>,
    pub steps: Vec<LatencyStep>,
    pub shortfall: Option<String>,
}

/// Bisection steps after the bracket (each one rewrite and one timing).
const STEPS: usize = 6;

#[allow(clippy::too_many_arguments)]
pub fn search(
    model: &Model,
    a: &Analysis,
    probe: &Probe,
    rank: &[Vec<f64>],
    denominators: (f64, f64, f64),
    alloc: &AllocOptions,
    eval: &Feeds<f32>,
    v: &ValidateOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LatencySearch> {
    if v.latency_runs == 0 {
        return Err(Error::Usage(
            "--target latency times candidates in onnxruntime: give --latency-runs ≥ 1".into(),
        ));
    }
    let goal = 1.0 - alloc.ratio;
    let dir = model.source.path.parent();
    let n = crate::autodiff::curvature::batch_size(eval)?;
    let feeds = crate::calib::head(eval, v.latency_batch.clamp(1, n))?;
    let dense = model.source.proto.encode_to_vec();
    let g = &model.graph;
    let mut steps = Vec::new();
    let at = |s: f64, steps: &mut Vec<LatencyStep>| -> Result<(Vec<Vec<bool>>, f64, f64)> {
        let al = allocate(
            g,
            a,
            rank,
            denominators,
            &AllocOptions {
                ratio: s,
                target: Target::Flops,
                ..*alloc
            },
        );
        let edit = Edit {
            removed: al.removed,
            replace: HashMap::new(),
            implants: Vec::new(),
        };
        let bytes = rewrite::apply(model, a, probe, &edit)?.encode_to_vec();
        let (d, p) = time_pair(&dense, &bytes, dir, v, &feeds)?;
        steps.push(LatencyStep {
            flops_target: s,
            dense_ms: d,
            pruned_ms: p,
            ratio: p / d,
        });
        Ok((edit.removed, p / d, al.achieved))
    };
    progress(0, STEPS + 1);
    // The most the guards allow: if even that misses the goal, it is the answer.
    let (most, r_most, s_most) = at(1.0, &mut steps)?;
    if r_most > goal {
        return Ok(LatencySearch {
            removed: most,
            steps,
            shortfall: Some(format!(
                "the most the frozen structures, --max-layer-ratio {} and --round-to {} allow ({:.1}% of the FLOPs) measured {:.2}× the dense latency, not the {:.2}× asked",
                alloc.max_layer_ratio,
                alloc.round_to,
                100.0 * s_most,
                r_most,
                goal
            )),
        });
    }
    let (mut lo, mut hi, mut best) = (0.0, s_most, most);
    for k in 0..STEPS {
        progress(k + 1, STEPS + 1);
        // The first guess: FLOPs in proportion to latency.
        let s = if k == 0 {
            alloc.ratio.clamp(lo, hi)
        } else {
            0.5 * (lo + hi)
        };
        let (removed, r, _) = at(s, &mut steps)?;
        if r <= goal {
            hi = s;
            best = removed;
        } else {
            lo = s;
        }
    }
    progress(STEPS + 1, STEPS + 1);
    Ok(LatencySearch {
        removed: best,
        steps,
        shortfall: None,
    })
}
