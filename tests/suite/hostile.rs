//! Hostile and broken input, one generated model (or data file, or flag) per case: each must give
//! exactly one `error:` line naming the file, node or tensor, exit code 1, no panic, and no
//! output file, both for `inspect` (loader + IR builder) and for a pruning run.

use crate::common;

use onnx_prune::onnx::proto::{
    AttributeProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
        .args(args)
        .output()
        .unwrap()
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("onnx-prune-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A folder of its own for one failing run's output: the leftover check scans the output's
/// folder, and other tests' runs in `dir()` (onnxruntime loads a model with external data from
/// a temporary file beside it) would show up there while they run.
fn own_dir(name: &str) -> PathBuf {
    let d = dir().join(format!("{name}-run"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn base() -> ModelProto {
    let bytes = std::fs::read(common::fixtures().join("mlp.onnx")).unwrap();
    ModelProto::decode(bytes.as_slice()).unwrap()
}

fn save(name: &str, m: &ModelProto) -> PathBuf {
    let p = dir().join(format!("{name}.onnx"));
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

/// Exit 1, one `error:` line containing every needle, no panic, no output written.
fn fails(args: &[&str], needles: &[&str], out: Option<&Path>) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one error line:\n{err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{args:?}: expected {n:?} in {:?}",
            lines[0]
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    if let Some(out) = out {
        assert!(
            !out.exists(),
            "{args:?}: a failed run left {}",
            out.display()
        );
        let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".onnx-prune") || n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}

/// The model must fail in `inspect` and in a structured run, naming every needle.
fn rejects(name: &str, m: &ModelProto, needles: &[&str]) {
    let p = save(name, m);
    fails(&["inspect", s(&p)], needles, None);
    fails_to_prune(name, &p, needles);
}

/// A model `inspect` can describe (it names the problem and exits 0) but no pass can use.
fn described_but_rejected(name: &str, m: &ModelProto, needles: &[&str]) {
    let p = save(name, m);
    let o = run(&["inspect", s(&p)]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "inspect {name}:\n{all}");
    for n in needles {
        assert!(all.contains(n), "inspect {name}: expected {n:?} in\n{all}");
    }
    fails_to_prune(name, &p, needles);
}

fn fails_to_prune(name: &str, p: &Path, needles: &[&str]) {
    let out = own_dir(name).join("out.onnx");
    let calib = common::fixtures().join("mnist_calib_small.npz");
    fails(
        &[
            s(p),
            s(&out),
            "--structured",
            "0.5",
            "--calib",
            s(&calib),
            "--latency-runs",
            "0",
        ],
        needles,
        Some(&out),
    );
}

fn node(m: &mut ModelProto, i: usize) -> &mut NodeProto {
    &mut m.graph.as_mut().unwrap().node[i]
}

fn init<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap()
}

fn edit_raw(t: &mut TensorProto, f: impl FnOnce(&mut Vec<u8>)) {
    let mut v = t.raw_data.take().unwrap().to_vec();
    f(&mut v);
    t.raw_data = Some(v.into());
}

#[test]
fn broken_files() {
    let bytes = base().encode_to_vec();
    let d = dir();
    let truncated = d.join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    fails(&["inspect", s(&truncated)], &["truncated.onnx"], None);
    let empty = d.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    fails(&["inspect", s(&empty)], &["empty.onnx", "empty file"], None);
    let magic = d.join("zip.onnx");
    std::fs::write(&magic, b"PK\x03\x04 a zip, not a model").unwrap();
    fails(&["inspect", s(&magic)], &["zip.onnx"], None);
    let dirpath = d.join("a-directory.onnx");
    std::fs::create_dir_all(&dirpath).unwrap();
    fails(&["inspect", s(&dirpath)], &["a-directory.onnx"], None);
}

#[test]
fn broken_graphs() {
    // A cycle: the first Gemm reads the last one's output.
    let mut m = base();
    node(&mut m, 1).input[0] = "logits".into();
    rejects("cycle", &m, &["cycle"]);

    // A dangling value name.
    let mut m = base();
    node(&mut m, 3).input[0] = "nowhere".into();
    rejects("dangling", &m, &["nowhere"]);

    // Two nodes writing the same value.
    let mut m = base();
    node(&mut m, 4).output[0] = "/net/net.2/Relu_output_0".into();
    rejects("duplicate-output", &m, &["/net/net.2/Relu_output_0"]);

    // Two initializers with one name.
    let mut m = base();
    let dup = init(&mut m, "net.3.bias").clone();
    m.graph.as_mut().unwrap().initializer.push(dup);
    rejects("duplicate-initializer", &m, &["net.3.bias"]);

    // A missing initializer.
    let mut m = base();
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .retain(|t| t.name.as_deref() != Some("net.5.weight"));
    rejects("missing-initializer", &m, &["net.5.weight"]);
}

#[test]
fn broken_tensors() {
    // Raw data shorter than the shape says.
    let mut m = base();
    init(&mut m, "net.3.weight")
        .raw_data
        .as_mut()
        .unwrap()
        .truncate(1000);
    rejects("short-raw", &m, &["net.3.weight"]);

    // A shape whose element count overflows (declared sizes are checked before allocating).
    let mut m = base();
    init(&mut m, "net.3.bias").dims = vec![1 << 40, 1 << 40];
    rejects("huge-dims", &m, &["net.3.bias"]);

    // Negative dimension.
    let mut m = base();
    init(&mut m, "net.3.bias").dims = vec![-128];
    rejects("negative-dims", &m, &["net.3.bias"]);

    // An undefined data type code.
    let mut m = base();
    init(&mut m, "net.3.bias").data_type = Some(99);
    rejects("bad-dtype", &m, &["net.3.bias"]);

    // NaN and Inf in a weight.
    let mut m = base();
    edit_raw(init(&mut m, "net.3.bias"), |raw| {
        raw[0..4].copy_from_slice(&f32::NAN.to_le_bytes())
    });
    described_but_rejected("nan-weight", &m, &["net.3.bias", "NaN"]);
    let mut m = base();
    edit_raw(init(&mut m, "net.1.weight"), |raw| {
        raw[40..44].copy_from_slice(&f32::INFINITY.to_le_bytes())
    });
    described_but_rejected("inf-weight", &m, &["net.1.weight", "Inf"]);

    // External data: the file is missing, or shorter than declared.
    let mut m = base();
    let t = init(&mut m, "net.3.weight");
    let raw = t.raw_data.take().unwrap();
    t.data_location = Some(1);
    let entry = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    t.external_data = vec![entry("location", "weights-missing.bin")];
    rejects("external-missing", &m, &["weights-missing.bin"]);
    std::fs::write(dir().join("weights-short.bin"), &raw[..raw.len() / 3]).unwrap();
    init(&mut m, "net.3.weight").external_data = vec![entry("location", "weights-short.bin")];
    rejects("external-short", &m, &["weights-short.bin", "net.3.weight"]);
    // A location escaping the model's folder.
    init(&mut m, "net.3.weight").external_data = vec![entry("location", "../../etc/passwd")];
    rejects("external-escape", &m, &["net.3.weight"]);
}

#[test]
fn partial_support_prunes_around_nodes_the_interpreter_cannot_run() {
    // ResNet with one ReLU replaced by Shrink, which onnxruntime runs and the interpreter does
    // not: the groups reaching it are frozen, the others pruned, validation in onnxruntime.
    let bytes = std::fs::read(common::fixtures().join("resnet.onnx")).unwrap();
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    let shrink = m
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.name() == "/layer2/relu1/Relu")
        .expect("fixture node");
    shrink.op_type = Some("Shrink".into());
    for (name, v) in [("lambd", 0.1f32), ("bias", 0.0)] {
        shrink.attribute.push(AttributeProto {
            name: Some(name.into()),
            f: Some(v),
            r#type: Some(1),
            ..Default::default()
        });
    }
    let shrink = shrink.clone();
    let p = save("partial", &m);
    let o = run(&["inspect", s(&p)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("FLOPs") && text.contains("not counted: 1 Shrink"),
        "{text}"
    );

    let out = dir().join("partial-out.onnx");
    let report = dir().join("partial-report.json");
    let calib = common::fixtures().join("mnist_calib_small.npz");
    let o = run(&[
        s(&p),
        s(&out),
        "--structured",
        "0.5",
        "--calib",
        s(&calib),
        "--latency-runs",
        "0",
        "--report",
        s(&report),
    ]);
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("partial support") && err.contains("Shrink"),
        "{err}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        r["partial"]["unsupported"]
            .as_str()
            .unwrap()
            .contains("Shrink")
    );
    assert_eq!(
        r["criterion"], "magnitude",
        "hap needs gradients through Shrink"
    );
    assert!(!r["partial"]["disabled"].as_array().unwrap().is_empty());
    assert!(
        r["units_removed"].as_u64().unwrap() > 0,
        "the rest is pruned"
    );
    let frozen = r["frozen"].as_object().unwrap();
    assert!(frozen.keys().any(|k| k.contains("Shrink")), "{frozen:?}");

    let pruned = ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    let pg = pruned.graph.as_ref().unwrap();
    let kept: Vec<&NodeProto> = pg.node.iter().filter(|n| n.op_type() == "Shrink").collect();
    assert_eq!(
        kept,
        vec![&shrink],
        "the unsupported node is written back unchanged"
    );
    // The conv feeding Shrink keeps its 32 output channels; the stem (away from it) is cut.
    let dims = |g: &onnx_prune::onnx::proto::GraphProto, w: &str| {
        g.initializer
            .iter()
            .find(|t| t.name() == w)
            .map(|t| t.dims.clone())
    };
    let g0 = m.graph.as_ref().unwrap();
    let w = pg
        .node
        .iter()
        .find(|n| n.name() == "/layer2/conv1/Conv")
        .unwrap()
        .input[1]
        .clone();
    assert_eq!(dims(pg, &w).unwrap()[0], dims(g0, &w).unwrap()[0]);
    let stem = pg
        .node
        .iter()
        .find(|n| n.name() == "/stem/stem.0/Conv")
        .unwrap()
        .input[1]
        .clone();
    assert!(dims(pg, &stem).unwrap()[0] < dims(g0, &stem).unwrap()[0]);
    common::onnx_check_files(std::slice::from_ref(&out));

    // The unstructured pass works on onnxruntime's layer inputs: masks and the OBS update are
    // layer-wise; SNOWS (HVPs through the graph) falls back to the OBS update, named.
    let out2 = dir().join("partial-sparse.onnx");
    let report2 = dir().join("partial-sparse.json");
    let o = run(&[
        s(&p),
        s(&out2),
        "--unstructured",
        "0.5",
        "--method",
        "snows",
        "--calib",
        s(&calib),
        "--latency-runs",
        "0",
        "--report",
        s(&report2),
    ]);
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("partial support") && err.contains("snows"),
        "{err}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report2).unwrap()).unwrap();
    assert_eq!(r["method"], "obs");
    assert!(
        r["partial"]["unsupported"]
            .as_str()
            .unwrap()
            .contains("Shrink")
    );
    assert!(r["batchnorms_recalibrated"].as_u64().unwrap() > 0);
    let layers = r["layers"].as_array().unwrap();
    assert!(layers.len() > 3);
    let pruned = ModelProto::decode(std::fs::read(&out2).unwrap().as_slice()).unwrap();
    let pg = pruned.graph.as_ref().unwrap();
    let written = onnx_prune::ir::Model::load(&out2).unwrap();
    for l in layers {
        let (params, cut) = (l["params"].as_u64().unwrap(), l["pruned"].as_u64().unwrap());
        assert!((cut as f64 - params as f64 / 2.0).abs() <= 1.0, "{l}");
        // The least-squares update does better than the mask alone on the inputs it saw.
        let (masked, after) = (
            l["error_masked"].as_f64().unwrap(),
            l["error_after"].as_f64().unwrap(),
        );
        assert!(after <= masked + 1e-9, "{l}");
        let w = &written.graph.weights[&written.graph.by_name[l["weight"].as_str().unwrap()]];
        let zeros = w.tensor.to_f64_vec().iter().filter(|v| **v == 0.0).count();
        assert!(zeros as u64 >= cut, "{l}");
    }
    let kept: Vec<&NodeProto> = pg.node.iter().filter(|n| n.op_type() == "Shrink").collect();
    assert_eq!(kept, vec![&shrink]);
    common::onnx_check_files(std::slice::from_ref(&out2));

    // Pruning at initialisation scores through the whole graph: refused, with the op named.
    let out3 = own_dir("partial-at-init").join("out.onnx");
    fails(
        &[
            s(&p),
            s(&out3),
            "--unstructured",
            "0.9",
            "--at-init",
            "snip",
            "--calib",
            s(&calib),
        ],
        &["Shrink", "--at-init snip"],
        Some(&out3),
    );
}

#[test]
fn unsupported_models() {
    // A quantized model: every unsupported operator named at once.
    let mut m = base();
    node(&mut m, 2).op_type = Some("QLinearConv".into());
    node(&mut m, 4).op_type = Some("DequantizeLinear".into());
    described_but_rejected("quantized", &m, &["QLinearConv", "DequantizeLinear"]);

    // A node of an unknown domain.
    let mut m = base();
    node(&mut m, 2).domain = Some("com.example.custom".into());
    described_but_rejected("unknown-domain", &m, &["com.example.custom"]);

    // Opsets outside the supported range.
    for (name, v) in [("opset-old", 3), ("opset-new", 99)] {
        let mut m = base();
        m.opset_import = vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(v),
        }];
        rejects(name, &m, &["opset", &v.to_string()]);
    }

    // An int8 weight feeding a Gemm.
    let mut m = base();
    let t = init(&mut m, "net.5.bias");
    t.data_type = Some(3);
    t.raw_data = Some(vec![1u8; 10].into());
    described_but_rejected("int8-weight", &m, &["/net/net.5/Gemm", "int8"]);
}

#[test]
fn bad_calibration_and_flags() {
    let model = common::fixtures().join("mlp.onnx");
    let d = dir();
    let out = own_dir("flags").join("out.onnx");
    let calib = common::fixtures().join("mnist_calib_small.npz");
    let feeds = onnx_prune::data::read_npz(&calib).unwrap();
    let prune = |extra: &[&str], needles: &[&str]| {
        let mut args = vec![s(&model), s(&out), "--latency-runs", "0"];
        args.extend_from_slice(extra);
        fails(&args, needles, Some(&out));
    };
    // Wrong name, wrong shape.
    let wrong = d.join("calib-wrong-name.npz");
    onnx_prune::data::write_npz(&wrong, &[("image".into(), feeds[0].1.clone())]).unwrap();
    prune(
        &["--structured", "0.5", "--calib", s(&wrong)],
        &["\"image\"", "input"],
    );
    let shape = d.join("calib-wrong-shape.npz");
    onnx_prune::data::write_npz(&shape, &[("input".into(), feeds[0].1.reshape(&[8, 784]))])
        .unwrap();
    prune(
        &["--structured", "0.5", "--calib", s(&shape)],
        &["[8, 784]"],
    );
    // NaN in the calibration data.
    let mut x = feeds[0].1.as_float().unwrap().to_owned();
    x[[3, 0, 5, 5]] = f32::NAN;
    let nan = d.join("calib-nan.npz");
    onnx_prune::data::write_npz(
        &nan,
        &[("input".into(), onnx_prune::tensor::Tensor::f32(x))],
    )
    .unwrap();
    prune(
        &["--structured", "0.5", "--calib", s(&nan)],
        &["calib-nan.npz", "NaN"],
    );
    // A dtype the model does not take (int64 data for a float input).
    let ints = d.join("calib-int.npy");
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 1, 28, 28), }";
    let pad = 64 - (10 + header.len() + 1) % 64;
    let h = format!("{header}{}\n", " ".repeat(pad));
    npy.extend_from_slice(&(h.len() as u16).to_le_bytes());
    npy.extend_from_slice(h.as_bytes());
    npy.extend(std::iter::repeat_n(0u8, 2 * 784 * 8));
    std::fs::write(&ints, npy).unwrap();
    prune(
        &["--structured", "0.5", "--calib", s(&ints)],
        &["calib-int.npy"],
    );
    // Ratios out of range.
    prune(&["--structured", "1.5"], &["--structured"]);
    prune(&["--structured=-0.1"], &["--structured"]);
    prune(&["--unstructured", "1.0"], &["--unstructured"]);
    prune(&["--nm", "4:2"], &["--nm"]);
    prune(&["--structured", "0.5", "--max-drop=-1"], &["--max-drop"]);
    // The output path equal to the input (also through another spelling of the same path).
    let copy = d.join("same.onnx");
    std::fs::copy(&model, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let other = d.join(".").join("same.onnx");
    fails(
        &[s(&copy), s(&other), "--structured", "0.5"],
        &["same.onnx"],
        None,
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "the input was touched"
    );
    // An existing output is not overwritten without --force.
    let existing = d.join("existing.onnx");
    std::fs::write(&existing, b"keep me").unwrap();
    fails(
        &[
            s(&model),
            s(&existing),
            "--structured",
            "0.5",
            "--calib",
            s(&calib),
        ],
        &["existing.onnx", "--force"],
        None,
    );
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
}

/// SIGINT in the middle of a long run: the process stops, and neither the output nor a
/// temporary file is left behind.
#[test]
fn an_interrupted_run_leaves_nothing() {
    let d = dir().join("interrupt");
    std::fs::create_dir_all(&d).unwrap();
    let out = d.join("out.onnx");
    let fx = common::fixtures();
    let mut child = Command::new(env!("CARGO_BIN_EXE_onnx-prune"))
        .args([
            s(&fx.join("resnet.onnx")),
            s(&out),
            "--unstructured",
            "0.7",
            "--method",
            "snows",
            "--calib",
            s(&fx.join("mnist_calib.npz")),
        ])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run finished before the interrupt");
    assert_eq!(status.code(), Some(128 + libc::SIGINT), "{status:?}");
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `scripts/batch.sh` over a folder with one good and one broken model: it goes on past the
/// failure, writes the good model, one summary row per model, and exits 1.
#[test]
fn batch_continues_past_failures_and_summarises() {
    let d = dir().join("batch");
    let (models, out) = (d.join("models"), d.join("out"));
    std::fs::create_dir_all(&models).unwrap();
    let fx = common::fixtures();
    std::fs::copy(fx.join("mlp.onnx"), models.join("good.onnx")).unwrap();
    std::fs::write(models.join("broken.onnx"), b"not a model").unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/batch.sh");
    let o = Command::new("bash")
        .arg(&script)
        .args([
            s(&models),
            s(&out),
            "--bin",
            env!("CARGO_BIN_EXE_onnx-prune"),
            "--",
        ])
        .args([
            "--structured",
            "0.5",
            "--calib",
            s(&fx.join("mnist_calib_small.npz")),
            "--latency-runs",
            "0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.join("good.onnx").exists());
    assert!(!out.join("broken.onnx").exists());
    let summary = std::fs::read_to_string(out.join("summary.tsv")).unwrap();
    let rows: Vec<&str> = summary.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{summary}");
    assert!(
        rows.iter().any(|r| r.starts_with("good\tok\t")),
        "{summary}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("broken\tfailed (exit 1)") && r.contains("not an ONNX model")),
        "{summary}"
    );
}
