//! Structured pruning at 50 % on every fixture and real model (MODELS.md), including every
//! `light_*` topology: the pruned model passes onnx.checker with full shape inference, loads in
//! onnxruntime with the same inputs and output shapes, and computes exactly what the original
//! computes with the removed units' consumer slices zeroed (removal is exact without
//! compensation). Prints per model: groups, units removed, params and the check's error.

use crate::common;

use onnx_prune::analysis::{self, Probe};
use onnx_prune::ir::Model;
use onnx_prune::prune::allocate::{AllocOptions, Target, allocate, prunable_params};
use onnx_prune::prune::criteria;
use onnx_prune::rewrite::{self, Edit};
use onnx_prune::runtime::{Device, OrtSession};
use prost::Message;

#[test]
fn every_model_prunes_to_a_valid_exact_model() {
    let mut files = Vec::new();
    let dir = common::scratch("structured");
    for case in common::all_cases() {
        let m = Model::load(&case.path).unwrap();
        let g = &m.graph;
        let probe = Probe::run(g, common::head(case.feeds.clone(), 2)).unwrap();
        let a = analysis::analyze(g, &probe, Default::default());
        let scores = criteria::normalize(&criteria::magnitude(g, &a));
        let params: usize = g
            .weights
            .values()
            .filter(|w| w.tensor.dtype.is_float())
            .map(|w| w.tensor.len())
            .sum();
        let o = AllocOptions {
            ratio: 0.5,
            target: Target::Prunable,
            max_layer_ratio: 0.9,
            round_to: 8,
        };
        let al = allocate(
            g,
            &a,
            &scores,
            (prunable_params(g, &a) as f64, params as f64, 0.0),
            &o,
        );
        let edit = Edit {
            removed: al.removed,
            ..Default::default()
        };
        let removed = edit.removed.iter().flatten().filter(|r| **r).count();
        // A group must keep a unit: only groups of two or more can lose any.
        let removable = a.groups.iter().any(|grp| grp.prunable() >= 2);
        assert!(removed > 0 || !removable, "{}: nothing removed", case.name);
        let pruned = rewrite::apply(&m, &a, &probe, &edit)
            .unwrap()
            .encode_to_vec();
        let zeroed = rewrite::zero_consumers(&m, &a, &edit)
            .unwrap()
            .encode_to_vec();
        let f = dir.join(format!("{}.onnx", case.name));
        // Models over protobuf's 2 GiB would need external data; none of these is.
        std::fs::write(&f, &pruned).unwrap();
        files.push(f);
        let mut sp = OrtSession::new(&pruned, None, Device::Cpu, 0).unwrap();
        let mut sz = OrtSession::new(&zeroed, None, Device::Cpu, 0).unwrap();
        let (yp, yz) = (sp.run(&case.feeds).unwrap(), sz.run(&case.feeds).unwrap());
        let mut worst = 0.0f64;
        for ((n, p), (_, z)) in yp.iter().zip(&yz) {
            assert_eq!(p.shape(), z.shape(), "{}: output {n}", case.name);
            let (p, z) = (p.to_f64_vec(), z.to_f64_vec());
            let scale = z.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
            let err = p
                .iter()
                .zip(&z)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
                / scale;
            worst = worst.max(err);
        }
        let after: usize = pruned.len();
        println!(
            "{:<22} {:>4} groups {:>6} units, {:>6} removed; {:>10} → {:>10} bytes; pruned vs zeroed {:.1e}",
            case.name,
            a.groups.len(),
            a.prunable_units(),
            removed,
            m.source.file_len,
            after,
            worst
        );
        assert!(
            worst <= 1e-4,
            "{}: pruned and zeroed models differ by {worst:.3e} (relative)",
            case.name
        );
    }
    common::onnx_check_files(&files);
    println!(
        "onnx.checker (full shape inference): {} pruned models pass",
        files.len()
    );
}
