//! Cost of derivatives relative to a forward pass, on every fixture at batch 32 (f32):
//! gradient / forward and Hessian-vector product / forward. Prints the ratio table at the end.
//! `cargo bench --bench derivatives` (BENCH_QUICK=1 for fewer samples).

// See benches/forward.rs: freed large blocks stay mapped.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use onnx_prune::autodiff::{Curvature, Objective, OutputKind};
use onnx_prune::data::{read_npy, read_npz};
use onnx_prune::interp::Engine;
use onnx_prune::ir::Model;
use onnx_prune::tensor::Tensor;
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
    let batch = 32;
    let feeds: Vec<(String, Tensor<f32>)> = read_npz(&root().join("fixtures/mnist_calib.npz"))
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                Tensor::f32(
                    t.as_float()
                        .unwrap()
                        .slice_axis(Axis(0), Slice::from(0..batch))
                        .to_owned(),
                ),
            )
        })
        .collect();
    let labels = read_npy(&root().join("fixtures/mnist_calib_labels.npy"))
        .unwrap()
        .to_i64_vec()[..batch]
        .to_vec();
    let mut rows = Vec::new();
    for name in ["resnet", "mobilenet", "vit", "mlp", "mlpnet"] {
        let model = Model::load(&root().join(format!("fixtures/{name}.onnx"))).unwrap();
        let g = &model.graph;
        let engine = Engine::<f32>::new(g).unwrap();
        let mut cur = Curvature::<f32>::new(g, batch).unwrap();
        let obj = Objective::CrossEntropy {
            value: g.outputs[0],
            labels: labels.clone(),
            kind: OutputKind::Logits,
            temperature: 1.0,
        };
        let mut wrt: Vec<usize> = g
            .weights
            .iter()
            .filter(|(_, w)| w.tensor.dtype.is_float() && w.tensor.len() >= 2)
            .map(|(&id, _)| id)
            .collect();
        wrt.sort();
        let v: Vec<ArrayD<f32>> = wrt
            .iter()
            .map(|&id| ArrayD::from_elem(IxDyn(g.weights[&id].tensor.shape()), 0.01))
            .collect();
        let group = format!("derivatives_{name}");
        let mut gr = c.benchmark_group(&group);
        gr.bench_function(BenchmarkId::new("forward", batch), |b| {
            b.iter(|| engine.run(feeds.clone()).unwrap())
        });
        gr.bench_function(BenchmarkId::new("forward_tape", batch), |b| {
            b.iter(|| cur.forward(feeds.clone()).unwrap())
        });
        gr.bench_function(BenchmarkId::new("gradient", batch), |b| {
            b.iter(|| cur.gradient(&feeds, &obj, &wrt).unwrap())
        });
        gr.bench_function(BenchmarkId::new("hvp", batch), |b| {
            b.iter(|| cur.hvp(&feeds, &obj, &wrt, &v).unwrap())
        });
        gr.finish();
        let t = |id: &str| median_ns(&group, &format!("{id}/{batch}"));
        if let (Some(f), Some(ft), Some(gd), Some(h)) =
            (t("forward"), t("forward_tape"), t("gradient"), t("hvp"))
        {
            rows.push(format!(
                "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                f / 1e6,
                ft / 1e6,
                gd / 1e6,
                h / 1e6,
                gd / f,
                h / f
            ));
        }
    }
    println!(
        "\n| model | forward (ms) | forward + tape (ms) | gradient (ms) | HVP (ms) | gradient / forward | HVP / forward |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
