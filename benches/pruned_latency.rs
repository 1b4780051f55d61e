//! onnxruntime CPU latency of models pruned by `--structured 0.5` (the CLI defaults: hap,
//! implants, compensation, prunable-layer params, --round-to 8) against the dense model, same
//! process, batch and thread count, each session timed alone. Prints the ratio table at the end
//! with the top-1 agreement with the dense model on the calibration inputs.
//! `cargo bench --bench pruned_latency` (BENCH_QUICK=1 for fewer samples; BENCH_MODELS=a,b;
//! BENCH_CRITERION=magnitude, BENCH_TARGET=flops|latency, BENCH_ROUND=N, BENCH_RATIO=R (the
//! `--structured` fraction, 0.5 by default) change the options).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion};
use onnx_prune::data::read_npz;
use onnx_prune::ir::Model;
use onnx_prune::prune::{self, StructuredOptions};
use onnx_prune::runtime::{Device, OrtSession};
use prost::Message;
use std::path::PathBuf;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn median_ns(group: &str, id: &str) -> Option<f64> {
    let p = root()
        .join("target/criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(if quick { 300 } else { 1000 }))
        .measurement_time(Duration::from_secs(if quick { 1 } else { 3 }))
        .configure_from_args();
    let models: Vec<(&str, PathBuf, PathBuf)> = vec![
        (
            "resnet",
            root().join("fixtures/resnet.onnx"),
            root().join("fixtures/mnist_calib.npz"),
        ),
        (
            "mobilenet",
            root().join("fixtures/mobilenet.onnx"),
            root().join("fixtures/mnist_calib.npz"),
        ),
        (
            "pp_lcnet_orientation",
            root().join(".deps/models/pp_lcnet_orientation.onnx"),
            root().join(".deps/inputs/pp_lcnet_orientation_calib.npz"),
        ),
    ];
    let only = std::env::var("BENCH_MODELS").ok();
    let mut rows = Vec::new();
    for (name, path, calib) in models {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|m| m == name))
        {
            continue;
        }
        let m = Model::load(&path).unwrap();
        let feeds = read_npz(&calib).unwrap();
        let data = prune::Data {
            calib: feeds.clone(),
            calib_labels: None,
            eval: feeds.clone(),
            eval_labels: None,
            source: calib.display().to_string(),
            synthetic: false,
        };
        let mut opts = StructuredOptions {
            latency_runs: 0,
            ..Default::default()
        };
        if std::env::var("BENCH_CRITERION").as_deref() == Ok("magnitude") {
            opts.criterion = prune::Criterion::Magnitude;
            opts.implant_ratio = None;
        }
        if let Some(r) = std::env::var("BENCH_RATIO")
            .ok()
            .and_then(|r| r.parse().ok())
        {
            opts.ratio = r;
        }
        if let Some(r) = std::env::var("BENCH_ROUND")
            .ok()
            .and_then(|r| r.parse().ok())
        {
            opts.round_to = r;
        }
        match std::env::var("BENCH_COST").as_deref() {
            Ok("params") => opts.cost = Some(prune::RankCost::Params),
            Ok("flops") => opts.cost = Some(prune::RankCost::Flops),
            _ => {}
        }
        match std::env::var("BENCH_TARGET").as_deref() {
            Ok("flops") => opts.target = prune::Target::Flops,
            Ok("latency") => {
                // The search times its candidates: it needs timed runs.
                opts.target = prune::Target::Latency;
                opts.latency_runs = 20;
            }
            _ => {}
        }
        let out = prune::structured::run(&m, &data, &opts, &mut |_, _, _| {}).unwrap();
        let dense = m.source.proto.encode_to_vec();
        for batch in [1usize, 32] {
            let x = onnx_prune::calib::head(&feeds, batch).unwrap();
            let n = onnx_prune::autodiff::curvature::batch_size(&x).unwrap();
            let group = format!("pruned_{name}_b{n}");
            let mut g = c.benchmark_group(&group);
            for (kind, bytes) in [("dense", &dense), ("pruned", &out.bytes)] {
                let mut s = OrtSession::new(bytes, path.parent(), Device::Cpu, 0).unwrap();
                g.bench_function(BenchmarkId::new(kind, n), |b| b.iter(|| s.run(&x).unwrap()));
            }
            g.finish();
            if let (Some(d), Some(p)) = (
                median_ns(&group, &format!("dense/{n}")),
                median_ns(&group, &format!("pruned/{n}")),
            ) {
                let agree = out
                    .report
                    .validation
                    .outputs
                    .first()
                    .and_then(|o| o.top1_agreement)
                    .map_or("–".to_string(), |a| format!("{:.1}%", 100.0 * a));
                rows.push(format!(
                    "| {name} | {n} | {:.1}% | {:.1}% | {:.3} | {:.3} | {:.2} | {agree} |",
                    100.0 * out.report.params_removed / out.report.before.params as f64,
                    100.0 * out.report.flops_removed.unwrap_or(0.0)
                        / out.report.before.flops.unwrap_or(1).max(1) as f64,
                    d / 1e6,
                    p / 1e6,
                    p / d
                ));
            }
        }
    }
    println!(
        "\n| model | batch | params removed | FLOPs removed | dense (ms) | pruned (ms) | pruned / dense | top-1 agreement |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
