//! The command line as users call it: inspect, eval (three engines), compare; exit codes and
//! one-line errors for bad input.

use crate::common;

use onnx_prune::data::read_npz;
use onnx_prune::onnx::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("onnx-prune-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn inspect_every_fixture_and_real_model() {
    let shapes: &[(&str, &[&str])] = &[
        ("ppocr_v4_rec", &["--shape", "x=1,3,48,320"]),
        ("ppocr_v4_det", &["--shape", "x=1,3,640,640"]),
        ("ppocr_mobile_cls", &["--shape", "x=1,3,48,192"]),
        (
            "minilm_l3",
            &[
                "--shape",
                "input_ids=1,128",
                "--shape",
                "attention_mask=1,128",
            ],
        ),
    ];
    for case in common::all_cases() {
        let mut args = vec!["inspect", s(&case.path), "--layers"];
        if let Some((_, extra)) = shapes.iter().find(|(n, _)| *n == case.name) {
            args.extend_from_slice(extra);
        }
        let o = run(&args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{}: {err}", case.name);
        assert!(
            out.contains("every op is supported"),
            "{}: {out}",
            case.name
        );
        let flops = out
            .lines()
            .find(|l| l.starts_with("FLOPs"))
            .unwrap_or_default();
        assert!(!flops.contains("not counted"), "{}: {flops}", case.name);
        println!("{:<24} {}", case.name, flops);
    }
}

#[test]
fn inspect_json_and_dynamic_dims() {
    let o = run(&[
        "inspect",
        s(&common::fixtures().join("resnet.onnx")),
        "--json",
    ]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["inputs"][0]["name"], "input");
    assert!(v["params"].as_u64().unwrap() > 30_000);
    assert!(v["flops"].as_u64().unwrap() > 10_000_000);
    // Without a concrete H, W the detector still gets a summary, and says what FLOPs need.
    let o = run(&["inspect", s(&common::model_path("ppocr_v4_det"))]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(
        out.contains("FLOPs     not counted") && out.contains("--shape"),
        "{out}"
    );
}

#[test]
fn eval_with_each_engine_agrees() {
    let model = common::fixtures().join("mobilenet.onnx");
    let data = common::fixtures().join("mnist_calib_small.npz");
    let mut results = Vec::new();
    for engine in ["interp", "ort", "tract"] {
        let out = tmp(&format!("eval-{engine}.npz"));
        let o = run(&[
            "eval",
            s(&model),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--engine",
            engine,
        ]);
        assert!(o.status.success(), "{engine}: {}", text(&o).1);
        let r = read_npz(&out).unwrap();
        assert_eq!(r[0].0, "logits");
        assert_eq!(r[0].1.shape(), &[8, 10]);
        results.push(r[0].1.clone());
    }
    for other in &results[1..] {
        let a = onnx_prune::validate::agreement("logits", other, &results[0]).unwrap();
        assert!(a.rel < 1e-4, "{a:?}");
    }
}

#[test]
fn compare_reports_agreement_accuracy_and_gates() {
    let a = common::fixtures().join("resnet.onnx");
    let data = common::fixtures().join("mnist_heldout.npz");
    let labels = common::fixtures().join("mnist_heldout_labels.npy");
    let o = run(&[
        "compare",
        s(&a),
        s(&a),
        "--data",
        s(&data),
        "--labels",
        s(&labels),
        "--tolerance",
        "0",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("100.00%") && out.contains("(+0.00 points)"),
        "{out}"
    );

    // A perturbed copy: same graph, one weight scaled.
    let mut m = ModelProto::decode(&std::fs::read(&a).unwrap()[..]).unwrap();
    let w = m
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.dims.len() == 4)
        .unwrap();
    let raw: Vec<u8> = w
        .raw_data
        .as_ref()
        .unwrap()
        .chunks(4)
        .flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * 1.5).to_le_bytes())
        .collect();
    w.raw_data = Some(raw.into());
    let b = tmp("perturbed.onnx");
    std::fs::write(&b, m.encode_to_vec()).unwrap();
    let o = run(&[
        "compare",
        s(&a),
        s(&b),
        "--data",
        s(&data),
        "--labels",
        s(&labels),
        "--tolerance",
        "1e-6",
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "validation failure exits 2: {}",
        text(&o).1
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["outputs"][0]["rel"].as_f64().unwrap() > 1e-6);
    assert!(text(&o).1.starts_with("error: output \"logits\" differs"));
}

fn custom_model(ops: &[&str]) -> ModelProto {
    let mut nodes = Vec::new();
    let mut prev = "x".to_string();
    for (i, op) in ops.iter().enumerate() {
        let out = format!("t{i}");
        nodes.push(NodeProto {
            op_type: Some(op.to_string()),
            input: vec![prev.clone()],
            output: vec![out.clone()],
            ..Default::default()
        });
        prev = out;
    }
    let vi = |n: &str| ValueInfoProto {
        name: Some(n.into()),
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: nodes,
            input: vec![vi("x")],
            output: vec![vi(&prev)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn fails_with(args: &[&str], code: i32, needle: &str) {
    let o = run(args);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error line: {err}"
    );
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_gives_one_clear_line_and_exit_1() {
    let data = common::fixtures().join("mnist_calib_small.npz");
    let out = tmp("never.npz");
    fails_with(
        &["inspect", "/nonexistent/model.onnx"],
        1,
        "/nonexistent/model.onnx",
    );
    let junk = tmp("junk.onnx");
    std::fs::write(&junk, b"\x08\x07this is not protobuf\xff\xff\xff").unwrap();
    fails_with(&["inspect", s(&junk)], 1, "not an ONNX model");
    // inspect maps regular files; anything else is read, with read's error.
    let dir = tmp("a-directory.onnx");
    std::fs::create_dir_all(&dir).unwrap();
    fails_with(&["inspect", s(&dir)], 1, "Is a directory");
    let empty = tmp("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    fails_with(&["inspect", s(&empty)], 1, "empty file");
    fails_with(
        &["eval", s(&empty), "--data", s(&data), "--out", s(&out)],
        1,
        "empty file",
    );

    let unsupported = tmp("unsupported.onnx");
    std::fs::write(
        &unsupported,
        custom_model(&["Relu", "Foo", "Bar", "Foo", "Relu"]).encode_to_vec(),
    )
    .unwrap();
    fails_with(
        &[
            "eval",
            s(&unsupported),
            "--data",
            s(&data),
            "--out",
            s(&out),
        ],
        1,
        "unsupported operators: Bar (1 node), Foo (2 nodes)",
    );
    let o = run(&["inspect", s(&unsupported)]);
    assert!(o.status.success());
    assert!(text(&o).0.contains("Foo (2 nodes)"));

    let model = common::fixtures().join("resnet.onnx");
    let wrong = tmp("wrong-name.npz");
    let feeds = read_npz(&data).unwrap();
    onnx_prune::data::write_npz(&wrong, &[("image".to_string(), feeds[0].1.clone())]).unwrap();
    fails_with(
        &["eval", s(&model), "--data", s(&wrong), "--out", s(&out)],
        1,
        "\"image\" is not an input of the model (inputs: [\"input\"])",
    );
    let bad_shape = tmp("bad-shape.npz");
    onnx_prune::data::write_npz(
        &bad_shape,
        &[("input".to_string(), feeds[0].1.reshape(&[8, 28, 28]))],
    )
    .unwrap();
    fails_with(
        &["eval", s(&model), "--data", s(&bad_shape), "--out", s(&out)],
        1,
        "must have shape [N, 1, 28, 28], got [8, 28, 28]",
    );
    fails_with(
        &["inspect", s(&model), "--shape", "input=1,x"],
        1,
        "--shape",
    );
    assert!(!out.exists(), "a failed run leaves no output");
}

#[test]
fn sensitivity_report_is_deterministic_and_machine_readable() {
    let calib = common::fixtures().join("mnist_calib.npz");
    let labels = common::fixtures().join("mnist_calib_labels.npy");
    for model in ["resnet", "mobilenet", "vit", "mlp"] {
        let m = common::fixtures().join(format!("{model}.onnx"));
        let args = |seed: &str| {
            let mut a = vec![
                "inspect",
                s(&m),
                "--sensitivity",
                "--calib",
                s(&calib),
                "--samples",
                "32",
                "--probes",
                "8",
                "--seed",
                seed,
                "--json",
            ];
            if model == "mlp" {
                a.extend(["--labels", s(&labels)]);
            }
            a.into_iter().map(String::from).collect::<Vec<_>>()
        };
        let run_json = |seed: &str| {
            let o = bin().args(args(seed)).output().unwrap();
            assert!(o.status.success(), "{model}: {}", text(&o).1);
            o.stdout
        };
        let (a, b, c) = (run_json("3"), run_json("3"), run_json("4"));
        assert_eq!(a, b, "{model}: same seed, same report");
        assert_ne!(a, c, "{model}: the seed drives the probes");
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        let layers = v["layers"].as_array().unwrap();
        assert!(!layers.is_empty());
        for l in layers {
            assert!(l["trace"]["stderr"].as_f64().unwrap() >= 0.0);
            assert!(l["grad_norm"].as_f64().unwrap().is_finite());
            assert!(l["channels"].as_u64().unwrap() > 0);
        }
        let expect = if model == "mlp" {
            "cross-entropy"
        } else {
            "KL to the dense model"
        };
        assert_eq!(v["objective"], expect);
        if model == "mlp" {
            // With labels the gradient is not zero.
            assert!(
                layers
                    .iter()
                    .any(|l| l["grad_norm"].as_f64().unwrap() > 1e-4)
            );
        }
    }
    fails_with(
        &[
            "inspect",
            s(&common::fixtures().join("resnet.onnx")),
            "--sensitivity",
        ],
        1,
        "--calib",
    );
}
