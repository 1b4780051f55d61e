//! Wall time of the unstructured pass per method on each MNIST fixture at 70 % sparsity (the
//! CLI's defaults: 128 calibration samples, uniform per layer, first and last layer kept), as a
//! ratio to one dense onnxruntime pass over the same 128 samples in this process, with the
//! held-out top-1 it reached. Prints the table at the end.
//! `cargo bench --bench sparse_methods` (BENCH_MODELS=resnet,mlpnet to choose fixtures).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use onnx_prune::data::read_npz;
use onnx_prune::ir::Model;
use onnx_prune::prune::Data;
use onnx_prune::runtime::{Device, OrtSession};
use onnx_prune::sparse::mask::Pattern;
use onnx_prune::sparse::saliency::MaskKind;
use onnx_prune::sparse::{self, Method, UnstructuredOptions};
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
    let fx = root().join("fixtures");
    let calib = read_npz(&fx.join("mnist_calib.npz")).unwrap();
    let labels = onnx_prune::calib::load_labels(&fx.join("mnist_calib_labels.npy")).unwrap();
    let eval = read_npz(&fx.join("mnist_heldout.npz")).unwrap();
    let eval_labels = onnx_prune::calib::load_labels(&fx.join("mnist_heldout_labels.npy")).unwrap();
    let data = Data {
        calib: calib.clone(),
        calib_labels: Some(labels),
        eval,
        eval_labels: Some(eval_labels),
        source: "fixtures/mnist_calib.npz".into(),
        synthetic: false,
    };
    let methods = [
        ("MP", MaskKind::Magnitude, Method::None),
        ("MP+", MaskKind::Magnitude, Method::Obs),
        ("obs", MaskKind::Obs, Method::Obs),
        ("woodfisher", MaskKind::Woodfisher, Method::Woodfisher),
        ("snows (magnitude mask)", MaskKind::Magnitude, Method::Snows),
    ];
    let only = std::env::var("BENCH_MODELS").ok();
    let mut rows = Vec::new();
    for name in ["resnet", "mobilenet", "vit", "mlp", "mlpnet"] {
        if only
            .as_ref()
            .is_some_and(|o| !o.split(',').any(|m| m == name))
        {
            continue;
        }
        let path = fx.join(format!("{name}.onnx"));
        let m = Model::load(&path).unwrap();
        let o0 = UnstructuredOptions {
            pattern: Pattern::Sparsity(0.7),
            latency_runs: 0,
            ..Default::default()
        };
        // The reference: one dense onnxruntime pass over the calibration samples the pass uses.
        let feeds = onnx_prune::calib::head(&calib, o0.samples).unwrap();
        let dense = m.source.proto.encode_to_vec();
        let mut s = OrtSession::new(&dense, path.parent(), Device::Cpu, 0).unwrap();
        s.run(&feeds).unwrap();
        let t = Instant::now();
        s.run(&feeds).unwrap();
        let ort = t.elapsed().as_secs_f64();
        for (label, mask, method) in methods {
            let o = UnstructuredOptions {
                mask,
                method,
                ..o0.clone()
            };
            let t = Instant::now();
            let out = sparse::run(&m, &data, &o, &mut |_, _, _| {}).unwrap();
            let secs = t.elapsed().as_secs_f64();
            let v = &out.report.validation;
            eprintln!("{name} {label}: {secs:.2} s");
            rows.push(format!(
                "| {name} | {label} | {secs:.2} | {:.0}× | {:.1}% → {:.1}% |",
                secs / ort,
                100.0 * v.accuracy_dense.unwrap_or(f64::NAN),
                100.0 * v.accuracy_pruned.unwrap_or(f64::NAN),
            ));
        }
    }
    println!(
        "\n| fixture | method (70 %) | seconds | × one dense onnxruntime pass (128 samples) | held-out top-1 |"
    );
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
