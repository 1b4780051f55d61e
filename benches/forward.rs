//! Our interpreter's forward pass against onnxruntime (CPU) on the same model, batch and thread
//! count. Prints a table of ratios (ours / onnxruntime, median times) at the end.
//!
//! `cargo bench --bench forward` runs everything; `BENCH_MODELS=resnet,mobilenet` restricts the
//! models, `BENCH_QUICK=1` takes fewer samples.

// mimalloc keeps freed large blocks mapped: the system allocator returns them to the OS and
// every run then pays for page faults on fresh zero pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion};
use ndarray::{ArrayD, Axis, IxDyn};
use onnx_prune::data::read_npz;
use onnx_prune::interp::Engine;
use onnx_prune::ir::Model;
use onnx_prune::runtime::{Device, OrtSession};
use onnx_prune::tensor::Tensor;
use std::path::PathBuf;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn seeded(shape: &[usize], seed: u64) -> Tensor<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::f32(ArrayD::from_shape_vec(IxDyn(shape), v).unwrap())
}

/// Inputs at a given batch for each benchmarked model.
fn feeds(model: &str, batch: usize) -> Vec<(String, Tensor<f32>)> {
    match model {
        "pp_lcnet_orientation" => vec![("x".into(), seeded(&[batch, 3, 224, 224], 1))],
        "open_nsfw" => vec![("input_0".into(), seeded(&[batch, 224, 224, 3], 2))],
        "minilm_l3" => {
            let len = 32;
            let ids: Vec<i64> = (0..batch * len)
                .map(|i| {
                    if i % len == 0 {
                        101
                    } else {
                        1000 + (i * 7919 % 20000) as i64
                    }
                })
                .collect();
            let t =
                |v: Vec<i64>| Tensor::i64(ArrayD::from_shape_vec(IxDyn(&[batch, len]), v).unwrap());
            vec![
                ("input_ids".into(), t(ids)),
                ("attention_mask".into(), t(vec![1; batch * len])),
            ]
        }
        _ => {
            let all = read_npz(&root().join("fixtures/mnist_calib.npz")).unwrap();
            all.into_iter()
                .map(|(n, t)| {
                    let a = t
                        .as_float()
                        .unwrap()
                        .slice_axis(Axis(0), ndarray::Slice::from(0..batch))
                        .to_owned();
                    (n, Tensor::f32(a))
                })
                .collect()
        }
    }
}

fn model_path(name: &str) -> PathBuf {
    let f = root().join("fixtures").join(format!("{name}.onnx"));
    if f.is_file() {
        f
    } else {
        root().join(".deps/models").join(format!("{name}.onnx"))
    }
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
    let models: Vec<String> = std::env::var("BENCH_MODELS")
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_else(|_| {
            [
                "resnet",
                "mobilenet",
                "vit",
                "mlp",
                "pp_lcnet_orientation",
                "minilm_l3",
                "open_nsfw",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        });
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let all_threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(if quick { 300 } else { 1000 }))
        .measurement_time(Duration::from_secs(if quick { 1 } else { 3 }))
        .configure_from_args();
    let mut rows = Vec::new();
    for name in &models {
        let path = model_path(name);
        if !path.is_file() {
            eprintln!(
                "skipping {name}: {} missing (run scripts/setup.sh)",
                path.display()
            );
            continue;
        }
        let model = Model::load(&path).unwrap();
        let engine = Engine::<f32>::new(&model.graph).unwrap();
        for batch in [1usize, 32] {
            let input = feeds(name, batch);
            for threads in [1usize, all_threads] {
                let group = format!("forward_{name}");
                let id = format!("b{batch}_t{threads}");
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut ort = OrtSession::from_file(&path, Device::Cpu, threads).unwrap();
                let mut g = c.benchmark_group(&group);
                g.bench_function(BenchmarkId::new("ours", &id), |b| {
                    b.iter(|| pool.install(|| engine.run(input.clone()).unwrap()))
                });
                g.bench_function(BenchmarkId::new("onnxruntime", &id), |b| {
                    b.iter(|| ort.run(&input).unwrap())
                });
                g.finish();
                if let (Some(o), Some(r)) = (
                    median_ns(&group, &format!("ours/{id}")),
                    median_ns(&group, &format!("onnxruntime/{id}")),
                ) {
                    rows.push(format!(
                        "| {name} | {batch} | {threads} | {:.3} | {:.3} | {:.2} |",
                        o / 1e6,
                        r / 1e6,
                        o / r
                    ));
                }
            }
        }
    }
    println!("\n| model | batch | threads | ours (ms) | onnxruntime (ms) | ours / ort |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
