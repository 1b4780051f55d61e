//! The second-order structured machinery on small models: the least-squares refit equals the
//! closed-form solution on a linear layer; an implant reproduces channels that are linear in
//! the kept inputs exactly; HAP's per-unit Hutchinson traces converge to the exact traces; and
//! every criterion, with and without implants and compensation, gives a valid model.

use crate::common;

use ndarray::{ArrayD, IxDyn};
use onnx_prune::analysis::{self, Probe};
use onnx_prune::autodiff::{Curvature, Objective};
use onnx_prune::interp::Feeds;
use onnx_prune::ir::Model;
use onnx_prune::prune::compensate::{CompensateOptions, compensate};
use onnx_prune::prune::implant::Implant;
use onnx_prune::prune::{self, Criterion, StructuredOptions};
use onnx_prune::rewrite::{self, Edit};
use onnx_prune::runtime::{Device, OrtSession};
use onnx_prune::tensor::Tensor;
use prost::Message;

fn coupling(name: &str) -> Model {
    Model::load(
        &common::fixtures()
            .join("coupling")
            .join(format!("{name}.onnx")),
    )
    .unwrap()
}

/// Solves A x = b (A symmetric positive definite, n×n row-major) by Gaussian elimination.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))
            .unwrap();
        for k in 0..n {
            a.swap(c * n + k, p * n + k);
        }
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r * n + c] / a[c * n + c];
            for k in c..n {
                a[r * n + k] -= f * a[c * n + k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * n + r];
    }
    x
}

#[test]
fn least_squares_refit_equals_the_closed_form() {
    // mlp: fc1 (Gemm 20→32) → Relu → fc2 (Gemm 32→24, transB = 0) → …; remove 8 fc1 units and
    // check fc2's refit against normal equations solved here from the same activations.
    let m = coupling("mlp");
    let g = &m.graph;
    let feeds = onnx_prune::calib::synthetic(g, &Default::default(), 96, 5).unwrap();
    let probe = Probe::run(g, common::head(feeds.clone(), 2)).unwrap();
    let a = analysis::analyze(g, &probe, Default::default());
    let mut edit = Edit::none(&a);
    let removed: Vec<usize> = (0..32).filter(|i| i % 4 == 1).collect();
    for &u in &removed {
        edit.removed[0][u] = true;
    }
    let o = CompensateOptions {
        refit: true,
        bn_recalibrate: false,
        damp: 1e-12,
        max_columns: 1 << 20,
        max_samples: 1000,
        micro_batch: 32,
        snows: None,
    };
    let (w, rep) = compensate(g, &a, &edit, &feeds, &o, &mut |_, _| {}).unwrap();
    assert_eq!(rep.refits.len(), 1, "only fc2 consumes fc1's units");
    // Closed form: X = relu(fc1(x)) at the kept units plus a bias column, Y = fc2(X_dense).
    let fc2 = g.nodes.iter().position(|n| n.name.contains("fc2")).unwrap();
    let x_id = g.nodes[fc2].inputs[0].unwrap();
    let (w2_id, b2_id) = (
        g.nodes[fc2].inputs[1].unwrap(),
        g.nodes[fc2].inputs[2].unwrap(),
    );
    let vals = onnx_prune::interp::Engine::<f64>::exact(g)
        .unwrap()
        .run_all(
            feeds
                .iter()
                .map(|(n, t)| (n.clone(), t.convert()))
                .collect(),
        )
        .unwrap();
    let x = vals[x_id].as_ref().unwrap().as_float().unwrap().to_owned();
    let w2 = g.weights[&w2_id]
        .tensor
        .convert::<f64>()
        .as_float()
        .unwrap()
        .to_owned(); // [32, 24]
    let b2 = g.weights[&b2_id].tensor.to_f64_vec();
    let kept: Vec<usize> = (0..32).filter(|i| !removed.contains(i)).collect();
    let k = kept.len() + 1;
    let n = x.shape()[0];
    let (mut gram, mut cross) = (vec![0.0; k * k], vec![0.0; 24 * k]);
    for s in 0..n {
        let mut row: Vec<f64> = kept.iter().map(|&j| x[[s, j]]).collect();
        row.push(1.0);
        for o_ in 0..24 {
            let y: f64 = (0..32).map(|j| x[[s, j]] * w2[[j, o_]]).sum::<f64>() + b2[o_];
            for i in 0..k {
                cross[o_ * k + i] += y * row[i];
            }
        }
        for i in 0..k {
            for j in 0..k {
                gram[i * k + j] += row[i] * row[j];
            }
        }
    }
    // The refit is ridge least squares pulled toward the pruned weights W₀ (kept rows of fc2,
    // its bias) at the damping λ it chose on held-out columns and reports:
    // (G + λI) w = C + λ w₀.
    let lambda = rep.refits[0].damping;
    assert!(lambda > 0.0 && rep.refits[0].skipped.is_none());
    for i in 0..k {
        gram[i * k + i] += lambda;
    }
    for o_ in 0..24 {
        for (t, &j) in kept.iter().enumerate() {
            cross[o_ * k + t] += lambda * w2[[j, o_]];
        }
        cross[o_ * k + k - 1] += lambda * b2[o_];
    }
    let got_w = w[&w2_id].as_float().unwrap().mapv(|v| v as f64);
    let got_b = w[&b2_id].to_f64_vec();
    let mut worst = 0.0f64;
    for o_ in 0..24 {
        let sol = solve(gram.clone(), cross[o_ * k..(o_ + 1) * k].to_vec(), k);
        for (t, &j) in kept.iter().enumerate() {
            worst = worst.max((sol[t] - got_w[[j, o_]]).abs());
        }
        worst = worst.max((sol[k - 1] - got_b[o_]).abs());
        for &j in &removed {
            assert_eq!(got_w[[j, o_]], 0.0, "removed inputs get zero weight");
        }
    }
    println!(
        "fc2 refit vs closed form: max |Δ| {worst:.2e}; relative output error {:.4} → {:.4}",
        rep.refits[0].error_before, rep.refits[0].error_after
    );
    assert!(
        worst < 1e-4,
        "refit differs from the closed-form solution by {worst:.3e}"
    );
    assert!(rep.refits[0].error_after < rep.refits[0].error_before);
}

#[test]
fn implants_reproduce_channels_linear_in_the_kept_inputs() {
    // residual: block1/conv1 is a 3×3 conv (pad 1). Make 8 of its output channels 1×1-equivalent
    // (centre tap only): an implant must then reproduce them exactly, and the rewritten model
    // (k×k conv ‖ 1×1 implant → Concat) must equal the modified original in onnxruntime.
    let mut m = coupling("residual");
    let conv = m
        .graph
        .nodes
        .iter()
        .position(|n| n.name == "block1/conv1")
        .unwrap();
    let wid = m.graph.nodes[conv].inputs[1].unwrap();
    let mut wt = m.graph.weights[&wid].tensor.clone();
    let chans: Vec<usize> = vec![0, 1, 2, 3, 4, 5, 6, 7];
    if let onnx_prune::tensor::Data::Float(a) = &mut wt.data {
        for &c in &chans {
            for i in 0..8 {
                for (y, x) in [
                    (0, 0),
                    (0, 1),
                    (0, 2),
                    (1, 0),
                    (1, 2),
                    (2, 0),
                    (2, 1),
                    (2, 2),
                ] {
                    a[[c, i, y, x]] = 0.0;
                }
            }
        }
    }
    // Put the modified weight in the IR and in the source proto, so both agree.
    let gp = m.source.proto.graph.as_mut().unwrap();
    let pos = gp
        .initializer
        .iter()
        .position(|t| t.name() == m.graph.name(wid))
        .unwrap();
    gp.initializer[pos] = rewrite::tensors::with_data(&gp.initializer[pos], &wt);
    m.graph.weights.get_mut(&wid).unwrap().tensor = wt;
    let g = &m.graph;
    let feeds = onnx_prune::calib::synthetic(g, &Default::default(), 24, 3).unwrap();
    let probe = Probe::run(g, common::head(feeds.clone(), 2)).unwrap();
    let a = analysis::analyze(g, &probe, Default::default());
    let gi = a
        .groups
        .iter()
        .position(|grp| grp.producers == vec![conv])
        .unwrap();
    assert!(prune::implant::ineligible(g, &a, gi).is_none());
    let mut edit = Edit::none(&a);
    edit.implants = vec![Implant {
        group: gi,
        producer: conv,
        units: chans.clone(),
        rank: None,
    }];
    let o = CompensateOptions {
        refit: true,
        bn_recalibrate: false,
        damp: 1e-10,
        ..Default::default()
    };
    let (w, rep) = compensate(g, &a, &edit, &feeds, &o, &mut |_, _| {}).unwrap();
    assert_eq!(rep.implants.len(), 1);
    println!(
        "implant relative error {:.2e} ({} params for {})",
        rep.implants[0].error, rep.implants[0].params, rep.implants[0].params_replaced
    );
    assert!(
        rep.implants[0].error < 1e-4,
        "implant error {}",
        rep.implants[0].error
    );
    edit.replace = w;
    let pruned = rewrite::apply(&m, &a, &probe, &edit).unwrap();
    let ops: Vec<&str> = pruned
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type())
        .collect();
    assert_eq!(ops.iter().filter(|o| **o == "Concat").count(), 1, "{ops:?}");
    let bytes = pruned.encode_to_vec();
    let dir = common::scratch("implant");
    let f = dir.join("implanted.onnx");
    std::fs::write(&f, &bytes).unwrap();
    common::onnx_check_files(&[f]);
    let x = onnx_prune::calib::synthetic(g, &Default::default(), 4, 77).unwrap();
    let err = ort_difference(&bytes, &m.source.proto.encode_to_vec(), &x);
    println!("implanted model vs original: max relative difference {err:.2e}");
    assert!(err < 1e-4, "{err}");
}

/// Max |a − b| / max |b| of the first outputs of two models in onnxruntime.
fn ort_difference(a: &[u8], b: &[u8], x: &Feeds<f32>) -> f64 {
    let ya = OrtSession::new(a, None, Device::Cpu, 1)
        .unwrap()
        .run(x)
        .unwrap();
    let yb = OrtSession::new(b, None, Device::Cpu, 1)
        .unwrap()
        .run(x)
        .unwrap();
    let (p, q) = (ya[0].1.to_f64_vec(), yb[0].1.to_f64_vec());
    let scale = q.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    p.iter()
        .zip(&q)
        .map(|(u, v)| (u - v).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn rank_r_implants_reproduce_linear_units_of_that_rank() {
    // mlp: fc1 (Gemm, transB, W [32, 20]) and fc2 (Gemm, W [32, 24]). Make 8 units of each
    // rank 2 on their inputs: rank-2 implants must reproduce them exactly, and the rewritten
    // model (kept rows ‖ MatMul·MatMul/Gemm → Concat, fc1's implanted units last in fc2's
    // inputs) must equal the modified original in onnxruntime.
    let mut m = coupling("mlp");
    let units: Vec<usize> = (0..8).collect();
    let mut rng = common::Rng::new(5);
    let mut producers = Vec::new();
    for (name, trans_b) in [("fc1", true), ("fc2", false)] {
        let node = m.graph.nodes.iter().position(|n| n.name == name).unwrap();
        let wid = m.graph.nodes[node].inputs[1].unwrap();
        let mut wt = m.graph.weights[&wid].tensor.clone();
        if let onnx_prune::tensor::Data::Float(a) = &mut wt.data {
            let k = if trans_b { a.shape()[1] } else { a.shape()[0] };
            let basis: Vec<Vec<f32>> = (0..2)
                .map(|_| (0..k).map(|_| rng.uniform() - 0.5).collect())
                .collect();
            for &c in &units {
                let (u, v) = (rng.uniform() - 0.5, rng.uniform() - 0.5);
                for i in 0..k {
                    let w = u * basis[0][i] + v * basis[1][i];
                    if trans_b {
                        a[[c, i]] = w;
                    } else {
                        a[[i, c]] = w;
                    }
                }
            }
        }
        let gp = m.source.proto.graph.as_mut().unwrap();
        let pos = gp
            .initializer
            .iter()
            .position(|t| t.name() == m.graph.name(wid))
            .unwrap();
        gp.initializer[pos] = rewrite::tensors::with_data(&gp.initializer[pos], &wt);
        m.graph.weights.get_mut(&wid).unwrap().tensor = wt;
        producers.push(node);
    }
    let g = &m.graph;
    let feeds = onnx_prune::calib::synthetic(g, &Default::default(), 256, 3).unwrap();
    let probe = Probe::run(g, common::head(feeds.clone(), 2)).unwrap();
    let a = analysis::analyze(g, &probe, Default::default());
    let mut edit = Edit::none(&a);
    for &p in &producers {
        let gi = a
            .groups
            .iter()
            .position(|grp| grp.producers == vec![p])
            .unwrap();
        assert!(prune::implant::ineligible(g, &a, gi).is_none());
        let mut imp = prune::implant::implant_for(g, &a, gi, units.clone(), None);
        assert_eq!(
            imp.rank,
            Some(1),
            "the default rank for 8 units of 20–32 inputs"
        );
        imp.rank = Some(2);
        edit.implants.push(imp);
    }
    let o = CompensateOptions {
        refit: true,
        bn_recalibrate: false,
        damp: 1e-10,
        ..Default::default()
    };
    let (w, rep) = compensate(g, &a, &edit, &feeds, &o, &mut |_, _| {}).unwrap();
    assert_eq!(rep.implants.len(), 2);
    for row in &rep.implants {
        println!(
            "{}: {} relative error {:.2e} ({} params for {})",
            row.layer, row.kind, row.error, row.params, row.params_replaced
        );
        assert_eq!(row.kind, "rank 2");
        assert!(row.error < 1e-4, "implant error {}", row.error);
        assert!(row.params < row.params_replaced);
    }
    edit.replace = w;
    let pruned = rewrite::apply(&m, &a, &probe, &edit).unwrap();
    let ops: Vec<&str> = pruned
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type())
        .collect();
    assert_eq!(ops.iter().filter(|o| **o == "Concat").count(), 2, "{ops:?}");
    let bytes = pruned.encode_to_vec();
    let f = common::scratch("implant-rank").join("rank-implanted.onnx");
    std::fs::write(&f, &bytes).unwrap();
    common::onnx_check_files(&[f]);
    let x = onnx_prune::calib::synthetic(g, &Default::default(), 16, 77).unwrap();
    let err = ort_difference(&bytes, &m.source.proto.encode_to_vec(), &x);
    println!("rank-implanted model vs original: max relative difference {err:.2e}");
    assert!(err < 1e-4, "{err}");

    // At rank 1 the same units are not reproduced: the test can fail.
    let mut edit1 = Edit::none(&a);
    edit1.implants = edit.implants.clone();
    for imp in &mut edit1.implants {
        imp.rank = Some(1);
    }
    let (_, rep1) = compensate(g, &a, &edit1, &feeds, &o, &mut |_, _| {}).unwrap();
    assert!(
        rep1.implants.iter().all(|r| r.error > 1e-3),
        "{:?}",
        rep1.implants
    );
}

#[test]
fn hap_unit_traces_converge_to_the_exact_traces() {
    // mlp (1589 weights): the exact per-unit trace Σ_{i∈u} H_ii from unit-vector HVPs, against
    // HAP's Hutchinson estimate with many probes.
    let m = coupling("mlp");
    let g = &m.graph;
    let feeds: Feeds<f32> = onnx_prune::calib::synthetic(g, &Default::default(), 16, 9).unwrap();
    let probe = Probe::run(g, common::head(feeds.clone(), 2)).unwrap();
    let a = analysis::analyze(g, &probe, Default::default());
    let (obj, _) = prune::second_order::objective(g, &feeds, None).unwrap();
    use prune::second_order::HapCurvature;
    let est_exact = prune::second_order::hap(
        g,
        &a,
        &feeds,
        &obj,
        HapCurvature::Exact,
        600,
        1,
        16,
        &mut |_, _| {},
    )
    .unwrap();
    // At the dense weights the KL objective's Hessian is its Gauss-Newton matrix, so the
    // output-space sketch converges to the same traces.
    let est_gn = prune::second_order::hap(
        g,
        &a,
        &feeds,
        &obj,
        HapCurvature::GaussNewton,
        600,
        2,
        16,
        &mut |_, _| {},
    )
    .unwrap();
    // Exact diagonal of the Hessian over fc1/fc2 weights (the prunable layers' weights).
    let lw: Vec<usize> = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Gemm" | "MatMul"))
        .filter_map(|n| n.inputs[1])
        .collect();
    let f64feeds: Feeds<f64> = feeds
        .iter()
        .map(|(n, t)| (n.clone(), t.convert()))
        .collect();
    let mut cur = Curvature::<f64>::new(g, 16).unwrap();
    let obj64 = match &obj {
        Objective::Kl {
            value,
            teacher,
            kind,
        } => Objective::Kl {
            value: *value,
            teacher: teacher.clone(),
            kind: *kind,
        },
        o => o.clone(),
    };
    let mut diag: std::collections::HashMap<usize, ArrayD<f64>> = Default::default();
    for &w in &lw {
        let shape = g.weights[&w].tensor.shape().to_vec();
        let n: usize = shape.iter().product();
        let mut d = vec![0.0; n];
        let zeros: Vec<ArrayD<f64>> = lw
            .iter()
            .map(|&x| ArrayD::zeros(IxDyn(g.weights[&x].tensor.shape())))
            .collect();
        let wi = lw.iter().position(|&x| x == w).unwrap();
        for (i, di) in d.iter_mut().enumerate() {
            let mut v = zeros.clone();
            v[wi].as_slice_mut().unwrap()[i] = 1.0;
            let h = cur.hvp(&f64feeds, &obj64, &lw, &v).unwrap();
            *di = h.hv[wi].as_slice().unwrap()[i];
        }
        diag.insert(w, ArrayD::from_shape_vec(IxDyn(&shape), d).unwrap());
    }
    let (mut worst, mut worst_gn) = (0.0f64, 0.0f64);
    let mut checked = 0;
    for (gi, grp) in a.groups.iter().enumerate() {
        for (ui, u) in grp.units.iter().enumerate() {
            let (mut t, mut w2, mut n) = (0.0, 0.0, 0usize);
            for s in u.slices.iter().filter(|s| lw.contains(&s.weight)) {
                let d = &diag[&s.weight];
                let wv = g.weights[&s.weight].tensor.convert::<f64>();
                let wv = wv.as_float().unwrap();
                t += d.index_axis(ndarray::Axis(s.axis), s.index).sum();
                w2 += wv
                    .index_axis(ndarray::Axis(s.axis), s.index)
                    .iter()
                    .map(|x| x * x)
                    .sum::<f64>();
                n += d.index_axis(ndarray::Axis(s.axis), s.index).len();
            }
            if n == 0 {
                continue;
            }
            let exact = t / n as f64 * w2;
            let rel = |e: f64| (e - exact).abs() / exact.abs().max(1e-12);
            worst = worst.max(rel(est_exact[gi][ui]));
            worst_gn = worst_gn.max(rel(est_gn[gi][ui]));
            assert!(est_gn[gi][ui] >= 0.0);
            checked += 1;
        }
    }
    println!(
        "HAP sensitivities of {checked} units vs exact, worst relative error: Hutchinson z·Hz (600 probes) {worst:.3}, Gauss-Newton sketch (600 probes) {worst_gn:.3}"
    );
    assert!(checked > 50);
    assert!(
        worst < 0.25,
        "Hutchinson unit traces far from exact: {worst}"
    );
    assert!(
        worst_gn < 0.25,
        "Gauss-Newton unit traces far from exact: {worst_gn}"
    );
}

/// The first `n` MNIST calibration images, as feeds and as unlabelled calibration = eval data.
fn mnist_calib(n: usize) -> (Feeds<f32>, prune::Data) {
    let feeds = common::head(
        onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap(),
        n,
    );
    let data = prune::Data {
        calib: feeds.clone(),
        calib_labels: None,
        eval: feeds.clone(),
        eval_labels: None,
        source: "mnist_calib".into(),
        synthetic: false,
    };
    (feeds, data)
}

#[test]
fn every_criterion_with_and_without_implants_and_compensation_gives_a_valid_model() {
    let dir = common::scratch("criteria");
    let mut files = Vec::new();
    for name in ["resnet", "vit"] {
        let m = Model::load(&common::fixtures().join(format!("{name}.onnx"))).unwrap();
        let (_, data) = mnist_calib(64);
        for c in [
            Criterion::Magnitude,
            Criterion::Taylor,
            Criterion::Fisher,
            Criterion::Hap,
            Criterion::SospH,
        ] {
            for (implant, comp) in [(true, true), (false, true), (false, false)] {
                let o = StructuredOptions {
                    criterion: c,
                    implant_ratio: implant.then_some(0.1),
                    compensation: CompensateOptions {
                        refit: comp,
                        bn_recalibrate: comp,
                        ..Default::default()
                    },
                    latency_runs: 0,
                    hessian_samples: 16,
                    ..Default::default()
                };
                let out = prune::structured::run(&m, &data, &o, &mut |_, _, _| {}).unwrap();
                assert!(out.report.params_removed > 0.0, "{name} {c}");
                let cos = out.report.validation.outputs[0].cosine;
                println!(
                    "{name:<8} {c:<10} implants {implant:<5} compensation {comp:<5}: −{:.1}% params, cosine to dense {cos:.4}, implants {}",
                    100.0 * out.report.params_removed / out.report.before.params as f64,
                    out.report.compensation.implants.len()
                );
                let f = dir.join(format!("{name}-{c}-{implant}-{comp}.onnx"));
                std::fs::write(&f, &out.bytes).unwrap();
                files.push(f);
            }
        }
    }
    common::onnx_check_files(&files);
    let _ = Tensor::<f32>::i64_vec;
}

#[test]
fn snows_refit_keeps_only_steps_that_help_on_held_out_samples() {
    // `--refit snows`: after the least-squares sweep, each consumer gets Newton-CG steps on the
    // dense outputs a few operations ahead, fit on three quarters of the compensation samples
    // and kept only when the last quarter's horizon loss and output error both drop. So the
    // pruned model is never further from the dense one on those samples than the
    // least-squares result it starts from.
    let m = Model::load(&common::fixtures().join("mobilenet.onnx")).unwrap();
    let (feeds, data) = mnist_calib(128);
    let run = |snows: bool| {
        let o = StructuredOptions {
            ratio: 0.5,
            criterion: Criterion::Magnitude,
            compensation: CompensateOptions {
                snows: snows.then(onnx_prune::sparse::snows::SnowsOptions::default),
                ..Default::default()
            },
            latency_runs: 0,
            ..Default::default()
        };
        prune::structured::run(&m, &data, &o, &mut |_, _, _| {}).unwrap()
    };
    let (ls, sn) = (run(false), run(true));
    let c = &sn.report.compensation;
    assert!(ls.report.compensation.snows.is_empty());
    assert_eq!(
        c.snows.len(),
        c.refits.len(),
        "one SNOWS row per refit layer"
    );
    let kept: Vec<_> = c.snows.iter().filter(|s| s.kept).collect();
    assert!(!kept.is_empty(), "no SNOWS step helped: {:?}", c.snows);
    for s in &kept {
        assert!(s.loss_after < s.loss_before, "{s:?}");
        assert!(s.heldout_after < s.heldout_before, "{s:?}");
        assert!(!s.horizon.is_empty() && s.horizon.len() <= 6, "{s:?}");
    }
    // The held-out quarter of the 128 compensation samples.
    let check = onnx_prune::autodiff::curvature::slice_feeds(&feeds, 96..128);
    let err = |bytes: &[u8]| common::output_sq_error(&m, bytes, &check);
    let (e_ls, e_sn) = (err(&ls.bytes), err(&sn.bytes));
    eprintln!(
        "held-out output error: least squares {e_ls:.3}, + SNOWS {e_sn:.3} ({} of {} layers kept)",
        kept.len(),
        c.snows.len()
    );
    assert!(
        e_sn < e_ls,
        "SNOWS made the held-out outputs worse: {e_sn} ≥ {e_ls}"
    );
    let dir = common::scratch("snows-refit");
    let f = dir.join("mobilenet-snows.onnx");
    std::fs::write(&f, &sn.bytes).unwrap();
    common::onnx_check_files(&[f]);
}

#[test]
fn refits_without_held_out_columns_are_not_applied() {
    // A Gemm sees one column per sample. With 3 calibration samples in one micro-batch no
    // column is held out, so no refit can be checked and none is applied (the pruned weights
    // stay, with the reason). With micro-batches of one sample (a model with a fixed batch of
    // 1), every fourth micro-batch is held out whole, and refits are checked and applied.
    let m = Model::load(&common::fixtures().join("mlp.onnx")).unwrap();
    let run = |n: usize, micro_batch: usize| {
        let (_, data) = mnist_calib(n);
        let o = StructuredOptions {
            ratio: 0.5,
            criterion: Criterion::Magnitude,
            compensation: CompensateOptions {
                micro_batch,
                bn_recalibrate: false,
                ..Default::default()
            },
            latency_runs: 0,
            ..Default::default()
        };
        prune::structured::run(&m, &data, &o, &mut |_, _, _| {})
            .unwrap()
            .report
            .compensation
            .refits
    };
    let few = run(3, 32);
    assert!(!few.is_empty());
    for r in &few {
        let why = r.skipped.as_deref().unwrap_or("");
        assert!(why.contains("no held-out calibration columns"), "{r:?}");
        assert_eq!(r.error_after, r.error_before, "{r:?}");
    }
    let single = run(64, 1);
    assert!(
        single
            .iter()
            .any(|r| r.skipped.is_none() && r.error_after < r.error_before),
        "no refit applied with 64 single-sample micro-batches: {single:?}"
    );
}
