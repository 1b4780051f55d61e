//! Times a gradient or HVP pass (for profiling with perf):
//! `cargo run --release --example time_grad -- MODEL CALIB.npz LABELS.npy [grad|hvp] [ITERS]`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ndarray::{ArrayD, IxDyn};
use onnx_prune::autodiff::{Curvature, Objective, OutputKind};
use onnx_prune::data::{read_npy, read_npz};
use onnx_prune::ir::Model;
use onnx_prune::tensor::Tensor;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let model = Model::load(a[1].as_ref()).unwrap();
    let g = &model.graph;
    let feeds: Vec<(String, Tensor<f32>)> = read_npz(a[2].as_ref()).unwrap();
    let n = feeds[0].1.shape()[0];
    let labels = read_npy(a[3].as_ref()).unwrap().to_i64_vec()[..n].to_vec();
    let hvp = a.get(4).is_some_and(|m| m == "hvp");
    let iters: usize = a.get(5).map(|s| s.parse().unwrap()).unwrap_or(10);
    let mut cur = Curvature::<f32>::new(g, n).unwrap();
    let obj = Objective::CrossEntropy {
        value: g.outputs[0],
        labels,
        kind: OutputKind::Logits,
        temperature: 1.0,
    };
    let mut wrt: Vec<usize> = g
        .weights
        .iter()
        .filter(|(_, w)| w.tensor.len() >= 2 && w.tensor.dtype.is_float())
        .map(|(&i, _)| i)
        .collect();
    wrt.sort();
    let v: Vec<ArrayD<f32>> = wrt
        .iter()
        .map(|&id| ArrayD::from_elem(IxDyn(g.weights[&id].tensor.shape()), 0.01))
        .collect();
    let t = Instant::now();
    for _ in 0..iters {
        if hvp {
            cur.hvp(&feeds, &obj, &wrt, &v).unwrap();
        } else {
            cur.gradient(&feeds, &obj, &wrt).unwrap();
        }
    }
    println!(
        "{:.3} ms per pass",
        t.elapsed().as_secs_f64() * 1e3 / iters as f64
    );
}
