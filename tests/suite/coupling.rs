//! Structured pruning on one small model per coupling case (fixtures/coupling, described in its
//! README): the dependency analysis finds the expected groups, and removing units gives a model
//! that, in onnxruntime, computes exactly what the original computes with those units' consumer
//! slices zeroed. Every emitted model also passes onnx.checker with full shape inference.

use crate::common;

use onnx_prune::analysis::{self, Analysis, GroupKind, Probe};
use onnx_prune::ir::Model;
use onnx_prune::rewrite::{self, Edit};
use onnx_prune::runtime::{Device, OrtSession};
use prost::Message;

fn load(name: &str) -> Model {
    Model::load(
        &common::fixtures()
            .join("coupling")
            .join(format!("{name}.onnx")),
    )
    .unwrap()
}

fn analyze(m: &Model) -> (Analysis, Probe) {
    let feeds = onnx_prune::calib::synthetic(&m.graph, &Default::default(), 2, 7).unwrap();
    let probe = Probe::run(&m.graph, feeds).unwrap();
    (
        analysis::analyze(&m.graph, &probe, Default::default()),
        probe,
    )
}

/// (kind, units, prunable) of each group, in order.
fn shape_of(a: &Analysis) -> Vec<(GroupKind, usize, usize)> {
    a.groups
        .iter()
        .map(|g| (g.kind, g.units.len(), g.prunable()))
        .collect()
}

/// Removes units by a deterministic pattern (every unit whose index ≡ offset mod step, keeping
/// at least one per group) and checks pruned == zeroed in onnxruntime.
fn check_removal(
    name: &str,
    m: &Model,
    a: &Analysis,
    probe: &Probe,
    step: usize,
    offset: usize,
    files: &mut Vec<std::path::PathBuf>,
) -> usize {
    let mut edit = Edit::none(a);
    let mut count = 0;
    for (gi, grp) in a.groups.iter().enumerate() {
        let prunable: Vec<usize> = (0..grp.units.len())
            .filter(|&u| grp.units[u].frozen.is_none())
            .collect();
        for (k, &u) in prunable.iter().enumerate() {
            if k % step == offset % step && k + 1 < prunable.len().max(2) {
                edit.removed[gi][u] = true;
                count += 1;
            }
        }
    }
    let pruned = rewrite::apply(m, a, probe, &edit).unwrap();
    let zeroed = rewrite::zero_consumers(m, a, &edit).unwrap();
    let (pb, zb) = (pruned.encode_to_vec(), zeroed.encode_to_vec());
    assert!(pb.len() < zb.len(), "{name}: the pruned model is smaller");
    let dir = common::scratch(&format!("coupling-{name}-{step}-{offset}"));
    let f = dir.join(format!("{name}.onnx"));
    std::fs::write(&f, &pb).unwrap();
    files.push(f);
    let x = onnx_prune::calib::synthetic(&m.graph, &Default::default(), 3, 99).unwrap();
    let mut sp = OrtSession::new(&pb, None, Device::Cpu, 1).unwrap();
    let mut sz = OrtSession::new(&zb, None, Device::Cpu, 1).unwrap();
    let (yp, yz) = (sp.run(&x).unwrap(), sz.run(&x).unwrap());
    for ((n, a), (_, b)) in yp.iter().zip(&yz) {
        assert_eq!(a.shape(), b.shape(), "{name}: output {n} shape");
        let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
        let scale = b.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
        let err = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        assert!(
            err <= 1e-5 * scale,
            "{name}: pruned vs zeroed max |Δ| {err:.3e} (scale {scale:.3e})"
        );
    }
    count
}

#[test]
fn every_coupling_case_prunes_exactly() {
    use GroupKind::*;
    type Case = (&'static str, &'static [(GroupKind, usize, usize)], usize);
    let expect: &[Case] = &[
        (
            "residual",
            &[
                (Channels, 8, 8),
                (Channels, 8, 8),
                (Channels, 12, 12),
                (Channels, 12, 12),
                (Features, 5, 0),
            ],
            0,
        ),
        (
            "concat",
            &[
                (Channels, 8, 8),
                (Channels, 6, 6),
                (Channels, 4, 4),
                (Channels, 8, 8),
                (Features, 5, 0),
            ],
            0,
        ),
        (
            "split",
            &[(Channels, 12, 12), (Channels, 6, 6), (Features, 5, 0)],
            1,
        ),
        (
            "depthwise",
            &[
                (Channels, 8, 8),
                (Channels, 10, 10),
                (Channels, 8, 8),
                (Features, 5, 0),
            ],
            2,
        ),
        (
            "grouped",
            &[(ConvGroups, 4, 4), (Channels, 8, 8), (Features, 5, 0)],
            1,
        ),
        (
            "flatten_fc",
            &[(Channels, 6, 6), (Features, 16, 16), (Features, 5, 0)],
            0,
        ),
        (
            "se",
            &[
                (Channels, 8, 8),
                (Channels, 4, 4),
                (Channels, 8, 8),
                (Features, 5, 0),
            ],
            0,
        ),
        (
            "attention_separate",
            &[
                (Heads, 4, 4),
                (Features, 16, 0),
                (Features, 32, 32),
                (Features, 5, 0),
            ],
            4,
        ),
        (
            "attention_packed",
            &[
                (Heads, 4, 4),
                (Features, 16, 0),
                (Features, 32, 32),
                (Features, 5, 0),
            ],
            5,
        ),
        (
            "decomposed_bn",
            &[(Channels, 8, 8), (Channels, 8, 8), (Features, 5, 0)],
            0,
        ),
        (
            "nhwc_transposed",
            &[(Channels, 8, 8), (Channels, 8, 8), (Features, 5, 0)],
            0,
        ),
        (
            "mlp",
            &[(Features, 32, 32), (Features, 24, 24), (Features, 5, 0)],
            0,
        ),
        (
            "constants_as_nodes",
            &[
                (Channels, 8, 8),
                (Channels, 8, 8),
                (Channels, 12, 12),
                (Channels, 12, 12),
                (Features, 5, 0),
            ],
            0,
        ),
    ];
    let mut files = Vec::new();
    for &(name, groups, fixes) in expect {
        let m = load(name);
        let (a, probe) = analyze(&m);
        assert_eq!(shape_of(&a), groups, "{name}: groups");
        assert_eq!(
            a.fixes.len(),
            fixes,
            "{name}: dependent attributes / shape constants {:?}",
            a.fixes
        );
        let mut removed = 0;
        for (step, offset) in [(2, 0), (3, 1), (2, 1)] {
            removed += check_removal(name, &m, &a, &probe, step, offset, &mut files);
        }
        println!(
            "{name:<20} {} groups, {} prunable units; 3 removal patterns ({removed} units) exact in onnxruntime",
            a.groups.len(),
            a.prunable_units()
        );
    }
    common::onnx_check_files(&files);
    println!(
        "onnx.checker (full shape inference): {} pruned models pass",
        files.len()
    );
}
