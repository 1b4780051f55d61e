//! The interpreter reproduces onnxruntime (CPU) on every fixture and real model:
//! max |ours − ort| ≤ 1e-4 × max |ort| for every output.

mod common;

use onnx_prune::interp::Engine;
use onnx_prune::ir::Model;
use onnx_prune::runtime::{Device, OrtSession};
use onnx_prune::validate::agreement;

#[test]
fn interpreter_matches_onnxruntime_on_every_model() {
    let mut worst = Vec::new();
    for case in common::all_cases() {
        let model = Model::load(&case.path).unwrap();
        let engine =
            Engine::<f32>::new(&model.graph).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let ours = engine
            .run(case.feeds.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        // The node-by-node plan (no fusion, no in-place reuse) must agree too.
        let exact = Engine::<f32>::exact(&model.graph)
            .unwrap()
            .run(case.feeds.clone())
            .unwrap();
        let reference = OrtSession::from_file(&case.path, Device::Cpu, 0)
            .unwrap()
            .run(&case.feeds)
            .unwrap();
        assert_eq!(ours.len(), reference.len(), "{}", case.name);
        let mut rel: f64 = 0.0;
        for ((o, e), (name, r)) in ours.iter().zip(&exact).zip(&reference) {
            let a = agreement(name, r, o).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let b = agreement(name, r, e).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            rel = rel.max(a.rel).max(b.rel);
        }
        println!("{:<24} max|ours-ort| / max|ort| = {rel:.2e}", case.name);
        worst.push((case.name.clone(), rel));
    }
    let bad: Vec<_> = worst
        .iter()
        .filter(|(_, r)| r.is_nan() || *r > 1e-4)
        .collect();
    assert!(bad.is_empty(), "over 1e-4: {bad:?}");
}
