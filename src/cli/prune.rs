//! `onnx-prune IN.onnx OUT.onnx --structured R …`: the main job.

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use onnx_prune::calib::{self, ImageOptions, Layout};
use onnx_prune::interp::Feeds;
use onnx_prune::ir::Model;
use onnx_prune::prune::{self, Criterion, Plan, RankCost, StructuredOptions, Target};
use onnx_prune::runtime::Device;
use onnx_prune::sparse::mask::{Allocation, Pattern};
use onnx_prune::sparse::saliency::MaskKind;
use onnx_prune::sparse::snows::Curv;
use onnx_prune::sparse::{Method, UnstructuredOptions};
use onnx_prune::validate::gate::DropMetric;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How structured compensation refits a consumer layer.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RefitKind {
    /// Closed-form least squares on the layer's own output.
    Ls,
    /// Least squares, then SNOWS: Newton-CG on the outputs --horizon operations ahead.
    Snows,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LayoutArg {
    Nchw,
    Nhwc,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// The model to compress.
    pub input: Option<PathBuf>,
    /// Where to write the compressed model (atomically; never over the input).
    pub output: Option<PathBuf>,
    /// Structured pruning: remove this fraction of the target (see --target), in [0, 1).
    #[arg(long, value_name = "R")]
    pub structured: Option<f64>,
    /// Importance of each channel, head or unit.
    #[arg(long, value_enum, default_value_t = Criterion::Hap)]
    pub criterion: Criterion,
    /// Probes for --criterion hap (HAP's own default is 3 HVP probes; the Gauss-Newton sketch's
    /// probes cost one backward pass each, and 8 steadied the rankings on the CNN fixtures).
    #[arg(long, default_value_t = 8)]
    pub probes: usize,
    /// The curvature of hap's unit traces: gauss-newton (nonnegative sketch, one backward per
    /// probe; the Hessian itself for the default KL loss) or exact (HAP's z·Hz, one HVP per probe).
    #[arg(long, value_enum, default_value_t = onnx_prune::prune::second_order::HapCurvature::GaussNewton)]
    pub hap_curvature: onnx_prune::prune::second_order::HapCurvature,
    /// Calibration samples for the Hessian-vector products of hap and sosp-h.
    #[arg(long, default_value_t = 256)]
    pub hessian_samples: usize,
    /// sosp-h: drop the first-order term −θᵀg.
    #[arg(long)]
    pub sosp_no_first_order: bool,
    /// sosp-h: |first| + |second| instead of |first + second|.
    #[arg(long)]
    pub sosp_abs_terms: bool,
    /// Neural implants (default with --criterion hap): the most sensitive share of the
    /// removed units (--implant-ratio) is recomputed by fitted cheaper layers instead (1×1 convs
    /// for k×k convs, rank-r factors for linear layers).
    #[arg(long, conflicts_with = "no_implant")]
    pub implant: bool,
    #[arg(long)]
    pub no_implant: bool,
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    pub implant_ratio: f64,
    /// Rank of linear-layer implants, as a fraction of the implanted units (default: an eighth
    /// of their parameters, r = max(1, ⌊|S|·k / (8(|S|+k))⌋)).
    #[arg(long, value_name = "F")]
    pub implant_rank: Option<f64>,
    /// What --structured is a fraction of.
    #[arg(long, value_enum, default_value_t = Target::Prunable)]
    pub target: Target,
    /// Remove at most this fraction of any one group (layer collapse guard).
    #[arg(long, default_value_t = 0.9, value_name = "F")]
    pub max_layer_ratio: f64,
    /// Kept channel/feature counts of pruned groups are multiples of N (onnxruntime's CPU
    /// kernels work in blocks of 8 or 16 channels: other counts can be slower than the dense
    /// model); 1 turns rounding off. Heads and conv groups are not rounded.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub round_to: usize,
    /// What the global ranking weighs each structure's estimated loss against: the parameters
    /// it removes or its FLOPs (default: what --target counts; flops for --target latency).
    /// Not used by --criterion magnitude, whose scores are compared within their group.
    #[arg(long, value_enum, value_name = "params|flops")]
    pub cost: Option<RankCost>,
    /// Also prune widths normalised by LayerNormalization (transformer residual streams);
    /// not exact.
    #[arg(long)]
    pub prune_hidden: bool,
    /// Calibration data: .npz keyed by input name, a .npy, a folder of .npz/.npy, or a folder
    /// of images (see --size, --mean, --std, --layout). Without it: synthetic inputs.
    #[arg(long, value_name = "PATH")]
    pub calib: Option<PathBuf>,
    /// Integer labels (.npy) of the calibration samples.
    #[arg(long, value_name = "L.npy")]
    pub labels: Option<PathBuf>,
    /// Held-out data for validation (default: the last fifth of --calib).
    #[arg(long, value_name = "PATH")]
    pub eval: Option<PathBuf>,
    /// Integer labels (.npy) of the --eval samples.
    #[arg(long, value_name = "L.npy")]
    pub eval_labels: Option<PathBuf>,
    /// Calibration samples scored (the first ones).
    #[arg(long, default_value_t = 256)]
    pub calib_samples: usize,
    /// Image size H,W for an image folder (default: the input's declared size).
    #[arg(long, value_delimiter = ',', num_args = 1..=2, value_name = "H,W")]
    pub size: Vec<usize>,
    /// Per-channel mean after scaling pixels to [0, 1], e.g. 0.485,0.456,0.406.
    #[arg(long, value_delimiter = ',', value_name = "M,..")]
    pub mean: Vec<f32>,
    /// Per-channel std after scaling pixels to [0, 1], e.g. 0.229,0.224,0.225.
    #[arg(long, value_delimiter = ',', value_name = "S,..")]
    pub std: Vec<f32>,
    /// Image layout (default: from the input's shape).
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
    /// Concrete shape for a dynamic input when no --calib is given, e.g. x=1,3,224,224.
    #[arg(long = "shape", value_name = "NAME=D1,D2,..")]
    pub shapes: Vec<String>,
    /// Seed of every random choice (synthetic data, probes): same inputs and seed, same file.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Refuse to write (exit 2) when accuracy (with labels), else top-1 agreement with the
    /// original, else 1 − cosine similarity, drops by more than this (a fraction, 0.01 = 1 point).
    #[arg(long, value_name = "X")]
    pub max_drop: Option<f64>,
    /// The model output that the criteria, the objectives and the --max-drop gate score
    /// (default: the first float output), e.g. a sentence embedding after the token ones.
    #[arg(long, value_name = "NAME")]
    pub score_output: Option<String>,
    /// What --max-drop compares: auto (accuracy with labels, else top-1 disagreement for a 2-D
    /// output, else 1 − cosine), top1, or cosine (for embeddings, whose argmax means nothing).
    #[arg(long, value_enum, default_value_t = DropMetric::Auto)]
    pub drop_metric: DropMetric,
    /// With --max-drop: restore pruned groups in at most this many steps (most harmful first)
    /// before giving up.
    #[arg(long, default_value_t = 6)]
    pub backoff_steps: usize,
    /// Write the machine-readable report here.
    #[arg(long, value_name = "OUT.json")]
    pub report: Option<PathBuf>,
    /// Write the exact plan (scores, removed units and tensor indices) here.
    #[arg(long, value_name = "PLAN.json")]
    pub plan_out: Option<PathBuf>,
    /// Re-apply a plan written by --plan-out instead of scoring.
    #[arg(long, value_name = "PLAN.json")]
    pub plan_in: Option<PathBuf>,
    /// Overwrite an existing output.
    #[arg(long)]
    pub force: bool,
    /// Do not refit the consumer layers of removed structures (least squares on calibration
    /// data) nor re-estimate BatchNorm statistics: the pruned model then equals the original
    /// with the removed units' consumers zeroed.
    #[arg(long)]
    pub no_compensation: bool,
    /// Calibration samples used by the compensation (the first ones).
    #[arg(long, default_value_t = 128)]
    pub compensation_samples: usize,
    /// Structured: how consumers are refit; snows adds Newton-CG steps on the dense outputs
    /// --horizon operations ahead (--cg-iters, --newton-steps, --curvature apply).
    #[arg(long, value_enum, default_value_t = RefitKind::Ls, conflicts_with_all = ["unstructured", "nm", "no_compensation"])]
    pub refit: RefitKind,
    /// Refit consumers but leave BatchNorm statistics as they are.
    #[arg(long)]
    pub no_bn_recalibrate: bool,
    /// Execution provider for validation and latency.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Timed onnxruntime runs per model for the latency comparison (0: none).
    #[arg(long, default_value_t = 20)]
    pub latency_runs: usize,

    /// Unstructured pruning: zero this fraction of the selected layers' weights, in [0, 1).
    #[arg(long, value_name = "S", conflicts_with = "structured")]
    pub unstructured: Option<f64>,
    /// Semi-structured sparsity: keep N of every M weights along the input dimension (2:4, 4:8).
    #[arg(long, value_name = "N:M", conflicts_with_all = ["structured", "unstructured"])]
    pub nm: Option<String>,
    /// Unstructured/N:M: which weights to prune.
    #[arg(long, value_enum, default_value_t = MaskKind::Magnitude)]
    pub mask: MaskKind,
    /// Unstructured: take the mask from a pruned model's zeros (same weight names).
    #[arg(long, value_name = "PRUNED.onnx")]
    pub mask_from: Option<PathBuf>,
    /// Unstructured/N:M: how the surviving weights are updated [default: obs; none with
    /// --at-init].
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Unstructured/N:M pruning at initialisation: masks for an untrained model from this
    /// criterion (after a BatchNorm warm-up), written with the masked model as OUT.masks.npz.
    #[arg(long, value_enum, value_name = "CRITERION")]
    pub at_init: Option<onnx_prune::sparse::at_init::InitCriterion>,
    /// --at-init: logit temperature of grasp, hutch-diag, hutch-pruning and hts.
    #[arg(long, default_value_t = 200.0)]
    pub temperature: f64,
    /// --at-init: score with the initial BatchNorm statistics (no re-estimation).
    #[arg(long)]
    pub no_bn_warmup: bool,
    /// --at-init synflow: pruning rounds of the exponential schedule.
    #[arg(long, default_value_t = 100)]
    pub synflow_rounds: usize,
    /// Unstructured/N:M: also write the keep-masks (weight name → bool, the weight's shape) to
    /// this .npz (--at-init: default OUT.masks.npz).
    #[arg(long, value_name = "MASKS.npz")]
    pub masks_out: Option<PathBuf>,
    /// Unstructured: the same sparsity per layer (default), one threshold over all layers, or
    /// per-layer sparsities from each layer's measured effect on the outputs (sensitivity).
    #[arg(long, value_enum)]
    pub allocation: Option<Allocation>,
    /// --allocation sensitivity: calibration samples the outputs are compared on (each layer
    /// runs the whole network on them once per level of its profile).
    #[arg(long, default_value_t = 64)]
    pub sensitivity_samples: usize,
    /// SNOWS: operations ahead whose outputs are reconstructed.
    #[arg(long, default_value_t = 6)]
    pub horizon: usize,
    /// SNOWS: conjugate-gradient iterations per Newton step.
    #[arg(long, default_value_t = 10)]
    pub cg_iters: usize,
    /// SNOWS: Newton steps per layer.
    #[arg(long, default_value_t = 2)]
    pub newton_steps: usize,
    /// SNOWS: exact Hessian-vector products or Gauss-Newton (JᵀJ) products.
    #[arg(long, value_enum, default_value_t = Curv::Exact)]
    pub curvature: Curv,
    /// Layer-wise methods: relative damping of the layer Hessians.
    #[arg(long, default_value_t = 0.01)]
    pub damp: f64,
    /// WoodFisher: per-sample gradients of the empirical Fisher (one calibration sample each).
    #[arg(long, default_value_t = 128)]
    pub fisher_samples: usize,
    /// WoodFisher: weights per block of the block-diagonal Fisher (0: the whole layer; the
    /// inverse goes through the samples' Gram matrix, so a whole layer costs no more).
    #[arg(long, default_value_t = 0)]
    pub fisher_block: usize,
    /// WoodFisher: absolute damping λ of F = λI + (1/m)·Σ ggᵀ (the paper's 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    pub fisher_damp: f64,
    /// WoodFisher: the exact OBS update for all pruned weights of a block at once (joint) or
    /// the paper's sum of single-weight updates (summed).
    #[arg(long, value_enum, default_value_t = onnx_prune::sparse::woodfisher::Update::Joint)]
    pub fisher_update: onnx_prune::sparse::woodfisher::Update,
    /// Unstructured: also prune the first and last weight layers.
    #[arg(long)]
    pub no_skip_first_last: bool,
    /// Unstructured: prune only layers whose node or weight name matches (`*` wildcards).
    #[arg(long, value_delimiter = ',')]
    pub include: Vec<String>,
    /// Unstructured: leave layers whose node or weight name matches (`*` wildcards).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
}

fn progress_bars() -> impl FnMut(&str, usize, usize) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<(String, indicatif::ProgressBar)> = None;
    move |stage: &str, done: usize, total: usize| {
        if !tty {
            return;
        }
        if bar.as_ref().is_none_or(|(s, _)| s != stage) {
            if let Some((_, b)) = bar.take() {
                b.finish_and_clear();
            }
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg:<12} {bar:30} {pos}/{len} [{elapsed}]",
            ) {
                b.set_style(style);
            }
            b.set_message(stage.to_string());
            bar = Some((stage.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            b.set_position(done as u64);
            if done >= total {
                b.finish_and_clear();
            }
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (
        std::fs::canonicalize(a),
        b.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        }),
    ) {
        (Ok(ca), Some(dir)) => std::fs::canonicalize(dir)
            .map(|d| d.join(b.file_name().unwrap_or_default()) == ca)
            .unwrap_or(false),
        _ => false,
    }
}

fn labels_of(p: &Option<PathBuf>, n: usize, what: &str) -> Result<Option<Vec<i64>>> {
    let Some(p) = p else { return Ok(None) };
    let l = calib::load_labels(p)?;
    if l.len() != n {
        bail!("{}: {} labels for {n} {what} samples", p.display(), l.len());
    }
    Ok(Some(l))
}

/// Calibration and held-out data from the arguments.
fn data(m: &Model, a: &PruneArgs) -> Result<prune::Data> {
    let img = ImageOptions {
        size: match a.size.as_slice() {
            [] => None,
            [s] => Some((*s, *s)),
            [h, w, ..] => Some((*h, *w)),
        },
        mean: if a.mean.is_empty() {
            vec![0.0]
        } else {
            a.mean.clone()
        },
        std: if a.std.is_empty() {
            vec![1.0]
        } else {
            a.std.clone()
        },
        layout: a.layout.map(|l| match l {
            LayoutArg::Nchw => Layout::Nchw,
            LayoutArg::Nhwc => Layout::Nhwc,
        }),
    };
    if a.std.contains(&0.0) {
        bail!("--std must not contain 0");
    }
    let g = &m.graph;
    let Some(cp) = &a.calib else {
        if a.labels.is_some() || a.eval.is_some() {
            bail!("--labels and --eval need --calib");
        }
        eprintln!(
            "warning: no --calib given: using synthetic inputs (N(0,1) floats, in-range token ids); the scores and the validation mean little"
        );
        let overrides: HashMap<String, Vec<usize>> = a
            .shapes
            .iter()
            .map(|s| onnx_prune::inspect::parse_shape_arg(s))
            .collect::<onnx_prune::Result<_>>()?;
        return Ok(prune::Data {
            calib: calib::synthetic(g, &overrides, 64, a.seed)?,
            calib_labels: None,
            eval: calib::synthetic(g, &overrides, 16, a.seed.wrapping_add(1))?,
            eval_labels: None,
            source: "synthetic inputs".into(),
            synthetic: true,
        });
    };
    let all: Feeds<f32> = calib::load(cp, g, &img)?;
    let n = onnx_prune::autodiff::curvature::batch_size(&all)?;
    let all_labels = labels_of(&a.labels, n, "calibration")?;
    let source = cp.display().to_string();
    if let Some(ep) = &a.eval {
        let eval = calib::load(ep, g, &img)?;
        let ne = onnx_prune::autodiff::curvature::batch_size(&eval)?;
        return Ok(prune::Data {
            calib: all,
            calib_labels: all_labels,
            eval,
            eval_labels: labels_of(&a.eval_labels, ne, "--eval")?,
            source,
            synthetic: false,
        });
    }
    if a.eval_labels.is_some() {
        bail!("--eval-labels needs --eval");
    }
    // Hold out the last fifth; with a single sample, validate on it.
    let held = if n >= 2 { n.div_ceil(5) } else { 0 };
    if held == 0 {
        eprintln!("warning: one calibration sample: it is also the validation sample");
        return Ok(prune::Data {
            eval: all.clone(),
            eval_labels: all_labels.clone(),
            calib: all,
            calib_labels: all_labels,
            source,
            synthetic: false,
        });
    }
    let (c, e) = calib::split(&all, held)?;
    let (cl, el) = match all_labels {
        Some(l) => (Some(l[..n - held].to_vec()), Some(l[n - held..].to_vec())),
        None => (None, None),
    };
    Ok(prune::Data {
        calib: c,
        calib_labels: cl,
        eval: e,
        eval_labels: el,
        source,
        synthetic: false,
    })
}

/// Exit status 2 is for a result the gate rejects.
#[derive(Debug)]
pub struct Rejected(pub String);
impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Rejected {}

pub fn run(a: PruneArgs, threads: usize) -> Result<()> {
    let (Some(input), Some(output)) = (a.input.clone(), a.output.clone()) else {
        bail!(
            "give a model and an output path: onnx-prune IN.onnx OUT.onnx --structured 0.5 (see --help)"
        );
    };
    if a.unstructured.is_some() || a.nm.is_some() {
        return run_sparse(a, threads, input, output);
    }
    let Some(ratio) = a.structured else {
        bail!(
            "nothing to do: give --structured R (e.g. 0.5), --unstructured S (e.g. 0.7) or --nm N:M (e.g. 2:4)"
        );
    };
    if !(0.0..1.0).contains(&ratio) {
        bail!("--structured {ratio} must be in [0, 1)");
    }
    if !(0.0..=1.0).contains(&a.max_layer_ratio) {
        bail!("--max-layer-ratio {} must be in [0, 1]", a.max_layer_ratio);
    }
    if a.round_to == 0 {
        bail!("--round-to must be at least 1");
    }
    if !(0.0..=1.0).contains(&a.implant_ratio) {
        bail!("--implant-ratio {} must be in [0, 1]", a.implant_ratio);
    }
    if let Some(r) = a.implant_rank
        && !(r > 0.0 && r <= 1.0)
    {
        bail!("--implant-rank {r} must be in (0, 1]: a fraction of the implanted units");
    }
    check_output(&a, &input, &output)?;
    let m = load_for_pruning(&a, &input)?;
    m.graph.check_finite()?;
    let data = data(&m, &a)?;
    let plan_in = a.plan_in.as_ref().map(|p| Plan::read(p)).transpose()?;
    let opts = StructuredOptions {
        ratio,
        target: a.target,
        criterion: a.criterion,
        max_layer_ratio: a.max_layer_ratio,
        round_to: a.round_to,
        cost: a.cost,
        prune_hidden: a.prune_hidden,
        seed: a.seed,
        calib_samples: a.calib_samples.max(1),
        device: a.device,
        threads,
        latency_runs: a.latency_runs,
        drop_metric: a.drop_metric,
        max_drop: a.max_drop,
        backoff_steps: a.backoff_steps.max(1),
        implant_ratio: (!a.no_implant && (a.implant || a.criterion == Criterion::Hap))
            .then_some(a.implant_ratio),
        implant_rank: a.implant_rank,
        plan_in,
        probes: a.probes.max(1),
        hap_curvature: a.hap_curvature,
        hessian_samples: a.hessian_samples.max(1),
        sosp: prune::second_order::SospOptions {
            first_order: !a.sosp_no_first_order,
            abs_total: !a.sosp_abs_terms,
        },
        compensation: prune::compensate::CompensateOptions {
            refit: !a.no_compensation,
            bn_recalibrate: !a.no_compensation && !a.no_bn_recalibrate,
            max_samples: a.compensation_samples.max(1),
            snows: (a.refit == RefitKind::Snows).then(|| onnx_prune::sparse::snows::SnowsOptions {
                horizon: a.horizon.max(1),
                newton_steps: a.newton_steps,
                cg_iters: a.cg_iters.max(1),
                curvature: a.curvature,
                ..Default::default()
            }),
            ..Default::default()
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Default::default()
    };
    let mut bars = progress_bars();
    let out = prune::structured::run(&m, &data, &opts, &mut bars)?;
    print!("{}", out.report.render(&output.display().to_string()));
    print_memory(out.report.peak_rss_bytes);
    write_json(&a.report, "report", &out.report)?;
    write_json(&a.plan_out, "plan", &out.plan)?;
    if let Some(why) = &out.report.refused {
        return Err(Rejected(format!("{why}: {} not written", output.display())).into());
    }
    gate_and_save(&a, &out.report.validation, &m, &out.model, &output)
}

/// The checks on --max-drop and the output path every pass makes before any work.
fn check_output(a: &PruneArgs, input: &Path, output: &Path) -> Result<()> {
    if let Some(x) = a.max_drop
        && !(0.0..=1.0).contains(&x)
    {
        bail!("--max-drop {x} must be a fraction in [0, 1]");
    }
    if same_file(input, output) {
        bail!(
            "the output {} is the input: choose another path",
            output.display()
        );
    }
    if output.exists() && !a.force {
        bail!("{} exists: give --force to overwrite it", output.display());
    }
    Ok(())
}

fn write_json(path: &Option<PathBuf>, what: &str, v: &impl serde::Serialize) -> Result<()> {
    if let Some(p) = path {
        onnx_prune::onnx::io::write_atomic(p, serde_json::to_string_pretty(v)?.as_bytes())
            .with_context(|| format!("writing the {what} {}", p.display()))?;
    }
    Ok(())
}

/// Refuses (exit 2) past --max-drop, else writes the model (atomically, external data kept).
fn gate_and_save(
    a: &PruneArgs,
    v: &onnx_prune::validate::gate::Validation,
    m: &Model,
    model: &onnx_prune::onnx::ModelProto,
    output: &Path,
) -> Result<()> {
    if let Some(x) = a.max_drop
        && v.drop > x
    {
        return Err(Rejected(format!(
            "{} {:.4} exceeds --max-drop {x}: {} not written",
            v.drop_metric,
            v.drop,
            output.display()
        ))
        .into());
    }
    let save = onnx_prune::onnx::SaveOptions {
        external: m.source.external.keys().cloned().collect(),
        ..Default::default()
    };
    onnx_prune::onnx::save_model(model, output, &save)?;
    Ok(())
}

fn parse_nm(s: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--nm {s:?}: expected N:M with 0 < N < M, e.g. 2:4");
    let (n, m) = s.split_once(':').ok_or_else(bad)?;
    let (n, m): (usize, usize) = (
        n.trim().parse().map_err(|_| bad())?,
        m.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || m < 2 || n >= m {
        return Err(bad());
    }
    Ok((n, m))
}

/// Keep-masks from a pruned model: weight name → nonzero.
fn masks_from(p: &Path) -> Result<HashMap<String, Vec<bool>>> {
    let m = super::super::load(p)?;
    Ok(m.graph
        .weights
        .iter()
        .filter_map(|(&id, w)| {
            w.tensor.as_float().map(|a| {
                (
                    m.graph.name(id).to_string(),
                    a.iter().map(|v| *v != 0.0).collect(),
                )
            })
        })
        .collect())
}

/// `--unstructured S` / `--nm N:M`.
/// The model with `--score-output` applied: both passes score that output.
fn load_for_pruning(a: &PruneArgs, input: &Path) -> Result<Model> {
    let mut m = super::super::load(input)?;
    if let Some(name) = &a.score_output {
        m.graph.set_scored_output(name)?;
    }
    Ok(m)
}

fn run_sparse(a: PruneArgs, threads: usize, input: PathBuf, output: PathBuf) -> Result<()> {
    let pattern = match (&a.nm, a.unstructured) {
        (Some(nm), _) => {
            let (n, m) = parse_nm(nm)?;
            Pattern::NM(n, m)
        }
        (None, Some(s)) => {
            if !(0.0..1.0).contains(&s) {
                bail!("--unstructured {s} must be in [0, 1)");
            }
            Pattern::Sparsity(s)
        }
        (None, None) => unreachable!("checked by the caller"),
    };
    check_output(&a, &input, &output)?;
    let m = load_for_pruning(&a, &input)?;
    // Nodes the interpreter cannot run: the pass works on onnxruntime's layer inputs
    // (sparse::partial_support).
    m.graph.check_finite()?;
    let data = data(&m, &a)?;
    let mask_from = a.mask_from.as_ref().map(|p| masks_from(p)).transpose()?;
    let opts = UnstructuredOptions {
        pattern,
        mask: a.mask,
        mask_from,
        method: a.method.unwrap_or(if a.at_init.is_some() {
            Method::None
        } else {
            Method::Obs
        }),
        at_init: a
            .at_init
            .map(|criterion| onnx_prune::sparse::at_init::AtInitOptions {
                criterion,
                temperature: a.temperature,
                bn_warmup: !a.no_bn_warmup,
                samples: a.fisher_samples.max(1),
                probes: a.probes.max(1),
                synflow_rounds: a.synflow_rounds.max(1),
            }),
        allocation: a.allocation,
        sensitivity_samples: a.sensitivity_samples,
        selection: onnx_prune::sparse::layers::Selection {
            skip_first_last: !a.no_skip_first_last,
            include: a.include.clone(),
            exclude: a.exclude.clone(),
        },
        damp: a.damp,
        snows: onnx_prune::sparse::snows::SnowsOptions {
            horizon: a.horizon.max(1),
            newton_steps: a.newton_steps,
            cg_iters: a.cg_iters.max(1),
            curvature: a.curvature,
            ..Default::default()
        },
        fisher: onnx_prune::sparse::woodfisher::FisherOptions {
            samples: a.fisher_samples.max(1),
            block: a.fisher_block,
            damp: a.fisher_damp,
            update: a.fisher_update,
        },
        samples: a.compensation_samples.max(1),
        bn_recalibrate: !a.no_bn_recalibrate,
        hessian_samples: a.hessian_samples.max(1),
        probes: a.probes.max(1),
        seed: a.seed,
        device: a.device,
        threads,
        latency_runs: a.latency_runs,
        drop_metric: a.drop_metric,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Default::default()
    };
    let mut bars = progress_bars();
    let out = onnx_prune::sparse::run(&m, &data, &opts, &mut bars)?;
    print!("{}", out.report.render(&output.display().to_string()));
    print_memory(out.report.peak_rss_bytes);
    write_json(&a.report, "report", &out.report)?;
    gate_and_save(&a, &out.report.validation, &m, &out.model, &output)?;
    let masks = a.masks_out.clone().or_else(|| {
        a.at_init
            .is_some()
            .then(|| output.with_extension("masks.npz"))
    });
    if let Some(p) = masks {
        let t: Vec<(String, onnx_prune::tensor::Tensor<f32>)> = out
            .masks
            .iter()
            .map(|(name, shape, keep)| {
                let arr = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), keep.clone())
                    .expect("mask sized as its weight");
                (name.clone(), onnx_prune::tensor::Tensor::bool(arr))
            })
            .collect();
        onnx_prune::data::write_npz(&p, &t)?;
        println!("masks     {} ({} weights)", p.display(), t.len());
    }
    Ok(())
}

fn print_memory(peak: Option<u64>) {
    if let Some(b) = peak {
        println!(
            "memory    peak resident {:.0} MB",
            b as f64 / (1u64 << 20) as f64
        );
    }
}
