//! `onnx-prune IN OUT --structured R …` as users call it: outputs, report, plan, determinism,
//! the accuracy gate, calibration sources and bad input.

use crate::common;

use onnx_prune::onnx::ModelProto;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fx(name: &str) -> PathBuf {
    common::fixtures().join(name)
}

fn fails_with(args: &[&str], code: i32, needle: &str) {
    let o = run(args);
    let e = err(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {e}");
    assert_eq!(
        e.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error line: {e}"
    );
    assert!(e.contains(needle), "{args:?}: expected {needle:?} in {e}");
    assert!(!e.contains("panicked"), "{e}");
}

fn without_metadata(p: &Path) -> Vec<u8> {
    let mut m = ModelProto::decode(std::fs::read(p).unwrap().as_slice()).unwrap();
    m.metadata_props.retain(|e| e.key() != "onnx-prune");
    m.encode_to_vec()
}

#[test]
fn prune_writes_a_smaller_valid_model_with_report_and_plan() {
    let dir = common::scratch("cli-prune-main");
    let (out, report, plan) = (
        dir.join("resnet-pruned.onnx"),
        dir.join("report.json"),
        dir.join("plan.json"),
    );
    let args = |out: &Path, extra: &[&str]| {
        let mut a = vec![
            s(&fx("resnet.onnx")).to_string(),
            s(out).to_string(),
            "--structured".into(),
            "0.4".into(),
            "--criterion".into(),
            "taylor".into(),
            "--calib".into(),
            s(&fx("mnist_calib.npz")).into(),
            "--labels".into(),
            s(&fx("mnist_calib_labels.npy")).into(),
            "--eval".into(),
            s(&fx("mnist_heldout.npz")).into(),
            "--eval-labels".into(),
            s(&fx("mnist_heldout_labels.npy")).into(),
            "--latency-runs".into(),
            "3".into(),
        ];
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let o = bin()
        .args(args(
            &out,
            &["--report", s(&report), "--plan-out", s(&plan)],
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("accuracy") && stdout.contains("latency"),
        "{stdout}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["mode"], "structured");
    assert_eq!(r["criterion"], "taylor");
    let achieved = r["achieved"].as_f64().unwrap();
    assert!((0.4..0.6).contains(&achieved), "achieved {achieved}");
    assert!(r["after"]["params"].as_u64().unwrap() < r["before"]["params"].as_u64().unwrap());
    assert!(r["validation"]["accuracy_dense"].as_f64().unwrap() > 0.9);
    assert!(r["validation"]["latency"]["pruned_ms"].as_f64().unwrap() > 0.0);
    // Compensation refits the consumers: no longer the original with units zeroed.
    assert!(!r["exact"].as_bool().unwrap());
    assert!(!r["compensation"]["refits"].as_array().unwrap().is_empty());
    assert!(
        r["validation"]["accuracy_pruned"].as_f64().unwrap() > 0.9,
        "compensation keeps the accuracy"
    );
    // The output runs in onnxruntime beside the original.
    let c = run(&[
        "compare",
        s(&fx("resnet.onnx")),
        s(&out),
        "--data",
        s(&fx("mnist_heldout.npz")),
    ]);
    assert!(c.status.success(), "{}", err(&c));
    let m = ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let meta = m
        .metadata_props
        .iter()
        .find(|e| e.key() == "onnx-prune")
        .expect("metadata entry");
    assert!(meta.value().contains("\"ratio\":0.4"), "{}", meta.value());
    // Same inputs and seed: the same bytes.
    let again = dir.join("again.onnx");
    let o2 = bin().args(args(&again, &[])).output().unwrap();
    assert!(o2.status.success(), "{}", err(&o2));
    assert_eq!(
        without_metadata(&out),
        without_metadata(&again),
        "deterministic output"
    );
    // The plan re-applies to the same result.
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let removed: usize = p["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["removed"].as_array().unwrap().len())
        .sum();
    assert_eq!(removed as u64, r["units_removed"].as_u64().unwrap());
    let replay = dir.join("replay.onnx");
    let o3 = bin()
        .args(args(&replay, &["--plan-in", s(&plan)]))
        .output()
        .unwrap();
    assert!(o3.status.success(), "{}", err(&o3));
    assert_eq!(
        without_metadata(&out),
        without_metadata(&replay),
        "--plan-in reproduces the model"
    );
    // An existing output is kept unless --force.
    fails_with(
        &args(&out, &[])
            .iter()
            .map(|x| x.as_str())
            .collect::<Vec<_>>(),
        1,
        "exists",
    );
    let o4 = bin().args(args(&out, &["--force"])).output().unwrap();
    assert!(o4.status.success(), "{}", err(&o4));
}

#[test]
fn target_latency_searches_timed_candidates() {
    let dir = common::scratch("cli-prune-latency");
    let out = dir.join("fast.onnx");
    let report = dir.join("report.json");
    let args = |runs: &'static str| {
        vec![
            s(&fx("mobilenet.onnx")).to_string(),
            s(&out).to_string(),
            "--structured".into(),
            "0.3".into(),
            "--target".into(),
            "latency".into(),
            "--criterion".into(),
            "magnitude".into(),
            "--calib".into(),
            s(&fx("mnist_calib_small.npz")).to_string(),
            "--latency-runs".into(),
            runs.into(),
            "--force".into(),
            "--report".into(),
            s(&report).to_string(),
        ]
    };
    let a0 = args("0");
    fails_with(
        &a0.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        1,
        "--latency-runs",
    );
    let a = args("5");
    let o = run(&a.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", err(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["target"], "latency");
    let steps = r["latency_search"]
        .as_array()
        .expect("the search is reported");
    // The bracket first (the most the guards allow), then the first guess at the ratio itself.
    assert_eq!(steps[0]["flops_target"], 1.0);
    assert!(
        steps.len() == 1 || steps[1]["flops_target"] == 0.3,
        "{steps:?}"
    );
    for st in steps {
        let (d, p) = (
            st["dense_ms"].as_f64().unwrap(),
            st["pruned_ms"].as_f64().unwrap(),
        );
        assert!(d > 0.0 && p > 0.0 && (st["ratio"].as_f64().unwrap() - p / d).abs() < 1e-9);
    }
    // Achieved is the validation's own measurement, not the search's.
    let l = r["validation"]["latency"]["ratio"].as_f64().unwrap();
    assert!((r["achieved"].as_f64().unwrap() - (1.0 - l)).abs() < 1e-9);
    assert!(r["flops_removed"].as_f64().unwrap() > 0.0);
    common::onnx_check_files(std::slice::from_ref(&out));
}

/// Under a FLOPs target a loss-estimating criterion ranks per FLOP (the knapsack's greedy
/// order for that budget): it reaches the target removing fewer parameters than the
/// per-parameter ranking, which spends the budget on parameter-heavy, FLOP-light structures.
#[test]
fn a_flops_target_ranks_per_flop() {
    let dir = common::scratch("cli-prune-cost");
    let out = dir.join("fast.onnx");
    let (model, calib, labels) = (
        fx("mobilenet.onnx"),
        fx("mnist_calib.npz"),
        fx("mnist_calib_labels.npy"),
    );
    let run_with = |cost: Option<&str>| -> serde_json::Value {
        let report = dir.join(format!("report-{}.json", cost.unwrap_or("default")));
        let mut a = vec![
            s(&model),
            s(&out),
            "--structured",
            "0.5",
            "--target",
            "flops",
            "--criterion",
            "taylor",
            "--no-compensation",
            "--calib",
            s(&calib),
            "--labels",
            s(&labels),
            "--latency-runs",
            "0",
            "--force",
            "--report",
            s(&report),
        ];
        if let Some(c) = cost {
            a.extend(["--cost", c]);
        }
        let o = run(&a);
        assert!(o.status.success(), "{}", err(&o));
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
    };
    let (per_flop, per_param) = (run_with(None), run_with(Some("params")));
    assert_eq!(per_flop["cost"], "flops");
    assert_eq!(per_param["cost"], "params");
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    for r in [&per_flop, &per_param] {
        assert!(f(r, "achieved") >= 0.5, "{r}");
    }
    assert!(
        f(&per_flop, "params_removed") < 0.9 * f(&per_param, "params_removed"),
        "per FLOP {} vs per parameter {} params removed",
        f(&per_flop, "params_removed"),
        f(&per_param, "params_removed")
    );
    common::onnx_check_files(std::slice::from_ref(&out));
}

#[test]
fn the_accuracy_gate_refuses_to_write() {
    let dir = common::scratch("cli-prune-gate");
    let out = dir.join("never.onnx");
    let report = dir.join("report.json");
    fails_with(
        &[
            s(&fx("resnet.onnx")),
            s(&out),
            "--structured",
            "0.7",
            "--calib",
            s(&fx("mnist_calib.npz")),
            "--labels",
            s(&fx("mnist_calib_labels.npy")),
            "--max-drop",
            "0.01",
            "--backoff-steps",
            "1",
            "--latency-runs",
            "0",
            "--report",
            s(&report),
        ],
        2,
        "misses --max-drop 0.01",
    );
    assert!(!out.exists(), "a refused model is not written");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        r["refused"].is_string(),
        "the report says why: {}",
        r["refused"]
    );
}

#[test]
fn back_off_restores_the_most_harmful_groups_until_within_budget() {
    let dir = common::scratch("cli-prune-backoff");
    let (out, report) = (dir.join("vit.onnx"), dir.join("report.json"));
    let budget = 0.02;
    let o = run(&[
        s(&fx("vit.onnx")),
        s(&out),
        "--structured",
        "0.5",
        "--criterion",
        "taylor",
        "--calib",
        s(&fx("mnist_calib.npz")),
        "--labels",
        s(&fx("mnist_calib_labels.npy")),
        "--eval",
        s(&fx("mnist_heldout.npz")),
        "--eval-labels",
        s(&fx("mnist_heldout_labels.npy")),
        "--max-drop",
        "0.02",
        "--latency-runs",
        "0",
        "--report",
        s(&report),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let steps = r["backoff"].as_array().unwrap();
    // Without the budget this prune loses ≈ 9 points on ViT, so at least one step is needed.
    assert!(!steps.is_empty(), "no back-off step: {}", r["validation"]);
    let last = steps.last().unwrap();
    assert!(last["drop"].as_f64().unwrap() <= budget);
    assert!(
        last["units_removed"].as_u64().unwrap() > 0,
        "something stays pruned"
    );
    let drop = r["validation"]["drop"].as_f64().unwrap();
    assert!(drop <= budget, "written model drops {drop}");
    // Earlier steps restored groups with a larger measured harm first.
    let harms: Vec<f64> = steps
        .iter()
        .flat_map(|s| {
            s["restored"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[1].as_f64().unwrap())
        })
        .collect();
    assert!(harms.windows(2).all(|w| w[0] >= w[1]), "{harms:?}");
    common::onnx_check_files(std::slice::from_ref(&out));
}

#[test]
fn calibration_from_images_and_synthetic_inputs() {
    let dir = common::scratch("cli-prune-images");
    let imgs = dir.join("images");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut r = common::Rng::new(3);
    for k in 0..6 {
        let img = image::RgbImage::from_fn(12, 10, |_, _| {
            image::Rgb([
                (r.next_u64() % 256) as u8,
                (r.next_u64() % 256) as u8,
                (r.next_u64() % 256) as u8,
            ])
        });
        img.save(imgs.join(format!("img{k}.png"))).unwrap();
    }
    let model = common::fixtures().join("coupling/residual.onnx");
    let out = dir.join("residual.onnx");
    let o = run(&[
        s(&model),
        s(&out),
        "--structured",
        "0.5",
        "--round-to",
        "2",
        "--calib",
        s(&imgs),
        "--size",
        "8",
        "--mean",
        "0.5",
        "--std",
        "0.25",
        "--latency-runs",
        "0",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("validated on 2 held-out samples"));
    // No --calib: a warning, synthetic inputs, a valid output.
    let out2 = dir.join("mlp.onnx");
    let o = run(&[
        s(&fx("mlp.onnx")),
        s(&out2),
        "--structured",
        "0.3",
        "--latency-runs",
        "0",
    ]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("warning: no --calib"), "{}", err(&o));
    common::onnx_check_files(&[out.clone(), out2.clone()]);
}

#[test]
fn bad_prune_input_gives_one_clear_line() {
    let dir = common::scratch("cli-prune-bad");
    let m = fx("resnet.onnx");
    let out = dir.join("out.onnx");
    let calib = fx("mnist_calib.npz");
    fails_with(&[s(&m), s(&m), "--structured", "0.5"], 1, "is the input");
    fails_with(
        &[s(&m), s(&out), "--structured", "1.5"],
        1,
        "must be in [0, 1)",
    );
    fails_with(&[s(&m), s(&out)], 1, "give --structured");
    fails_with(
        &[
            s(&m),
            s(&out),
            "--structured",
            "0.5",
            "--max-layer-ratio",
            "2",
        ],
        1,
        "--max-layer-ratio",
    );
    fails_with(
        &[
            s(&m),
            s(&out),
            "--structured",
            "0.5",
            "--calib",
            s(&dir.join("missing.npz")),
        ],
        1,
        "missing.npz",
    );
    // Calibration data for another model.
    fails_with(
        &[
            s(&fx("coupling/mlp.onnx")),
            s(&out),
            "--structured",
            "0.5",
            "--calib",
            s(&calib),
        ],
        1,
        "\"input\" is not an input of the model (inputs: [\"x\"])",
    );
    // Right name, wrong shape.
    let wrong = dir.join("wrong.npz");
    onnx_prune::data::write_npz(&wrong, &[("x".to_string(), common::uniform(&[4, 21], 1))])
        .unwrap();
    fails_with(
        &[
            s(&fx("coupling/mlp.onnx")),
            s(&out),
            "--structured",
            "0.5",
            "--calib",
            s(&wrong),
        ],
        1,
        "has shape [4, 21]; the model declares [N, 20]",
    );
    fails_with(
        &[
            s(&m),
            s(&out),
            "--structured",
            "0.5",
            "--calib",
            s(&calib),
            "--labels",
            s(&fx("mnist_heldout_labels.npy")),
        ],
        1,
        "labels for",
    );
    // NaN in the calibration data.
    let nan = dir.join("nan.npz");
    let mut t = onnx_prune::data::read_npz(&fx("mnist_calib_small.npz")).unwrap();
    if let onnx_prune::tensor::Data::Float(a) = &mut t[0].1.data {
        a[[0, 0, 3, 3]] = f32::NAN;
    }
    onnx_prune::data::write_npz(&nan, &t).unwrap();
    fails_with(
        &[s(&m), s(&out), "--structured", "0.5", "--calib", s(&nan)],
        1,
        "non-finite",
    );
    assert!(!out.exists(), "failed runs leave nothing");
}

#[test]
fn refit_snows_reports_its_steps() {
    let dir = common::scratch("cli-prune-snows");
    let (m, out, report) = (fx("resnet.onnx"), dir.join("out.onnx"), dir.join("r.json"));
    let calib = fx("mnist_calib.npz");
    let o = run(&[
        s(&m),
        s(&out),
        "--structured",
        "0.5",
        "--criterion",
        "magnitude",
        "--calib",
        s(&calib),
        "--refit",
        "snows",
        "--horizon",
        "2",
        "--compensation-samples",
        "32",
        "--latency-runs",
        "0",
        "--report",
        s(&report),
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("layers improved on held-out samples"),
        "{stdout}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let rows = r["compensation"]["snows"].as_array().unwrap();
    let refits = r["compensation"]["refits"].as_array().unwrap();
    assert_eq!(rows.len(), refits.len());
    for row in rows {
        assert!(row["horizon"].as_array().unwrap().len() <= 2, "{row}");
        assert!(row["loss_before"].as_f64().unwrap() > 0.0, "{row}");
    }
    common::onnx_check_files(std::slice::from_ref(&out));
    fails_with(
        &[
            s(&m),
            s(&out),
            "--structured",
            "0.5",
            "--refit",
            "snows",
            "--no-compensation",
        ],
        1,
        "cannot be used with",
    );
}

/// `--score-output`: MiniLM's first float output is the token embeddings; naming the sentence
/// embedding `461` moves the gate (its drop is that output's 1 − cosine) and the criteria (the
/// fisher-diag mask, scored through the model's output, changes), `--drop-metric cosine` makes
/// the gate compare that embedding's cosine instead of its argmax, and a name that is not an
/// output is refused with the list of outputs, before anything is written.
#[test]
fn score_output_selects_what_the_gate_and_criteria_score() {
    let dir = common::scratch("cli-score-output");
    let inputs = common::deps().join("inputs");
    let calib = inputs.join("minilm_l3_calib.npz");
    let eval = inputs.join("minilm_l3_eval.npz");
    let model = common::model_path("minilm_l3");
    let prune = |out: &Path, report: &Path, extra: &[&str]| {
        let mut args = vec![
            s(&model),
            s(out),
            "--unstructured",
            "0.7",
            "--mask",
            "fisher-diag",
            "--method",
            "none",
            "--hessian-samples",
            "4",
            "--probes",
            "1",
            "--calib",
            s(&calib),
            "--eval",
            s(&eval),
            "--latency-runs",
            "0",
            "--report",
            s(report),
        ];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{extra:?}: {}", err(&o));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
        r["validation"].clone()
    };
    let (a, ra) = (dir.join("tokens.onnx"), dir.join("tokens.json"));
    let (b, rb) = (dir.join("sentence.onnx"), dir.join("sentence.json"));
    let va = prune(&a, &ra, &[]);
    let vb = prune(&b, &rb, &["--score-output", "461"]);
    let first = va["scored_output"].as_str().unwrap().to_string();
    assert_ne!(first, "461", "the default should be the first float output");
    assert_eq!(vb["scored_output"], "461");
    // The drop is computed on the scored output: top-1 disagreement for a 2-D output (the
    // gate's classifier rule, which also takes the [N, 384] sentence embedding), else 1 − cosine.
    let expected = |v: &serde_json::Value, name: &str| {
        let o = v["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("no output {name} in {v}"))
            .clone();
        if v["drop_metric"].as_str().unwrap().starts_with("top-1") {
            1.0 - o["top1_agreement"].as_f64().unwrap()
        } else {
            1.0 - o["cosine"].as_f64().unwrap()
        }
    };
    for (v, name) in [(&va, first.as_str()), (&vb, "461")] {
        let drop = v["drop"].as_f64().unwrap();
        assert!((drop - expected(v, name)).abs() < 1e-9, "{name}: {v}");
    }
    assert_ne!(va["drop"], vb["drop"]);
    // --drop-metric cosine: an embedding's argmax means nothing, so the gate can be told.
    let (c, rc) = (dir.join("cosine.onnx"), dir.join("cosine.json"));
    let vc = prune(
        &c,
        &rc,
        &["--score-output", "461", "--drop-metric", "cosine"],
    );
    assert!(
        vc["drop_metric"].as_str().unwrap().contains("cosine"),
        "{vc}"
    );
    assert!((vc["drop"].as_f64().unwrap() - expected(&vc, "461")).abs() < 1e-9);
    assert_eq!(without_metadata(&b), without_metadata(&c));
    assert_ne!(
        without_metadata(&a),
        without_metadata(&b),
        "the fisher-diag mask should follow the scored output"
    );
    let c = dir.join("never.onnx");
    fails_with(
        &[
            s(&model),
            s(&c),
            "--unstructured",
            "0.5",
            "--calib",
            s(&calib),
            "--score-output",
            "no_such_output",
        ],
        1,
        "is not an output of the model (outputs: [",
    );
    assert!(!c.exists());
}
