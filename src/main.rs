//! The `onnx-prune` command line: argument parsing, calls into the library, printing.
//! Exit codes: 0 success, 1 bad input or usage (one line on stderr), 2 validation failure.

// mimalloc keeps freed large blocks mapped: the system allocator returns them to the OS and
// every run then pays for page faults on fresh zero pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use onnx_prune::data::{read_npy, read_tensors, write_npz};
use onnx_prune::interp::Engine;
use onnx_prune::ir::Model;
use onnx_prune::runtime::{Device, OrtSession};
use onnx_prune::tensor::Tensor;
use onnx_prune::{inspect, sensitivity, validate};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod cli;

#[derive(Parser)]
#[command(
    name = "onnx-prune",
    version,
    about = "Make ONNX models smaller while computing nearly the same function",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  onnx-prune fixtures/resnet.onnx out.onnx --structured 0.5 --calib fixtures/mnist_calib.npz --labels fixtures/mnist_calib_labels.npy\n  onnx-prune model.onnx small.onnx --structured 0.3 --criterion taylor --calib images/ --size 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --max-drop 0.01 --report report.json\n  onnx-prune inspect fixtures/resnet.onnx --layers\n  onnx-prune inspect fixtures/resnet.onnx --groups\n  onnx-prune eval fixtures/resnet.onnx --data fixtures/mnist_calib_small.npz --out out.npz\n  onnx-prune compare a.onnx b.onnx --data fixtures/mnist_heldout.npz --labels fixtures/mnist_heldout_labels.npy"
)]
struct Cli {
    /// Worker threads for the interpreter and onnxruntime (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    prune: cli::prune::PruneArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum EngineKind {
    /// Our interpreter.
    Interp,
    /// onnxruntime.
    Ort,
    /// tract (pure Rust).
    Tract,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise a model: inputs/outputs, ops, parameters, FLOPs, unsupported ops.
    #[command(
        after_help = "Examples:\n  onnx-prune inspect model.onnx\n  onnx-prune inspect model.onnx --layers --shape x=1,3,640,640\n  onnx-prune inspect model.onnx --json > summary.json"
    )]
    Inspect {
        model: PathBuf,
        /// Per-layer parameters and FLOPs.
        #[arg(long)]
        layers: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Concrete shape for an input with dynamic dimensions, e.g. x=1,3,224,224 (repeatable).
        #[arg(long = "shape", value_name = "NAME=D1,D2,..")]
        shapes: Vec<String>,
        /// The dependency groups: prunable channels, heads and units, their tensor slices, and
        /// what cannot be pruned and why (probed on --calib, else on synthetic inputs).
        #[arg(long, conflicts_with = "sensitivity")]
        groups: bool,
        /// Also prune LayerNorm'd widths (transformer residual streams) in --groups.
        #[arg(long, requires = "groups")]
        prune_hidden: bool,
        /// Curvature report per prunable layer: gradient norm, Hutchinson Hessian trace, HAP
        /// channel-sensitivity spread (needs --calib).
        #[arg(long, requires = "calib")]
        sensitivity: bool,
        /// Calibration inputs (.npz keyed by input name) for --sensitivity.
        #[arg(long)]
        calib: Option<PathBuf>,
        /// Integer labels (.npy) for a cross-entropy objective (default: KL to the model's own
        /// outputs, label-free).
        #[arg(long, requires = "sensitivity")]
        labels: Option<PathBuf>,
        /// Seed of the Hutchinson probes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Calibration samples used (the first ones).
        #[arg(long, default_value_t = 256)]
        samples: usize,
        /// Upper bound on Hutchinson probes (it stops earlier once the trace settles).
        #[arg(long, default_value_t = 32)]
        probes: usize,
    },
    /// Run a model on inputs from an .npz (keyed by input name); write the outputs as .npz.
    #[command(
        after_help = "Example:\n  onnx-prune eval model.onnx --data inputs.npz --out outputs.npz --engine ort"
    )]
    Eval {
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "interp")]
        engine: EngineKind,
        /// onnxruntime device (with --engine ort).
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
        /// Also write every intermediate value (interpreter only), to find where two runtimes part.
        #[arg(long)]
        intermediates: bool,
    },
    /// Run two models in onnxruntime on the same inputs and report how closely they agree.
    #[command(
        after_help = "Example:\n  onnx-prune compare dense.onnx pruned.onnx --data heldout.npz --labels labels.npy --tolerance 0.05"
    )]
    Compare {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Integer class labels (.npy) for accuracy of the first output.
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
        /// Exit with status 2 when any output's relative error exceeds this.
        #[arg(long)]
        tolerance: Option<f64>,
        #[arg(long)]
        json: bool,
    },
}

/// A failure that is the model's or data's verdict, not a usage error (exit status 2).
#[derive(Debug)]
struct ValidationFailure(String);
impl std::fmt::Display for ValidationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ValidationFailure {}

fn main() -> ExitCode {
    onnx_prune::onnx::io::install_interrupt_cleanup();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // Usage errors are input errors (exit 1), reported on one line like every other.
        Err(e) => {
            let msg = e.to_string();
            let head: Vec<&str> = msg
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{} (see --help)", head.join(" "));
            return ExitCode::from(1);
        }
    };
    if let Some(n) = cli.threads {
        if n == 0 {
            eprintln!("error: --threads must be at least 1");
            return ExitCode::from(1);
        }
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let threads = cli.threads.unwrap_or(0);
    let result = match cli.command {
        Some(cmd) => run(cmd, threads),
        None => cli::prune::run(cli.prune, threads),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            if e.downcast_ref::<ValidationFailure>().is_some()
                || e.downcast_ref::<cli::prune::Rejected>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// A progress bar on stderr when it is a terminal; hidden in pipes and logs.
fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} [{elapsed}]")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

fn load(path: &Path) -> Result<Model> {
    let m = Model::load(path)?;
    for w in m.source.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(m)
}

fn load_mapped(path: &Path) -> Result<Model> {
    let m = Model::load_mapped(path)?;
    for w in m.source.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(m)
}

fn run(cmd: Command, threads: usize) -> Result<()> {
    match cmd {
        Command::Inspect {
            model,
            layers,
            json,
            shapes,
            groups,
            prune_hidden,
            sensitivity,
            calib,
            labels,
            seed,
            samples,
            probes,
        } => {
            // The summary alone reads the model mapped and decodes one large weight at a time.
            let plain = !groups && !sensitivity;
            let m = if plain {
                load_mapped(&model)?
            } else {
                load(&model)?
            };
            if groups {
                let overrides: HashMap<String, Vec<usize>> = shapes
                    .iter()
                    .map(|s| inspect::parse_shape_arg(s))
                    .collect::<onnx_prune::Result<_>>()?;
                let feeds = match &calib {
                    Some(p) => onnx_prune::calib::head(
                        &onnx_prune::calib::load(p, &m.graph, &Default::default())?,
                        2,
                    )?,
                    None => onnx_prune::calib::synthetic(&m.graph, &overrides, 2, seed)?,
                };
                let probe = onnx_prune::analysis::Probe::of_model(&m, feeds)?;
                let a = onnx_prune::analysis::analyze(
                    &m.graph,
                    &probe,
                    onnx_prune::analysis::Options { prune_hidden },
                );
                let r = onnx_prune::analysis::report::summarize(&m.graph, &a);
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    print!("{}", r.render(true));
                }
                return Ok(());
            }
            if sensitivity {
                let calib = calib.expect("clap requires --calib");
                let feeds = read_tensors(&calib)?;
                let labels = labels
                    .map(|p| read_npy(&p).map(|t| t.to_i64_vec()))
                    .transpose()?;
                let opts = sensitivity::SensitivityOptions {
                    seed,
                    samples,
                    max_probes: probes.max(1),
                    min_probes: probes.clamp(1, 8),
                    ..Default::default()
                };
                let bar = progress(probes as u64, "Hutchinson probes");
                let report = sensitivity::sensitivity::<f32>(
                    &m.graph,
                    &feeds,
                    labels.as_deref(),
                    opts,
                    &mut |k| bar.set_position(k as u64),
                )?;
                bar.finish_and_clear();
                if json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", report.render());
                }
                return Ok(());
            }
            let overrides: HashMap<String, Vec<usize>> = shapes
                .iter()
                .map(|s| inspect::parse_shape_arg(s))
                .collect::<onnx_prune::Result<_>>()?;
            let s = inspect::summarize_with_runtime(&m, &overrides);
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", s.render(layers));
            }
            Ok(())
        }
        Command::Eval {
            model,
            data,
            out,
            engine,
            device,
            intermediates,
        } => {
            if !matches!(engine, EngineKind::Ort) && device == Device::Cuda {
                bail!("--device cuda needs --engine ort");
            }
            if intermediates && !matches!(engine, EngineKind::Interp) {
                bail!("--intermediates needs --engine interp");
            }
            let feeds = read_tensors(&data)?;
            let outputs: Vec<(String, Tensor<f32>)> = match engine {
                EngineKind::Interp => {
                    let m = load(&model)?;
                    // Intermediates need the node-by-node plan (fusion skips values).
                    let e = if intermediates {
                        Engine::<f32>::exact(&m.graph)?
                    } else {
                        Engine::<f32>::new(&m.graph)?
                    };
                    if intermediates {
                        let g = &m.graph;
                        let all = e.run_all(feeds)?;
                        all.into_iter()
                            .enumerate()
                            .filter(|(id, v)| v.is_some() && !g.weights.contains_key(id))
                            .map(|(id, v)| (g.name(id).to_string(), v.expect("filtered")))
                            .collect()
                    } else {
                        let outs = e.run(feeds)?;
                        m.graph
                            .outputs
                            .iter()
                            .map(|&o| m.graph.name(o).to_string())
                            .zip(outs)
                            .collect()
                    }
                }
                EngineKind::Ort => OrtSession::from_file(&model, device, threads)?.run(&feeds)?,
                #[cfg(feature = "tract")]
                EngineKind::Tract => {
                    let m = load(&model)?;
                    let outs = onnx_prune::runtime::tract::run_file(&model, &feeds)?;
                    m.graph
                        .outputs
                        .iter()
                        .map(|&o| m.graph.name(o).to_string())
                        .zip(outs)
                        .collect()
                }
                #[cfg(not(feature = "tract"))]
                EngineKind::Tract => {
                    return Err(onnx_prune::Error::Usage(
                        "this build has no tract (built without the `tract` feature)".into(),
                    ));
                }
            };
            write_npz(&out, &outputs)?;
            for (name, t) in &outputs {
                eprintln!("{name}: {} {:?}", t.dtype, t.shape());
            }
            Ok(())
        }
        Command::Compare {
            a,
            b,
            data,
            labels,
            device,
            tolerance,
            json,
        } => {
            let feeds = read_tensors(&data)?;
            let ra = OrtSession::from_file(&a, device, threads)
                .with_context(|| format!("{}", a.display()))?
                .run(&feeds)?;
            let rb = OrtSession::from_file(&b, device, threads)
                .with_context(|| format!("{}", b.display()))?
                .run(&feeds)?;
            if ra.len() != rb.len() {
                bail!("the models have {} and {} outputs", ra.len(), rb.len());
            }
            let mut rows = Vec::new();
            for ((na, ta), (nb, tb)) in ra.iter().zip(&rb) {
                if na != nb {
                    bail!("output names differ: {na:?} vs {nb:?}");
                }
                rows.push(validate::agreement(na, ta, tb).map_err(anyhow::Error::msg)?);
            }
            let acc = match &labels {
                Some(p) => {
                    let l = read_npy(p)?.to_i64_vec();
                    let first = |r: &[(String, Tensor<f32>)]| -> Result<f64> {
                        validate::accuracy(&r[0].1, &l).map_err(anyhow::Error::msg)
                    };
                    Some((first(&ra)?, first(&rb)?))
                }
                None => None,
            };
            if json {
                let v = serde_json::json!({
                    "a": a, "b": b, "device": device.to_string(), "outputs": rows,
                    "accuracy_a": acc.map(|x| x.0), "accuracy_b": acc.map(|x| x.1),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<28} {:>12} {:>12} {:>10} {:>8}",
                    "output", "max |Δ|", "rel", "cosine", "top-1"
                );
                for r in &rows {
                    let t1 = r
                        .top1_agreement
                        .map(|x| format!("{:.2}%", 100.0 * x))
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{:<28} {:>12.3e} {:>12.3e} {:>10.6} {:>8}",
                        r.name, r.max_abs, r.rel, r.cosine, t1
                    );
                }
                if let Some((x, y)) = acc {
                    println!(
                        "accuracy  a {:.2}%  b {:.2}%  ({:+.2} points)",
                        100.0 * x,
                        100.0 * y,
                        100.0 * (y - x)
                    );
                }
            }
            if let Some(tol) = tolerance
                && let Some(r) = rows.iter().find(|r| r.rel.is_nan() || r.rel > tol)
            {
                return Err(ValidationFailure(format!(
                    "output {:?} differs by {:.3e} (relative), over the tolerance {tol}",
                    r.name, r.rel
                ))
                .into());
            }
            Ok(())
        }
    }
}
