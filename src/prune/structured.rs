//! The structured pass end to end: probe → dependency groups → scores → allocation (or a
//! plan read back) → rewrite → validation in onnxruntime → report.

use super::allocate::{AllocOptions, RankCost, Target, allocate, cost_factor, prunable_params};
use super::criteria::{self, Criterion};
use super::plan::Plan;
use crate::analysis::{self, Analysis, GroupKind, Probe};
use crate::error::{Error, Result};
use crate::interp::Feeds;
use crate::ir::{Graph, Model};
use crate::onnx::ModelProto;
use crate::onnx::proto::StringStringEntryProto;
use crate::rewrite::{self, Edit};
use crate::runtime::Device;
use crate::validate::gate::{ValidateOptions, Validation, validate};
use prost::Message;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone)]
pub struct StructuredOptions {
    pub ratio: f64,
    pub target: Target,
    pub criterion: Criterion,
    pub max_layer_ratio: f64,
    pub round_to: usize,
    /// What the global ranking weighs a loss-estimating criterion's scores against (None:
    /// what the target counts).
    pub cost: Option<RankCost>,
    pub prune_hidden: bool,
    pub seed: u64,
    /// Calibration samples used for scoring (the first ones).
    pub calib_samples: usize,
    pub micro_batch: usize,
    pub device: Device,
    pub threads: usize,
    pub latency_runs: usize,
    pub latency_batch: usize,
    /// What --max-drop compares.
    pub drop_metric: crate::validate::gate::DropMetric,
    pub plan_in: Option<Plan>,
    /// Hutchinson probes (hap) and calibration samples for the Hessian-based criteria.
    pub probes: usize,
    pub hap_curvature: super::second_order::HapCurvature,
    pub hessian_samples: usize,
    pub sosp: super::second_order::SospOptions,
    /// Accuracy budget: back off (restore groups) until the drop is within it.
    pub max_drop: Option<f64>,
    /// Back-off steps at most (groups are restored in this many batches).
    pub backoff_steps: usize,
    /// Neural implants: this share of the removed units (the most sensitive ones) is recomputed
    /// by fitted 1×1 convs instead (None: no implants).
    pub implant_ratio: Option<f64>,
    /// Rank of linear implants as a fraction of their units (None: `implant::linear_rank`).
    pub implant_rank: Option<f64>,
    /// Training-free compensation (consumer refit, BatchNorm re-estimation).
    pub compensation: super::compensate::CompensateOptions,
    /// The command line, for the output's metadata.
    pub command: String,
}

impl Default for StructuredOptions {
    fn default() -> Self {
        StructuredOptions {
            ratio: 0.5,
            target: Target::Prunable,
            criterion: Criterion::Hap,
            max_layer_ratio: 0.9,
            round_to: 8,
            cost: None,
            prune_hidden: false,
            seed: 0,
            calib_samples: 256,
            micro_batch: 32,
            device: Device::Cpu,
            threads: 0,
            latency_runs: 20,
            latency_batch: 32,
            drop_metric: Default::default(),
            plan_in: None,
            probes: 8,
            hessian_samples: 256,
            hap_curvature: super::second_order::HapCurvature::GaussNewton,
            sosp: Default::default(),
            implant_ratio: Some(0.1),
            implant_rank: None,
            max_drop: None,
            backoff_steps: 6,
            compensation: Default::default(),
            command: String::new(),
        }
    }
}

/// Calibration and held-out data.
#[derive(Debug, Clone)]
pub struct Data {
    pub calib: Feeds<f32>,
    pub calib_labels: Option<Vec<i64>>,
    pub eval: Feeds<f32>,
    pub eval_labels: Option<Vec<i64>>,
    /// Where the data came from, for the report ("synthetic" when made up).
    pub source: String,
    pub synthetic: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupRow {
    pub id: usize,
    pub name: String,
    pub kind: GroupKind,
    pub units: usize,
    pub kept: usize,
    pub frozen: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackoffStep {
    /// Groups restored, with the drop their removal alone caused.
    pub restored: Vec<(String, f64)>,
    pub drop: f64,
    pub units_removed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub params: usize,
    pub flops: Option<u64>,
    pub file_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub mode: String,
    pub criterion: String,
    /// The loss the criterion differentiated (taylor).
    pub objective: Option<String>,
    pub target: Target,
    /// What the ranking weighed a loss-estimating criterion's scores against (`--cost`; None
    /// for magnitude, which is compared within groups).
    pub cost: Option<RankCost>,
    pub requested: f64,
    /// Removed over the target's denominator.
    pub achieved: f64,
    pub shortfall: Option<String>,
    pub prunable_params: usize,
    pub before: Sizes,
    pub after: Sizes,
    pub params_removed: f64,
    pub flops_removed: Option<f64>,
    pub units_removed: usize,
    pub units_prunable: usize,
    pub groups: Vec<GroupRow>,
    /// Why units stayed, with counts.
    pub frozen: BTreeMap<String, usize>,
    pub calibration: String,
    pub calibration_samples: usize,
    pub validation: Validation,
    pub compensation: super::compensate::CompensationReport,
    /// --max-drop back-off: the groups restored at each step and the drop after it.
    pub backoff: Vec<BackoffStep>,
    /// Why no model should be written (the back-off ran out), when so.
    pub refused: Option<String>,
    pub exact: bool,
    pub warnings: Vec<String>,
    /// `--target latency`: each candidate timed in the search.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_search: Vec<super::latency::LatencyStep>,
    /// Set when the interpreter cannot run the whole graph (see `PartialSupport`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialSupport>,
    pub seconds: BTreeMap<String, f64>,
    /// Peak resident memory of the process when the report was made, bytes.
    pub peak_rss_bytes: Option<u64>,
}

pub struct Outcome {
    pub model: ModelProto,
    pub bytes: Vec<u8>,
    pub report: Report,
    pub plan: Plan,
    pub analysis: Analysis,
}

/// Stage progress: (stage, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

fn float_params(m: &Model) -> usize {
    m.graph
        .weights
        .values()
        .filter(|w| w.tensor.dtype.is_float())
        .map(|w| w.tensor.len())
        .sum()
}

/// FLOPs per sample at the shapes of one held-out sample.
/// What a run on a graph with nodes the interpreter cannot run (partial support) changes.
#[derive(Debug, Clone, Serialize)]
pub struct PartialSupport {
    /// The ops the interpreter does not run, with counts and reasons.
    pub unsupported: String,
    /// The stages switched off because they need the interpreter.
    pub disabled: Vec<String>,
    #[serde(skip)]
    options: StructuredOptions,
}

/// With nodes the interpreter cannot run, only what needs no interpreter is done: magnitude
/// scores, onnxruntime for shapes and validation; structures touching those nodes are frozen by
/// the analysis. `None` when the interpreter runs the whole graph.
fn partial_support(
    g: &Graph,
    o: &StructuredOptions,
    warnings: &mut Vec<String>,
) -> Option<PartialSupport> {
    let Err(e) = g.check_supported() else {
        return None;
    };
    let unsupported = match e {
        Error::Unsupported(s) => s,
        other => other.to_string(),
    };
    let mut options = o.clone();
    let mut disabled = Vec::new();
    let mut short = Vec::new();
    if o.criterion != Criterion::Magnitude {
        disabled.push(format!(
            "criterion {}: needs gradients through the whole graph; magnitude used",
            o.criterion
        ));
        short.push(format!("{} scores (magnitude used)", o.criterion));
        options.criterion = Criterion::Magnitude;
    }
    if options.implant_ratio.is_some_and(|r| r > 0.0) && o.plan_in.is_none() {
        disabled.push("implants: fitted on activations the interpreter computes".into());
        short.push("implants".into());
        options.implant_ratio = None;
    }
    if o.compensation.refit || o.compensation.bn_recalibrate {
        disabled.push(
            "compensation (consumer refit, BatchNorm re-estimation): needs the interpreter's activations"
                .into(),
        );
        short.push("compensation".into());
        options.compensation.refit = false;
        options.compensation.bn_recalibrate = false;
    }
    warnings.push(format!(
        "partial support: the interpreter does not run {unsupported}; structures that reach those nodes are frozen, the rest is pruned{}; shapes and validation come from onnxruntime alone",
        if short.is_empty() {
            String::new()
        } else {
            format!(" without {}", short.join(", "))
        }
    ));
    Some(PartialSupport {
        unsupported,
        disabled,
        options,
    })
}

fn flops_at(m: &Model, sample: &Feeds<f32>) -> Option<u64> {
    let shapes: HashMap<String, Vec<usize>> = sample
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    crate::inspect::summarize_with_runtime(m, &shapes).flops
}

pub fn run(
    model: &Model,
    data: &Data,
    o: &StructuredOptions,
    progress: Progress,
) -> Result<Outcome> {
    if !(0.0..1.0).contains(&o.ratio) {
        return Err(Error::Usage(format!(
            "--structured {} must be in [0, 1)",
            o.ratio
        )));
    }
    if !(0.0..=1.0).contains(&o.max_layer_ratio) {
        return Err(Error::Usage(format!(
            "--max-layer-ratio {} must be in [0, 1]",
            o.max_layer_ratio
        )));
    }
    let g = &model.graph;
    g.check_finite()?;
    let mut seconds = BTreeMap::new();
    let mut warnings = Vec::new();
    let partial = partial_support(g, o, &mut warnings);
    let o = &partial
        .as_ref()
        .map_or_else(|| o.clone(), |p| p.options.clone());
    if data.synthetic {
        warnings.push("no --calib: scores and validation use synthetic inputs; give real data for a result you can trust".into());
    }
    let t0 = std::time::Instant::now();
    progress("analysis", 0, 1);
    let probe = Probe::of_model(model, crate::calib::head(&data.calib, 2)?)?;
    let a = analysis::analyze(
        g,
        &probe,
        analysis::Options {
            prune_hidden: o.prune_hidden,
        },
    );
    progress("analysis", 1, 1);
    seconds.insert("analysis".into(), t0.elapsed().as_secs_f64());

    let t1 = std::time::Instant::now();
    let calib = crate::calib::head(&data.calib, o.calib_samples)?;
    let calib_n = crate::autodiff::curvature::batch_size(&calib)?;
    let calib_labels = data
        .calib_labels
        .as_ref()
        .map(|l| l[..calib_n.min(l.len())].to_vec());
    let (scores, objective) = match o.criterion {
        Criterion::Magnitude => (criteria::magnitude(g, &a), None),
        Criterion::Taylor => {
            let (obj, name) =
                criteria::taylor_objective(g, &calib, calib_labels.as_deref(), o.seed)?;
            let s = criteria::taylor(g, &a, &calib, &obj, o.micro_batch, &mut |d, t| {
                progress("scoring", d, t)
            })?;
            (s, Some(name))
        }
        Criterion::Fisher => {
            let s = super::second_order::fisher(
                g,
                &a,
                &calib,
                o.seed,
                o.micro_batch.min(8),
                &mut |d, t| progress("scoring", d, t),
            )?;
            (
                s,
                Some(
                    "Fisher of the model's predictive distribution (labels sampled from it)"
                        .to_string(),
                ),
            )
        }
        Criterion::Hap | Criterion::SospH => {
            let hcal = crate::calib::head(&calib, o.hessian_samples.max(1))?;
            let hn = crate::autodiff::curvature::batch_size(&hcal)?;
            let hl = calib_labels.as_ref().map(|l| l[..hn.min(l.len())].to_vec());
            let (obj, name) = super::second_order::objective(g, &hcal, hl.as_deref())?;
            let s = if o.criterion == Criterion::Hap {
                super::second_order::hap(
                    g,
                    &a,
                    &hcal,
                    &obj,
                    o.hap_curvature,
                    o.probes,
                    o.seed,
                    o.micro_batch.min(16),
                    &mut |d, t| progress("hessian", d, t),
                )?
            } else {
                progress("hessian", 0, 1);
                let s =
                    super::second_order::sosp_h(g, &a, &hcal, &obj, o.micro_batch.min(16), o.sosp)?;
                progress("hessian", 1, 1);
                s
            };
            (s, Some(format!("{name}, {hn} samples")))
        }
    };
    // Magnitudes differ in scale between layers: normalised per group. Taylor scores are loss
    // estimates, comparable across layers: ranked per parameter removed.
    let rank: Vec<Vec<f64>> = match o.criterion {
        Criterion::Magnitude => criteria::normalize(&scores),
        _ => scores
            .iter()
            .zip(&a.groups)
            .map(|(s, grp)| {
                s.iter()
                    .zip(&grp.units)
                    .map(|(v, u)| v / u.params.max(1) as f64)
                    .collect()
            })
            .collect(),
    };
    seconds.insert("scoring".into(), t1.elapsed().as_secs_f64());

    let sample = crate::calib::head(&data.eval, 1)?;
    let before = Sizes {
        params: float_params(model),
        flops: flops_at(model, &sample),
        file_bytes: model.source.file_len,
    };
    // Loss per parameter → loss per unit of the cost. Magnitudes are not loss estimates (they
    // are compared within their group): weighing them by a cost ranks by the cost alone, which
    // emptied whole blocks of the MobileNet fixture (97.6 → 36.2 % at --target flops).
    let cost = o.cost.unwrap_or(RankCost::of(o.target));
    let rank: Vec<Vec<f64>> = if o.criterion == Criterion::Magnitude {
        rank
    } else {
        rank.into_iter()
            .zip(&a.groups)
            .map(|(r, grp)| {
                r.into_iter()
                    .zip(&grp.units)
                    .map(|(v, u)| v * cost_factor(cost, u.params as f64, u.flops as f64))
                    .collect()
            })
            .collect()
    };
    let prunable = prunable_params(g, &a);
    let alloc_opts = AllocOptions {
        ratio: o.ratio,
        target: o.target,
        max_layer_ratio: o.max_layer_ratio,
        round_to: o.round_to,
    };
    if matches!(o.target, Target::Flops | Target::Latency)
        && before.flops.is_none()
        && o.plan_in.is_none()
    {
        let t = if o.target == Target::Flops {
            "flops"
        } else {
            "latency"
        };
        return Err(Error::Usage(format!(
            "--target {t} needs FLOPs of the model, which could not be counted at the held-out input shapes"
        )));
    }
    let vopts = ValidateOptions {
        device: o.device,
        threads: o.threads,
        latency_runs: o.latency_runs,
        latency_batch: o.latency_batch,
        drop_metric: o.drop_metric,
        score_output: model.graph.scored_output_name(),
    };
    let denominators = (
        prunable as f64,
        before.params as f64,
        before.flops.unwrap_or(0) as f64,
    );
    let mut planned_implants = None;
    let mut latency_search = Vec::new();
    let (removed, shortfall) = match &o.plan_in {
        Some(p) => {
            let (r, i) = p.removal(g, &a)?;
            planned_implants = Some(i);
            (r, None)
        }
        None if o.target == Target::Latency => {
            let t = std::time::Instant::now();
            let s = super::latency::search(
                model,
                &a,
                &probe,
                &rank,
                denominators,
                &alloc_opts,
                &data.eval,
                &vopts,
                &mut |d, t| progress("latency search", d, t),
            )?;
            seconds.insert("latency search".into(), t.elapsed().as_secs_f64());
            latency_search = s.steps;
            (s.removed, s.shortfall)
        }
        None => {
            let al = allocate(g, &a, &rank, denominators, &alloc_opts);
            (al.removed, al.shortfall)
        }
    };
    let implant_ratio = if o.target == Target::Latency && o.plan_in.is_none() {
        if o.implant_ratio.is_some_and(|r| r > 0.0) {
            warnings.push("--target latency: no implants (each adds a conv and a Concat the search did not time)".into());
        }
        None
    } else {
        o.implant_ratio
    };
    // Implants: the band just above the threshold is recomputed by 1×1 convs, not removed.
    let mut removed = removed;
    let implants = match (planned_implants, implant_ratio) {
        (Some(p), _) => p,
        (None, Some(r)) if r > 0.0 => {
            super::implant::choose(g, &a, &removed, &rank, r, o.round_to, o.implant_rank)
        }
        _ => Vec::new(),
    };
    for imp in &implants {
        for &u in &imp.units {
            removed[imp.group][u] = false;
        }
    }
    let compensating = o.compensation.refit || o.compensation.bn_recalibrate;
    if !implants.is_empty() && !compensating {
        return Err(Error::Usage("implants are fitted by the compensation pass: drop --no-compensation or give --no-implant".into()));
    }
    let dense_bytes = model.source.proto.encode_to_vec();
    let ctx = AttemptCtx {
        model,
        a: &a,
        probe: &probe,
        calib: &calib,
        data,
        o,
        sample: &sample,
        dense_bytes: &dense_bytes,
        vopts: &vopts,
        partial: partial.is_some(),
    };
    let mut att = attempt(&ctx, removed, implants, &mut seconds, progress)?;
    // Back-off: restore the groups whose removal alone hurts most (measured on the held-out
    // data, zeroed consumers, no compensation), a few per step, until within --max-drop.
    let mut backoff = Vec::new();
    let mut refused = None;
    if let Some(x) = o.max_drop
        && att.validation.drop > x
    {
        let t4 = std::time::Instant::now();
        let dense_out = crate::runtime::OrtSession::new(
            &dense_bytes,
            model.source.path.parent(),
            o.device,
            o.threads,
        )?
        .run(&data.eval)?;
        let fi = crate::validate::gate::scored_index(&dense_out, vopts.score_output.as_deref())?;
        let dense_out = dense_out
            .into_iter()
            .nth(fi)
            .map(|(_, t)| t)
            .filter(|t| t.as_float().is_some())
            .ok_or_else(|| Error::Runtime("the model has no float output to gate on".into()))?;
        let mut harm: Vec<(f64, usize)> = Vec::new();
        let pruned_groups: Vec<usize> = (0..a.groups.len())
            .filter(|&gi| att.edit.removed[gi].iter().any(|&r| r))
            .collect();
        for (k, &gi) in pruned_groups.iter().enumerate() {
            progress("back-off", k, pruned_groups.len());
            let mut only = Edit::none(&a);
            only.removed[gi] = att.edit.removed[gi].clone();
            let zb = rewrite::zero_consumers(model, &a, &only)?.encode_to_vec();
            let d = crate::validate::gate::quick_drop(
                &zb,
                model.source.path.parent(),
                &dense_out,
                &data.eval,
                data.eval_labels.as_deref(),
                &vopts,
            )?;
            harm.push((d, gi));
        }
        harm.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let per_step = harm.len().div_ceil(o.backoff_steps.max(1)).max(1);
        let mut queue = harm.into_iter();
        loop {
            let batch: Vec<(f64, usize)> = queue.by_ref().take(per_step).collect();
            if batch.is_empty() {
                break;
            }
            let mut removed = att.edit.removed.clone();
            let mut implants = att.edit.implants.clone();
            for &(_, gi) in &batch {
                removed[gi].iter_mut().for_each(|r| *r = false);
                implants.retain(|i| i.group != gi);
            }
            if removed.iter().flatten().all(|r| !r) {
                refused = Some(format!(
                    "even the smallest pruning left misses --max-drop {x} ({} {:.4} with only {} pruned)",
                    att.validation.drop_metric,
                    att.validation.drop,
                    batch
                        .iter()
                        .map(|(_, gi)| a.group_name(g, *gi))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                break;
            }
            att = attempt(&ctx, removed, implants, &mut seconds, progress)?;
            backoff.push(BackoffStep {
                restored: batch
                    .iter()
                    .map(|&(h, gi)| (a.group_name(g, gi), h))
                    .collect(),
                drop: att.validation.drop,
                units_removed: att.edit.removed.iter().flatten().filter(|r| **r).count(),
            });
            if att.validation.drop <= x {
                break;
            }
        }
        seconds.insert("back-off".into(), t4.elapsed().as_secs_f64());
    }
    let Attempt {
        edit,
        compensation,
        pruned,
        bytes,
        reread,
        validation,
    } = att;
    let after = Sizes {
        params: float_params(&reread),
        flops: flops_at(&reread, &sample),
        file_bytes: bytes.len(),
    };
    let groups: Vec<GroupRow> = a
        .groups
        .iter()
        .enumerate()
        .map(|(gi, grp)| GroupRow {
            id: gi,
            name: a.group_name(g, gi),
            kind: grp.kind,
            units: grp.units.len(),
            kept: edit.removed[gi].iter().filter(|r| !**r).count(),
            frozen: grp.units.len() - grp.prunable(),
        })
        .collect();
    let units_removed = edit.removed.iter().flatten().filter(|r| **r).count();
    // Exact: the pruned model computes what the zeroed-consumer original computes.
    let exact = a.approximate.iter().all(|&u| !edit.is_removed(u))
        && edit.replace.iter().all(|(id, t)| {
            let orig = g.weights[id].tensor.as_float().expect("float");
            let new = t.as_float().expect("float");
            orig.iter()
                .zip(new.iter())
                .all(|(a, b)| a == b || *b == 0.0)
        });
    let denom = match o.target {
        Target::Prunable => prunable as f64,
        Target::Params => before.params as f64,
        Target::Flops | Target::Latency => before.flops.unwrap_or(1) as f64,
    }
    .max(1.0);
    let params_removed = before.params as f64 - after.params as f64;
    let flops_removed = before
        .flops
        .zip(after.flops)
        .map(|(b, a)| b as f64 - a as f64);
    let achieved = match (o.target, &validation.latency) {
        (Target::Latency, Some(l)) => 1.0 - l.ratio,
        (Target::Flops | Target::Latency, _) => flops_removed.unwrap_or(0.0) / denom,
        _ => params_removed / denom,
    };
    if let Some(l) = &validation.latency
        && l.ratio > 0.95
    {
        warnings.push(format!(
            "onnxruntime latency is {:.2}× the dense model's ({:.3} → {:.3} ms at batch {}): the removed structures were not where the time goes (--target flops aims at FLOPs; conv channel counts that are multiples of the CPU's vector block, e.g. --round-to 16 on AVX-512, avoid padding)",
            l.ratio,
            l.dense_ms,
            l.pruned_ms,
            l.batch
        ));
    }
    let plan = Plan::new(
        g,
        &a,
        &model.source.path.display().to_string(),
        &o.criterion.to_string(),
        &scores,
        &edit.removed,
        &edit.implants,
    );
    let report = Report {
        tool: format!("onnx-prune {}", env!("CARGO_PKG_VERSION")),
        mode: "structured".into(),
        criterion: o.criterion.to_string(),
        cost: (o.criterion != Criterion::Magnitude)
            .then(|| o.cost.unwrap_or(RankCost::of(o.target))),
        objective,
        target: o.target,
        requested: o.ratio,
        achieved,
        shortfall,
        prunable_params: prunable,
        before,
        after,
        params_removed,
        flops_removed,
        units_removed,
        units_prunable: a.prunable_units(),
        groups,
        frozen: a.frozen_reasons(),
        calibration: data.source.clone(),
        calibration_samples: calib_n,
        validation,
        compensation,
        backoff,
        refused,
        exact,
        warnings,
        partial,
        latency_search,
        seconds,
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
    };
    Ok(Outcome {
        model: pruned,
        bytes,
        report,
        plan,
        analysis: a,
    })
}

struct AttemptCtx<'c> {
    model: &'c Model,
    a: &'c Analysis,
    probe: &'c Probe,
    calib: &'c Feeds<f32>,
    data: &'c Data,
    o: &'c StructuredOptions,
    sample: &'c Feeds<f32>,
    dense_bytes: &'c [u8],
    vopts: &'c ValidateOptions,
    /// Shapes are checked in onnxruntime (the interpreter cannot run the graph).
    partial: bool,
}

struct Attempt {
    edit: Edit,
    compensation: super::compensate::CompensationReport,
    pruned: ModelProto,
    bytes: Vec<u8>,
    reread: Model,
    validation: Validation,
}

/// One removal → compensation → rewrite → re-read check → validation.
fn attempt(
    c: &AttemptCtx,
    removed: Vec<Vec<bool>>,
    implants: Vec<super::implant::Implant>,
    seconds: &mut BTreeMap<String, f64>,
    progress: Progress,
) -> Result<Attempt> {
    let (model, a, o) = (c.model, c.a, c.o);
    let g = &model.graph;
    let t2 = std::time::Instant::now();
    let mut edit = Edit {
        removed,
        replace: HashMap::new(),
        implants,
    };
    let mut compensation = super::compensate::CompensationReport::default();
    if o.compensation.refit || o.compensation.bn_recalibrate {
        let copts = super::compensate::CompensateOptions {
            micro_batch: o.micro_batch,
            ..o.compensation
        };
        let (w, rep) = super::compensate::compensate(g, a, &edit, c.calib, &copts, &mut |d, t| {
            progress("compensation", d, t)
        })?;
        edit.replace = w;
        compensation = rep;
        *seconds.entry("compensation".into()).or_insert(0.0) += t2.elapsed().as_secs_f64();
    }
    let t2 = std::time::Instant::now();
    let mut pruned = rewrite::apply(model, a, c.probe, &edit)?;
    add_metadata(&mut pruned, o, &edit, a);
    let bytes = pruned.encode_to_vec();
    // The emitted model must be readable by our own IR and keep every output shape.
    let reread = Model::from_loaded(crate::onnx::decode_model(
        bytes::Bytes::from(bytes.clone()),
        &model.source.path,
    )?)
    .map_err(|e| Error::Runtime(format!("the rewritten model is invalid: {e}")))?;
    let shapes = |ys: Vec<crate::tensor::Tensor<f32>>| -> Vec<Vec<usize>> {
        ys.iter().map(|t| t.shape().to_vec()).collect()
    };
    let (ys, yd) = if c.partial {
        let ort = |b: &[u8]| -> Result<Vec<Vec<usize>>> {
            let out = crate::runtime::OrtSession::new(
                b,
                model.source.path.parent(),
                Device::Cpu,
                o.threads,
            )?
            .run(c.sample)?;
            Ok(shapes(out.into_iter().map(|(_, t)| t).collect()))
        };
        (ort(&bytes)?, ort(c.dense_bytes)?)
    } else {
        (
            shapes(crate::interp::Engine::<f32>::new(&reread.graph)?.run(c.sample.clone())?),
            shapes(crate::interp::Engine::<f32>::new(g)?.run(c.sample.clone())?),
        )
    };
    for ((a_, b_), &o_) in ys.iter().zip(&yd).zip(&g.outputs) {
        if a_ != b_ {
            return Err(Error::Runtime(format!(
                "internal error: output {:?} changed shape {:?} → {:?} in the rewrite",
                g.name(o_),
                b_,
                a_
            )));
        }
    }
    *seconds.entry("rewrite".into()).or_insert(0.0) += t2.elapsed().as_secs_f64();
    let t3 = std::time::Instant::now();
    progress("validation", 0, 1);
    let validation = validate(
        c.dense_bytes,
        &bytes,
        model.source.path.parent(),
        &c.data.eval,
        c.data.eval_labels.as_deref(),
        c.vopts,
    )?;
    progress("validation", 1, 1);
    *seconds.entry("validation".into()).or_insert(0.0) += t3.elapsed().as_secs_f64();
    Ok(Attempt {
        edit,
        compensation,
        pruned,
        bytes,
        reread,
        validation,
    })
}

fn add_metadata(m: &mut ModelProto, o: &StructuredOptions, edit: &Edit, a: &Analysis) {
    let removed = edit.removed.iter().flatten().filter(|r| **r).count();
    let v = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "command": o.command,
        "mode": "structured",
        "criterion": o.criterion.to_string(),
        "target": o.target,
        "ratio": o.ratio,
        "units_removed": removed,
        "units_prunable": a.prunable_units(),
    });
    stamp(m, &v);
}

/// Records what onnx-prune did in the model's `onnx-prune` metadata entry (replacing any).
pub(crate) fn stamp(m: &mut ModelProto, v: &serde_json::Value) {
    m.metadata_props.retain(|e| e.key() != "onnx-prune");
    m.metadata_props.push(StringStringEntryProto {
        key: Some("onnx-prune".into()),
        value: Some(v.to_string()),
    });
}

impl Report {
    pub fn render(&self, output: &str) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        let _ = writeln!(
            o,
            "{} → {output}   ({}, criterion {}{}{})",
            self.calibration,
            self.mode,
            self.criterion,
            self.objective
                .as_ref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default(),
            match self.cost {
                Some(RankCost::Params) => ", ranked per parameter",
                Some(RankCost::Flops) => ", ranked per FLOP",
                None => "",
            }
        );
        let tname = match self.target {
            Target::Prunable => "prunable-layer params",
            Target::Params => "model params",
            Target::Flops => "model FLOPs",
            Target::Latency => "onnxruntime latency",
        };
        let _ = writeln!(
            o,
            "target    {} of {tname}; achieved {}{}",
            pct(self.requested),
            pct(self.achieved),
            self.shortfall
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        );
        if !self.latency_search.is_empty() {
            let steps: Vec<String> = self
                .latency_search
                .iter()
                .map(|s| format!("{} → {:.2}×", pct(s.flops_target), s.ratio))
                .collect();
            let _ = writeln!(o, "search    FLOPs target → latency: {}", steps.join(", "));
        }
        let _ = writeln!(
            o,
            "params    {} → {} (−{})",
            self.before.params,
            self.after.params,
            pct(self.params_removed / self.before.params.max(1) as f64)
        );
        if let (Some(b), Some(a)) = (self.before.flops, self.after.flops) {
            let _ = writeln!(
                o,
                "FLOPs     {:.3} M → {:.3} M (−{}) per sample",
                b as f64 / 1e6,
                a as f64 / 1e6,
                pct(1.0 - a as f64 / b.max(1) as f64)
            );
        }
        let _ = writeln!(
            o,
            "file      {} → {} bytes",
            self.before.file_bytes, self.after.file_bytes
        );
        let v = &self.validation;
        let _ = writeln!(
            o,
            "validated on {} held-out samples in onnxruntime ({}):",
            v.samples, v.device
        );
        for out in &v.outputs {
            let t1 = out
                .top1_agreement
                .map(|t| format!("   top-1 agreement {}", pct(t)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  {:<24} cosine {:.6}   max |Δ| {:.3e}   rel {:.3e}{t1}",
                out.name, out.cosine, out.max_abs, out.rel
            );
        }
        if let Some(kl) = v.kl {
            let _ = writeln!(o, "  KL(original ‖ pruned) {kl:.4e}");
        }
        if let (Some(a), Some(b)) = (v.accuracy_dense, v.accuracy_pruned) {
            let _ = writeln!(
                o,
                "  accuracy {} → {} ({:+.2} points)",
                pct(a),
                pct(b),
                100.0 * (b - a)
            );
        }
        if let Some(l) = &v.latency {
            let _ = writeln!(
                o,
                "  latency  {:.3} ms → {:.3} ms ({:.2}×) at batch {}, median of {} runs",
                l.dense_ms, l.pruned_ms, l.ratio, l.batch, l.runs
            );
        }
        let c = &self.compensation;
        if !c.refits.is_empty() || c.batchnorms_recalibrated > 0 {
            let k = c.refits.len().max(1) as f64;
            let before: f64 = c.refits.iter().map(|r| r.error_before).sum::<f64>() / k;
            let after: f64 = c.refits.iter().map(|r| r.error_after).sum::<f64>() / k;
            let retries: usize = c.refits.iter().map(|r| r.retries).sum();
            let dead: usize = c.refits.iter().map(|r| r.dead_inputs).sum();
            let skipped: Vec<&super::compensate::RefitRow> =
                c.refits.iter().filter(|r| r.skipped.is_some()).collect();
            let _ = writeln!(
                o,
                "compensation  {} layers refit (mean relative output error {:.3} → {:.3}), {} BatchNorms re-estimated{}{}",
                c.refits.len() - skipped.len(),
                before,
                after,
                c.batchnorms_recalibrated,
                if retries > 0 {
                    format!(", {retries} damping retries")
                } else {
                    String::new()
                },
                if dead > 0 {
                    format!(", {dead} dead inputs dropped")
                } else {
                    String::new()
                },
            );
            for r in skipped {
                let _ = writeln!(
                    o,
                    "  not refit {}: {}",
                    r.layer,
                    r.skipped.as_deref().unwrap_or_default()
                );
            }
            if !c.snows.is_empty() {
                let kept: Vec<&super::compensate::SnowsRefitRow> =
                    c.snows.iter().filter(|s| s.kept).collect();
                let gain = |f: fn(&super::compensate::SnowsRefitRow) -> (f64, f64)| {
                    let (b, a) = kept
                        .iter()
                        .map(|s| f(s))
                        .fold((0.0, 0.0), |(x, y), (b, a)| (x + b, y + a));
                    if b > 0.0 { 1.0 - a / b } else { 0.0 }
                };
                let _ = writeln!(
                    o,
                    "  snows    {} of {} layers improved on held-out samples (horizon loss −{:.1} % held-out, −{:.1} % fit; {} CG iterations)",
                    kept.len(),
                    c.snows.len(),
                    100.0 * gain(|s| (s.heldout_before, s.heldout_after)),
                    100.0 * gain(|s| (s.loss_before, s.loss_after)),
                    c.snows.iter().map(|s| s.cg_iterations).sum::<usize>()
                );
            }
        }
        if !c.implants.is_empty() {
            let ch: usize = c.implants.iter().map(|i| i.channels).sum();
            let p: usize = c.implants.iter().map(|i| i.params).sum();
            let pr: usize = c.implants.iter().map(|i| i.params_replaced).sum();
            let err = c.implants.iter().map(|i| i.error).sum::<f64>() / c.implants.len() as f64;
            let mut kinds: Vec<String> = c.implants.iter().map(|i| i.kind.clone()).collect();
            kinds.sort();
            kinds.dedup();
            let _ = writeln!(
                o,
                "implants  {ch} units in {} layers recomputed by cheaper layers ({}: {p} params for the {pr} of the rows they replace; mean relative error {err:.3})",
                c.implants.len(),
                kinds.join(", ")
            );
        }
        let _ = writeln!(
            o,
            "units     {} of {} prunable removed{}",
            self.units_removed,
            self.units_prunable,
            if self.exact {
                ""
            } else {
                " (weights refit: not the original with units zeroed)"
            }
        );
        let _ = writeln!(
            o,
            "{:>4}  {:<10} {:>7} {:>7} {:>7}  group",
            "id", "kind", "units", "kept", "frozen"
        );
        for grp in &self.groups {
            let kind = serde_json::to_value(grp.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "{:>4}  {:<10} {:>7} {:>7} {:>7}  {}",
                grp.id, kind, grp.units, grp.kept, grp.frozen, grp.name
            );
        }
        for (k, step) in self.backoff.iter().enumerate() {
            let names: Vec<String> = step
                .restored
                .iter()
                .map(|(n, h)| format!("{n} ({h:.3})"))
                .collect();
            let _ = writeln!(
                o,
                "back-off {}: restored {} → drop {:.4}, {} units removed",
                k + 1,
                names.join(", "),
                step.drop,
                step.units_removed
            );
        }
        if let Some(r) = &self.refused {
            let _ = writeln!(o, "refused: {r}");
        }
        if !self.frozen.is_empty() {
            let _ = writeln!(o, "not pruned:");
            for (r, k) in &self.frozen {
                let _ = writeln!(o, "  {k:>6} units: {r}");
            }
        }
        for w in &self.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
        o
    }
}
