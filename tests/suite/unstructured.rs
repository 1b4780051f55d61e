//! Unstructured and N:M pruning: every method × mask on the fixtures and on real models (the
//! Constant-weight PP-OCR classifier, MiniLM's MatMuls, PP-LCNet's depthwise convs) gives a
//! valid model with exactly the requested sparsity or pattern; second-order updates beat
//! plain masking; SNOWS' horizon is found on the graph; runs are deterministic.

use crate::common;

use onnx_prune::interp::Feeds;
use onnx_prune::ir::Model;
use onnx_prune::onnx::ModelProto;
use onnx_prune::prune::Data;
use onnx_prune::sparse::mask::{Allocation, Pattern, count, nm_groups};
use onnx_prune::sparse::saliency::MaskKind;
use onnx_prune::sparse::snows::SnowsOptions;
use onnx_prune::sparse::woodfisher::FisherOptions;
use onnx_prune::sparse::{self, Method, UnstructuredOptions};
use prost::Message;
use std::path::PathBuf;

fn data(feeds: Feeds<f32>) -> Data {
    Data {
        calib: feeds.clone(),
        calib_labels: None,
        eval: feeds,
        eval_labels: None,
        source: "test".into(),
        synthetic: false,
    }
}

fn quick(pattern: Pattern, mask: MaskKind, method: Method) -> UnstructuredOptions {
    UnstructuredOptions {
        pattern,
        mask,
        method,
        samples: 32,
        hessian_samples: 16,
        probes: 2,
        latency_runs: 0,
        fisher: FisherOptions {
            samples: 12,
            ..Default::default()
        },
        snows: SnowsOptions {
            horizon: 3,
            newton_steps: 1,
            cg_iters: 3,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Every written weight of a pruned layer: (name, shape, values).
fn weights_of(bytes: &[u8], names: &[String]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    // Decoded in memory: tests run in parallel, and a shared scratch file raced (one test's
    // `scratch` removed the folder while another wrote into it).
    ModelProto::decode(bytes).unwrap();
    let model = Model::from_loaded(
        onnx_prune::onnx::decode_model(bytes.to_vec().into(), std::path::Path::new("pruned.onnx"))
            .unwrap(),
    )
    .unwrap();
    names
        .iter()
        .map(|n| {
            let id = model.graph.by_name[n];
            let t = &model.graph.weights[&id].tensor;
            (
                n.clone(),
                t.shape().to_vec(),
                t.to_f64_vec().iter().map(|&v| v as f32).collect(),
            )
        })
        .collect()
}

/// Checks the pattern in the written model: exact per-layer (uniform) or total (global)
/// counts of zeros at the masked positions, or N of every M kept along input channels.
fn check_pattern(out: &sparse::Outcome, pattern: Pattern, alloc: Allocation) {
    let names: Vec<String> = out.report.layers.iter().map(|r| r.weight.clone()).collect();
    let ws = weights_of(&out.bytes, &names);
    let mut total = (0usize, 0usize);
    for ((row, (name, shape, w)), (_, _, keep)) in out.report.layers.iter().zip(&ws).zip(&out.masks)
    {
        assert_eq!(w.len(), keep.len(), "{name}");
        for (v, k) in w.iter().zip(keep) {
            if !k {
                assert_eq!(*v, 0.0, "{name}: a pruned weight is not exactly zero");
            }
        }
        let pruned = keep.iter().filter(|k| !**k).count();
        assert_eq!(pruned, row.pruned, "{name}");
        assert!(row.zeros >= pruned);
        total.0 += pruned;
        total.1 += w.len();
        match pattern {
            Pattern::Sparsity(s) if alloc == Allocation::Uniform => {
                assert_eq!(pruned, count(w.len(), s), "{name}: {pruned} of {}", w.len());
            }
            Pattern::NM(n, m) => {
                // Rows × cols layout: Conv/Gemm(transB) weights are [out, in…], MatMul [in, out].
                let (rows, cols, taps, out_major) = (row.rows, row.cols, row.taps, row.out_major);
                assert_eq!(rows * cols, shape.iter().product::<usize>());
                let at = |r: usize, c: usize| {
                    if out_major {
                        r * cols + c
                    } else {
                        c * rows + r
                    }
                };
                let groups = nm_groups(cols, taps, m);
                assert!(!groups.is_empty() || cols / taps < m, "{name}");
                for r in 0..rows {
                    for g in &groups {
                        let kept = g.iter().filter(|&&c| keep[at(r, c)]).count();
                        assert_eq!(kept, n, "{name}: row {r} keeps {kept} of a group of {m}");
                    }
                }
            }
            _ => {}
        }
    }
    if let (Pattern::Sparsity(s), Allocation::Global | Allocation::Sensitivity) = (pattern, alloc) {
        assert_eq!(total.0, count(total.1, s), "global total");
    }
}

#[test]
fn every_method_and_mask_on_the_fixtures_gives_exact_sparsity_and_valid_models() {
    let dir = common::scratch("unstructured");
    let mut files: Vec<PathBuf> = Vec::new();
    let calib = common::head(
        onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap(),
        32,
    );
    for name in ["resnet", "mobilenet", "vit", "mlp"] {
        let m = Model::load(&common::fixtures().join(format!("{name}.onnx"))).unwrap();
        let d = data(calib.clone());
        let mut mse = std::collections::BTreeMap::new();
        for mask in [
            MaskKind::Magnitude,
            MaskKind::Obs,
            MaskKind::FisherDiag,
            MaskKind::HutchinsonDiag,
            MaskKind::Woodfisher,
        ] {
            for method in [Method::None, Method::Obs, Method::Woodfisher, Method::Snows] {
                for pattern in [Pattern::Sparsity(0.7), Pattern::NM(2, 4)] {
                    // SNOWS is the slow one: one pattern per mask keeps the test short.
                    if method == Method::Snows
                        && (pattern != Pattern::Sparsity(0.7) || name == "mobilenet")
                    {
                        continue;
                    }
                    let o = quick(pattern, mask, method);
                    let out = sparse::run(&m, &d, &o, &mut |_, _, _| {})
                        .unwrap_or_else(|e| panic!("{name} {mask} {method} {pattern:?}: {e}"));
                    let alloc = o.allocation.unwrap_or(Allocation::Uniform);
                    check_pattern(&out, pattern, alloc);
                    let cos = out.report.validation.outputs[0].cosine;
                    assert!(cos.is_finite(), "{name} {mask} {method}");
                    if pattern == Pattern::Sparsity(0.7) {
                        let err: f64 = out.report.layers.iter().filter_map(|r| r.error_after).sum();
                        mse.insert((mask.to_string(), method.to_string()), (err, cos));
                    }
                    if method != Method::None || mask == MaskKind::Magnitude {
                        let f = dir.join(format!(
                            "{name}-{mask}-{method}-{}.onnx",
                            match pattern {
                                Pattern::NM(..) => "nm",
                                _ => "u",
                            }
                        ));
                        std::fs::write(&f, &out.bytes).unwrap();
                        files.push(f);
                    }
                }
            }
        }
        // The layer-wise update lowers every mask's reconstruction error.
        for mask in [
            "magnitude",
            "obs",
            "fisher-diag",
            "hutchinson-diag",
            "woodfisher",
        ] {
            let (none, obs) = (
                mse[&(mask.to_string(), "none".to_string())],
                mse[&(mask.to_string(), "obs".to_string())],
            );
            println!(
                "{name:<9} {mask:<16} Σ layer error: none {:.3} (cosine {:.4}) → obs {:.3} (cosine {:.4})",
                none.0, none.1, obs.0, obs.1
            );
            assert!(
                obs.0 < none.0,
                "{name} {mask}: obs {} vs none {}",
                obs.0,
                none.0
            );
        }
    }
    common::onnx_check_files(&files);
}

#[test]
fn real_models_constant_weights_matmuls_and_depthwise_convs() {
    let dir = common::scratch("unstructured-real");
    let mut files = Vec::new();
    for name in ["ppocr_mobile_cls", "minilm_l3", "pp_lcnet_orientation"] {
        let m = Model::load(&common::model_path(name)).unwrap();
        let calib = common::head(common::real_inputs(name, "calib"), 16);
        let d = data(calib);
        for (pattern, mask, method) in [
            (Pattern::Sparsity(0.5), MaskKind::Magnitude, Method::Obs),
            (Pattern::NM(2, 4), MaskKind::Obs, Method::Obs),
            (
                Pattern::Sparsity(0.5),
                MaskKind::Woodfisher,
                Method::Woodfisher,
            ),
        ] {
            let mut o = quick(pattern, mask, method);
            o.samples = 16;
            o.fisher.samples = 16;
            let out = sparse::run(&m, &d, &o, &mut |_, _, _| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check_pattern(&out, pattern, Allocation::Uniform);
            assert!(!out.report.layers.is_empty(), "{name}: nothing pruned");
            let cos = out.report.validation.outputs[0].cosine;
            println!(
                "{name:<22} {pattern:?} {mask}: {} layers, cosine to dense {cos:.4}",
                out.report.layers.len()
            );
            assert!(cos > 0.5, "{name}: cosine {cos}");
            let f = dir.join(format!(
                "{name}-{}-{method}.onnx",
                if matches!(pattern, Pattern::NM(..)) {
                    "nm"
                } else {
                    "u"
                }
            ));
            std::fs::write(&f, &out.bytes).unwrap();
            files.push(f);
        }
    }
    common::onnx_check_files(&files);
}

#[test]
fn snows_horizon_reaches_through_the_residual_add_and_captures_the_shortcut() {
    let m = Model::load(&common::fixtures().join("resnet.onnx")).unwrap();
    let g = &m.graph;
    let node = g
        .nodes
        .iter()
        .position(|n| n.name == "/layer3/conv1/Conv")
        .unwrap();
    let (targets, sources) = sparse::snows::horizon(g, node, 5).unwrap();
    let names: Vec<&str> = targets.iter().map(|&t| g.name(t)).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(
        names[0].contains("layer3/conv1"),
        "the layer's own output first: {names:?}"
    );
    // conv1 → bn1 → relu → conv2 → bn2 → add(+shortcut) → relu: the add reads the block input.
    let x = g.nodes[node].inputs[0].unwrap();
    assert!(sources.contains(&x));
    assert!(sources.iter().all(|&s| !g.weights.contains_key(&s)));
}

#[test]
fn snows_recomputes_shape_vectors_inside_its_horizon() {
    // attention_separate reshapes q/k/v to heads with a target built from Shape(x)
    // (fixtures/coupling/README.md), as PP-OCRv4 rec does: such a vector has no batch axis, so
    // SNOWS must recompute it in the region from a captured activation, not capture it (its
    // capture joined along axis 0 failed: "inputs disagree on the batch size").
    let m = Model::load(&common::fixtures().join("coupling/attention_separate.onnx")).unwrap();
    let g = &m.graph;
    let n = 20;
    let calib = onnx_prune::calib::synthetic(g, &Default::default(), n, 5).unwrap();
    let mut layers = 0;
    for (node, nd) in g.nodes.iter().enumerate() {
        if !matches!(nd.op, Ok(onnx_prune::ir::Op::MatMul)) {
            continue;
        }
        let (_, sources) = sparse::snows::horizon(g, node, 4).unwrap();
        let captured = onnx_prune::autodiff::capture(g, &calib, &sources, 8).unwrap();
        for (name, t) in &captured {
            assert_eq!(
                t.shape()[0],
                n,
                "{}: source {name} {:?}",
                nd.name,
                t.shape()
            );
        }
        layers += 1;
    }
    assert!(layers >= 4, "{layers} MatMuls");
    let mut o = quick(Pattern::Sparsity(0.5), MaskKind::Magnitude, Method::Snows);
    o.selection.skip_first_last = false;
    o.samples = n;
    // The sweep runs SNOWS at the pass's micro-batch (o.snows' own is overridden).
    o.micro_batch = 8;
    let out = sparse::run(&m, &data(calib), &o, &mut |_, _, _| {}).unwrap();
    let refit = out
        .report
        .layers
        .iter()
        .filter(|l| l.snows.is_some())
        .count();
    assert!(refit >= 4, "{refit} layers refit by SNOWS");
}

#[test]
fn same_seed_same_bytes_and_the_obs_update_beats_masking_alone() {
    let m = Model::load(&common::fixtures().join("mlp.onnx")).unwrap();
    let calib = common::head(
        onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap(),
        64,
    );
    let d = data(calib);
    let o = quick(Pattern::Sparsity(0.8), MaskKind::FisherDiag, Method::Obs);
    let a = sparse::run(&m, &d, &o, &mut |_, _, _| {}).unwrap();
    let b = sparse::run(&m, &d, &o, &mut |_, _, _| {}).unwrap();
    assert_eq!(a.bytes, b.bytes, "same inputs and seed give the same file");
    let none = sparse::run(
        &m,
        &d,
        &quick(Pattern::Sparsity(0.8), MaskKind::Magnitude, Method::None),
        &mut |_, _, _| {},
    )
    .unwrap();
    let obs = sparse::run(
        &m,
        &d,
        &quick(Pattern::Sparsity(0.8), MaskKind::Magnitude, Method::Obs),
        &mut |_, _, _| {},
    )
    .unwrap();
    let cos = |o: &sparse::Outcome| o.report.validation.outputs[0].cosine;
    println!(
        "mlp 80%: magnitude alone cosine {:.4}, magnitude + obs {:.4}, fisher-diag + obs {:.4}",
        cos(&none),
        cos(&obs),
        cos(&a)
    );
    assert!(cos(&obs) > cos(&none));
    // A global threshold: exact total, uneven layers.
    let mut og = quick(Pattern::Sparsity(0.8), MaskKind::Magnitude, Method::Obs);
    og.allocation = Some(Allocation::Global);
    og.selection.skip_first_last = false;
    let glob = sparse::run(&m, &d, &og, &mut |_, _, _| {}).unwrap();
    check_pattern(&glob, Pattern::Sparsity(0.8), Allocation::Global);
    let sp: Vec<f64> = glob.report.layers.iter().map(|r| r.sparsity).collect();
    assert!(sp.iter().any(|&s| (s - 0.8).abs() > 0.01), "{sp:?}");
}

/// The WoodFisher anchor's setting (MLPNet, 95 % of all three layers, global selection, 100
/// gradients, λ = 1e-5): the OBS update with the Woodbury-inverted Fisher keeps more held-out
/// accuracy than magnitude pruning, and exactly 95 % of the weights are zero.
#[test]
fn woodfisher_on_mlpnet_at_95_percent_beats_magnitude() {
    let m = Model::load(&common::fixtures().join("mlpnet.onnx")).unwrap();
    let calib = onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap();
    let labels =
        onnx_prune::calib::load_labels(&common::fixtures().join("mnist_calib_labels.npy")).unwrap();
    let eval = onnx_prune::data::read_npz(&common::fixtures().join("mnist_heldout.npz")).unwrap();
    let eval_labels =
        onnx_prune::calib::load_labels(&common::fixtures().join("mnist_heldout_labels.npy"))
            .unwrap();
    let d = Data {
        calib,
        calib_labels: Some(labels),
        eval,
        eval_labels: Some(eval_labels),
        source: "fixtures".into(),
        synthetic: false,
    };
    let run = |mask, method| {
        let mut o = quick(Pattern::Sparsity(0.95), mask, method);
        o.allocation = Some(Allocation::Global);
        o.selection.skip_first_last = false;
        o.fisher = FisherOptions {
            samples: 100,
            damp: 1e-5,
            ..Default::default()
        };
        let out = sparse::run(&m, &d, &o, &mut |_, _, _| {}).unwrap();
        check_pattern(&out, Pattern::Sparsity(0.95), Allocation::Global);
        assert_eq!(out.report.layers.len(), 3);
        out.report.validation.accuracy_pruned.unwrap()
    };
    let mag = run(MaskKind::Magnitude, Method::None);
    let wf = run(MaskKind::Woodfisher, Method::Woodfisher);
    println!("MLPNet 95 %: magnitude {mag:.3}, woodfisher {wf:.3}");
    assert!(wf > mag + 0.02, "woodfisher {wf} vs magnitude {mag}");
}

/// `--allocation sensitivity` on the MobileNet fixture at 70 % (magnitude mask, OBS update):
/// the same total as the uniform split, exactly, but the depthwise kernels keep more taps than
/// the squeeze-excitation layers, and held-out top-1 gains far beyond noise (96.4 vs 75.4 % on
/// 128 calibration images when measured). Refused where there is nothing to split.
#[test]
fn sensitivity_allocation_spares_the_layers_that_matter() {
    let f = common::fixtures();
    let d = Data {
        calib: onnx_prune::data::read_npz(&f.join("mnist_calib.npz")).unwrap(),
        calib_labels: Some(
            onnx_prune::calib::load_labels(&f.join("mnist_calib_labels.npy")).unwrap(),
        ),
        eval: onnx_prune::data::read_npz(&f.join("mnist_heldout.npz")).unwrap(),
        eval_labels: Some(
            onnx_prune::calib::load_labels(&f.join("mnist_heldout_labels.npy")).unwrap(),
        ),
        source: "fixtures".into(),
        synthetic: false,
    };
    let m = Model::load(&f.join("mobilenet.onnx")).unwrap();
    let run = |alloc| {
        let o = UnstructuredOptions {
            pattern: Pattern::Sparsity(0.7),
            allocation: Some(alloc),
            latency_runs: 0,
            ..Default::default()
        };
        let out = sparse::run(&m, &d, &o, &mut |_, _, _| {}).unwrap();
        check_pattern(&out, Pattern::Sparsity(0.7), alloc);
        out
    };
    let uniform = run(Allocation::Uniform);
    let sens = run(Allocation::Sensitivity);
    let pruned = |o: &sparse::Outcome| o.report.layers.iter().map(|r| r.pruned).sum::<usize>();
    let total: usize = sens.report.layers.iter().map(|r| r.params).sum();
    assert_eq!(pruned(&sens), count(total, 0.7));
    let acc = |o: &sparse::Outcome| o.report.validation.accuracy_pruned.unwrap();
    println!(
        "mobilenet 70 %, magnitude + obs: uniform {:.3}, sensitivity {:.3}",
        acc(&uniform),
        acc(&sens)
    );
    assert!(acc(&sens) > acc(&uniform) + 0.1);
    let profile = sens.report.sensitivity.as_ref().unwrap();
    assert_eq!(profile.len(), sens.report.layers.len());
    let mean = |part: &str| {
        let s: Vec<f64> = sens
            .report
            .layers
            .iter()
            .filter(|r| r.layer.contains(part))
            .map(|r| r.sparsity)
            .collect();
        s.iter().sum::<f64>() / s.len() as f64
    };
    assert!(
        mean("/dw/") + 0.3 < mean("/se/"),
        "{} vs {}",
        mean("/dw/"),
        mean("/se/")
    );
    for (row, layer) in profile.iter().zip(&sens.report.layers) {
        assert_eq!(row.levels.len(), row.errors.len());
        assert_eq!(row.errors[0], 0.0);
        assert!((row.chosen - layer.sparsity).abs() < 1e-12);
    }
    for o in [
        UnstructuredOptions {
            pattern: Pattern::NM(2, 4),
            allocation: Some(Allocation::Sensitivity),
            ..Default::default()
        },
        UnstructuredOptions {
            pattern: Pattern::Sparsity(0.7),
            allocation: Some(Allocation::Sensitivity),
            at_init: Some(Default::default()),
            method: Method::None,
            ..Default::default()
        },
        UnstructuredOptions {
            pattern: Pattern::Sparsity(0.7),
            allocation: Some(Allocation::Sensitivity),
            mask_from: Some(Default::default()),
            ..Default::default()
        },
    ] {
        let e = sparse::run(&m, &d, &o, &mut |_, _, _| {}).err().unwrap();
        assert!(e.to_string().contains("--allocation sensitivity"), "{e}");
    }
}

/// A tensor's new value from (element index, dims).
type Init = Box<dyn FnMut(usize, &[i64]) -> f32>;

/// The fixture with freshly initialised weights, as a training framework exports it before
/// training: layer weights uniform in ±√(6/fan_in), biases 0, BatchNorm scale 1, shift 0 and
/// statistics (0, 1).
fn untrained(name: &str, seed: u64) -> PathBuf {
    let bytes = std::fs::read(common::fixtures().join(format!("{name}.onnx"))).unwrap();
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let mut rng = common::Rng::new(seed);
    let mut set: Vec<(String, Init)> = Vec::new();
    for n in &g.node {
        match n.op_type() {
            "Conv" | "Gemm" | "MatMul" if n.input.len() > 1 => {
                set.push((n.input[1].clone(), Box::new(|_, _| 0.0)));
                if let Some(b) = n.input.get(2) {
                    set.push((b.clone(), Box::new(|_, _| 0.0)));
                }
            }
            "BatchNormalization" => {
                for (k, v) in [(1, 1.0), (2, 0.0), (3, 0.0), (4, 1.0)] {
                    set.push((n.input[k].clone(), Box::new(move |_, _| v)));
                }
            }
            _ => {}
        }
    }
    for t in g.initializer.iter_mut() {
        let Some((_, f)) = set.iter_mut().find(|(w, _)| w == t.name()) else {
            continue;
        };
        let len: usize = t.dims.iter().product::<i64>() as usize;
        let layer = t.dims.len() >= 2;
        let fan_in = if layer {
            (len / t.dims[0] as usize).max(t.dims[0] as usize).max(1)
        } else {
            1
        };
        let b = (6.0 / fan_in as f32).sqrt();
        let vals: Vec<f32> = (0..len)
            .map(|i| {
                if layer {
                    (2.0 * rng.uniform() - 1.0) * b
                } else {
                    f(i, &t.dims)
                }
            })
            .collect();
        t.float_data.clear();
        t.raw_data = Some(
            vals.iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        );
    }
    // One folder per model and seed: `scratch` empties its folder, and tests run in parallel.
    let p = common::scratch(&format!("untrained-{name}-{seed}")).join("model.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

#[test]
fn at_init_criteria_mask_untrained_models_exactly() {
    use onnx_prune::sparse::at_init::{AtInitOptions, InitCriterion};
    let calib = common::head(
        onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap(),
        16,
    );
    let labels = onnx_prune::data::read_npy(&common::fixtures().join("mnist_calib_labels.npy"))
        .unwrap()
        .to_i64_vec()[..16]
        .to_vec();
    for name in ["resnet", "mlp"] {
        let m = Model::load(&untrained(name, 7)).unwrap();
        let mut d = data(calib.clone());
        d.calib_labels = Some(labels.clone());
        let bn_names: Vec<String> = m
            .graph
            .nodes
            .iter()
            .filter(|n| n.op_type == "BatchNormalization")
            .flat_map(|n| [3, 4].map(|k| m.graph.name(n.inputs[k].unwrap()).to_string()))
            .collect();
        let run = |criterion: InitCriterion, pattern: Pattern, bn_warmup: bool| {
            let o = UnstructuredOptions {
                at_init: Some(AtInitOptions {
                    criterion,
                    bn_warmup,
                    samples: 8,
                    probes: 2,
                    synflow_rounds: 10,
                    ..Default::default()
                }),
                ..quick(pattern, MaskKind::Magnitude, Method::None)
            };
            sparse::run(&m, &d, &o, &mut |_, _, _| {})
                .unwrap_or_else(|e| panic!("{name} {criterion} {pattern:?}: {e}"))
        };
        for &criterion in <InitCriterion as clap::ValueEnum>::value_variants() {
            let out = run(criterion, Pattern::Sparsity(0.9), true);
            // Global top-k by default, exact total, no weight update.
            check_pattern(&out, Pattern::Sparsity(0.9), Allocation::Global);
            let r = &out.report;
            let ai = r.at_init.as_ref().expect("at-init report");
            assert_eq!(ai.criterion, criterion.to_string());
            assert_eq!(ai.bn_warmed_up, bn_names.len() / 2, "{name} {criterion}");
            for row in &r.layers {
                assert_eq!(
                    row.pruned == row.params,
                    r.collapsed.contains(&row.layer),
                    "{name} {criterion}: collapse flag of {}",
                    row.layer
                );
            }
            // The warm-up is for scoring only: the written statistics are the untrained ones.
            let written = weights_of(&out.bytes, &bn_names);
            let before = weights_of(&std::fs::read(&m.source.path).unwrap(), &bn_names);
            assert_eq!(
                written, before,
                "{name} {criterion}: BatchNorm statistics changed"
            );
        }
        let nm = run(InitCriterion::Snip, Pattern::NM(2, 4), true);
        check_pattern(&nm, Pattern::NM(2, 4), Allocation::Global);
        if !bn_names.is_empty() {
            // Scores of the untrained network depend on the statistics they are taken with.
            let warm = run(InitCriterion::FisherDiag, Pattern::Sparsity(0.9), true);
            let cold = run(InitCriterion::FisherDiag, Pattern::Sparsity(0.9), false);
            assert_ne!(
                warm.masks, cold.masks,
                "{name}: the warm-up changed nothing"
            );
        }
    }
}

#[test]
fn at_init_cli_writes_the_masked_model_and_its_masks() {
    let dir = common::scratch("at-init-cli");
    let input = untrained("resnet", 3);
    let out = dir.join("masked.onnx");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
        .args([
            input.to_str().unwrap(),
            out.to_str().unwrap(),
            "--unstructured",
            "0.8",
            "--at-init",
            "hts",
            "--calib",
            common::fixtures()
                .join("mnist_calib_small.npz")
                .to_str()
                .unwrap(),
            "--latency-runs",
            "0",
            "--force",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(text.contains("without --labels"), "{text}");
    let masks = onnx_prune::data::read_npz(&dir.join("masked.masks.npz")).unwrap();
    assert!(!masks.is_empty());
    let names: Vec<String> = masks.iter().map(|(n, _)| n.clone()).collect();
    let ws = weights_of(&std::fs::read(&out).unwrap(), &names);
    let (mut kept, mut total) = (0usize, 0usize);
    for ((name, t), (_, shape, w)) in masks.iter().zip(&ws) {
        assert_eq!(t.shape(), shape.as_slice(), "{name}");
        let Some(keep) = t.as_bool() else {
            panic!("{name}: masks are bool arrays")
        };
        for (k, v) in keep.iter().zip(w) {
            if !k {
                assert_eq!(*v, 0.0, "{name}: a masked weight is not zero");
            }
        }
        kept += keep.iter().filter(|k| **k).count();
        total += keep.len();
    }
    assert_eq!(
        total - kept,
        count(total, 0.8),
        "80 % of the selected weights masked"
    );
    common::onnx_check_files(std::slice::from_ref(&out));
}

#[test]
fn the_batchnorm_warm_up_normalises_every_batchnorm_on_the_calibration_data() {
    let m = Model::load(&untrained("resnet", 11)).unwrap();
    let calib = common::head(
        onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap(),
        64,
    );
    let (warm, n) = onnx_prune::sparse::at_init::warm_up_bn(&m.graph, &calib, 16).unwrap();
    let bns: Vec<&onnx_prune::ir::Node> = warm
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .collect();
    assert_eq!(n, bns.len());
    assert!(n > 0);
    let values = onnx_prune::interp::Engine::<f32>::exact(&warm)
        .unwrap()
        .run_all(calib.clone())
        .unwrap();
    // Scale 1 and shift 0: each BatchNorm's output has per-channel mean 0 and variance 1 on
    // the data its statistics came from (up to epsilon).
    for bn in bns {
        let y = values[bn.outputs[0].unwrap()].as_ref().unwrap();
        let y = y.as_float().unwrap();
        for (c, lane) in y.axis_iter(ndarray::Axis(1)).enumerate() {
            let k = lane.len() as f64;
            let mean = lane.iter().map(|&v| v as f64).sum::<f64>() / k;
            let var = lane.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / k;
            assert!(mean.abs() < 1e-3, "{} channel {c}: mean {mean}", bn.name);
            assert!(
                (var - 1.0).abs() < 2e-2 || var < 1e-6,
                "{} channel {c}: variance {var}",
                bn.name
            );
        }
    }
}

#[test]
fn snows_starts_from_the_obs_result_and_keeps_only_steps_that_help_held_out_outputs() {
    // `--method snows` runs after the layer-wise (OBS) pass and its BatchNorm re-estimation,
    // from those weights, fit on 3/4 of the calibration samples; a layer's steps stay only when
    // the last quarter's outputs get closer to the dense ones. So on those samples the result
    // is no further from the dense model than `--method obs` on the same mask.
    let m = Model::load(&common::fixtures().join("mobilenet.onnx")).unwrap();
    let feeds = common::head(
        onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap(),
        64,
    );
    let d = data(feeds.clone());
    let run = |method: Method| {
        let o = UnstructuredOptions {
            samples: 64,
            snows: SnowsOptions {
                horizon: 4,
                newton_steps: 1,
                cg_iters: 5,
                ..Default::default()
            },
            ..quick(Pattern::Sparsity(0.8), MaskKind::Obs, method)
        };
        sparse::run(&m, &d, &o, &mut |_, _, _| {}).unwrap()
    };
    let (obs, sn) = (run(Method::Obs), run(Method::Snows));
    let check = onnx_prune::autodiff::curvature::slice_feeds(&feeds, 48..64);
    let err = |bytes: &[u8]| common::output_sq_error(&m, bytes, &check);
    let rows: Vec<_> = sn
        .report
        .layers
        .iter()
        .filter_map(|l| l.snows.as_ref())
        .collect();
    assert_eq!(
        rows.len(),
        sn.report.layers.len(),
        "one SNOWS row per layer"
    );
    let mut kept = 0;
    for (l, s) in sn.report.layers.iter().zip(&rows) {
        let (before, after) = s.output_error.unwrap_or((0.0, 0.0));
        if s.kept == Some(true) {
            kept += 1;
            assert!(after < before, "{}: kept but {before} → {after}", l.layer);
            assert_eq!(l.method, "snows");
        } else {
            assert_eq!(l.method, "obs", "{}", l.layer);
        }
    }
    // Same mask: exactly the same zeros.
    assert_eq!(
        obs.masks.iter().map(|m| &m.2).collect::<Vec<_>>(),
        sn.masks.iter().map(|m| &m.2).collect::<Vec<_>>()
    );
    let (e_obs, e_sn) = (err(&obs.bytes), err(&sn.bytes));
    eprintln!(
        "held-out output error: obs {e_obs:.2}, snows {e_sn:.2} ({kept} of {} layers kept)",
        rows.len()
    );
    assert!(kept > 0, "no SNOWS step kept: {rows:?}");
    assert!(
        e_sn < e_obs,
        "SNOWS further from dense than its OBS start: {e_sn} ≥ {e_obs}"
    );
}
