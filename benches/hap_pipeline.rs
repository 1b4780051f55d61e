//! The whole `--structured 0.5 --criterion hap` pass (implants and compensation on, the CLI's
//! defaults) on PP-LCNet with 256 calibration images: wall time, the share of each stage, and
//! the ratio to one dense onnxruntime pass over the same 256 images in this process.
//! `cargo bench --bench hap_pipeline` (needs scripts/setup.sh; BENCH_QUICK=1: 64 images).
//!
//! The 256 images are the 64 calibration tensors of scripts/make_inputs.py and three variants of
//! each (mirrored, shifted by 16 pixels, contrast-scaled): no labels, so the loss is the
//! label-free KL to the dense model, as for a user without labels.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ndarray::{Axis, concatenate, s};
use onnx_prune::data::read_npz;
use onnx_prune::ir::Model;
use onnx_prune::prune::{self, StructuredOptions};
use onnx_prune::runtime::{Device, OrtSession};
use onnx_prune::tensor::Tensor;
use prost::Message;
use std::path::PathBuf;
use std::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let deps = root().join(".deps");
    let path = deps.join("models/pp_lcnet_orientation.onnx");
    let m = Model::load(&path).expect("run scripts/setup.sh first");
    let base = read_npz(&deps.join("inputs/pp_lcnet_orientation_calib.npz")).unwrap();
    let eval = read_npz(&deps.join("inputs/pp_lcnet_orientation_eval.npz")).unwrap();
    let eval_labels =
        onnx_prune::calib::load_labels(&deps.join("inputs/pp_lcnet_orientation_eval_labels.npy"))
            .unwrap();
    let (name, x) = &base[0];
    let x = x.as_float().unwrap().to_owned();
    let calib = if quick {
        x
    } else {
        let mirrored = x.slice(s![.., .., .., ..;-1]).to_owned().into_dyn();
        let mut shifted = x.clone();
        let w = x.shape()[3];
        shifted
            .slice_mut(s![.., .., .., 16..])
            .assign(&x.slice(s![.., .., .., ..w - 16]));
        let contrast = x.mapv(|v| 0.8 * v);
        concatenate(
            Axis(0),
            &[x.view(), mirrored.view(), shifted.view(), contrast.view()],
        )
        .unwrap()
    };
    let n = calib.shape()[0];
    let feeds = vec![(name.clone(), Tensor::f32(calib))];
    let data = prune::Data {
        calib: feeds.clone(),
        calib_labels: None,
        eval,
        eval_labels: Some(eval_labels),
        source: format!("{n} images"),
        synthetic: false,
    };
    let opts = StructuredOptions {
        ratio: 0.5,
        latency_runs: 0,
        ..Default::default()
    };
    // The reference: one dense onnxruntime pass over the same images, same process.
    let dense = m.source.proto.encode_to_vec();
    let mut s = OrtSession::new(&dense, path.parent(), Device::Cpu, 0).unwrap();
    s.run(&onnx_prune::calib::head(&feeds, 8).unwrap()).unwrap();
    let t = Instant::now();
    s.run(&feeds).unwrap();
    let ort = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let out = prune::structured::run(&m, &data, &opts, &mut |_, _, _| {}).unwrap();
    let total = t.elapsed().as_secs_f64();
    let r = &out.report;
    println!(
        "\nPP-LCNet, --structured 0.5 --criterion hap (implants, compensation), {n} calibration images"
    );
    println!(
        "total {total:.1} s = {:.0}× one dense onnxruntime pass over the {n} images ({ort:.2} s); accuracy {:.1}% → {:.1}%, −{:.1}% params, {} implants\n",
        total / ort,
        100.0 * r.validation.accuracy_dense.unwrap_or(f64::NAN),
        100.0 * r.validation.accuracy_pruned.unwrap_or(f64::NAN),
        100.0 * r.params_removed / r.before.params as f64,
        r.compensation.implants.len()
    );
    println!("| stage | seconds | share |");
    println!("|---|---|---|");
    let staged: f64 = r.seconds.values().sum();
    for (k, v) in &r.seconds {
        println!("| {k} | {v:.2} | {:.0}% |", 100.0 * v / total);
    }
    println!(
        "| other (probe, allocation, report) | {:.2} | {:.0}% |",
        total - staged,
        100.0 * (total - staged) / total
    );
}
