//! Shared test helpers: where setup put the downloaded models, and a seeded input for each
//! fixture and real model.
#![allow(dead_code)]

use ndarray::{ArrayD, Axis, IxDyn, Slice};
use onnx_prune::data::read_npz;
use onnx_prune::tensor::{Data, Tensor};
use std::path::PathBuf;

/// `.deps/` (or `$ONNX_PRUNE_DEPS`), filled by scripts/setup.sh.
pub fn deps() -> PathBuf {
    std::env::var_os("ONNX_PRUNE_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps"))
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn model_path(name: &str) -> PathBuf {
    let p = deps().join("models").join(format!("{name}.onnx"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// A small deterministic generator (xorshift) so inputs do not depend on a crate's version.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

pub fn uniform(shape: &[usize], seed: u64) -> Tensor<f32> {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::f32(
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| r.uniform()).collect()).unwrap(),
    )
}

pub struct Case {
    pub name: String,
    pub path: PathBuf,
    pub feeds: Vec<(String, Tensor<f32>)>,
    /// Whether the model ships in fixtures/ (always present) or comes from setup.
    pub fixture: bool,
}

pub const FIXTURES: &[&str] = &["resnet", "mobilenet", "vit", "mlp", "mlpnet"];
pub const LIGHT: &[&str] = &[
    "light_resnet50",
    "light_densenet121",
    "light_shufflenet",
    "light_squeezenet",
    "light_vgg19",
    "light_inception_v1",
    "light_inception_v2",
    "light_bvlc_alexnet",
    "light_zfnet512",
];

pub fn fixture_cases() -> Vec<Case> {
    let feeds = read_npz(&fixtures().join("mnist_calib_small.npz")).unwrap();
    FIXTURES
        .iter()
        .map(|n| fixtures().join(format!("{n}.onnx")))
        .filter(|p| p.is_file())
        .map(|path| Case {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            path,
            feeds: feeds.clone(),
            fixture: true,
        })
        .collect()
}

/// The first `n` samples of every array (axis 0).
pub fn head(feeds: Vec<(String, Tensor<f32>)>, n: usize) -> Vec<(String, Tensor<f32>)> {
    feeds
        .into_iter()
        .map(|(k, t)| {
            let m = n.min(t.shape()[0]);
            let data = match &t.data {
                Data::Float(a) => Data::Float(
                    a.slice_axis(Axis(0), Slice::from(0..m))
                        .to_owned()
                        .into_shared(),
                ),
                Data::Int(a) => Data::Int(
                    a.slice_axis(Axis(0), Slice::from(0..m))
                        .to_owned()
                        .into_shared(),
                ),
                Data::Bool(a) => Data::Bool(
                    a.slice_axis(Axis(0), Slice::from(0..m))
                        .to_owned()
                        .into_shared(),
                ),
            };
            (
                k,
                Tensor {
                    dtype: t.dtype,
                    data,
                },
            )
        })
        .collect()
}

/// Inputs made by scripts/make_inputs.py from real photos, rendered text and sentences
/// (`split` is "calib" or "eval").
pub fn real_inputs(name: &str, split: &str) -> Vec<(String, Tensor<f32>)> {
    let p = deps().join("inputs").join(format!("{name}_{split}.npz"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    read_npz(&p).unwrap()
}

pub const REAL: &[&str] = &[
    "pp_lcnet_orientation",
    "ppocr_v4_rec",
    "ppocr_v4_det",
    "ppocr_mobile_cls",
    "minilm_l3",
    "open_nsfw",
];

/// Every real model with the first two held-out samples (one for the fixed-batch light nets).
pub fn real_cases() -> Vec<Case> {
    REAL.iter()
        .chain(LIGHT)
        .map(|name| Case {
            name: name.to_string(),
            path: model_path(name),
            feeds: head(real_inputs(name, "eval"), 2),
            fixture: false,
        })
        .collect()
}

pub fn all_cases() -> Vec<Case> {
    let mut v = fixture_cases();
    v.extend(real_cases());
    v
}

/// Runs `onnx.checker.check_model(full_check=True)` (strict shape inference) on every file,
/// in one Python process of the setup's venv; panics naming the files that fail.
pub fn onnx_check_files(paths: &[PathBuf]) {
    if paths.is_empty() {
        return;
    }
    let py = deps().join("venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/setup.sh",
        py.display()
    );
    let script = "import onnx, sys\nbad = []\nfor p in sys.argv[1:]:\n    try:\n        onnx.checker.check_model(onnx.load(p), full_check=True)\n    except Exception as e:\n        bad.append(f'{p}: {e}')\nprint('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n";
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .args(paths)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "onnx.checker rejects:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh folder under target/ for a test's files.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Squared distance of a pruned model's first output (its encoded `bytes`, decoded beside the
/// original `m`) to the original's on `feeds`, both run in the interpreter.
pub fn output_sq_error(
    m: &onnx_prune::ir::Model,
    bytes: &[u8],
    feeds: &[(String, Tensor<f32>)],
) -> f64 {
    use onnx_prune::interp::Engine;
    let p = onnx_prune::ir::Model::from_loaded(
        onnx_prune::onnx::decode_model(bytes.to_vec().into(), &m.source.path).unwrap(),
    )
    .unwrap();
    let y = Engine::<f32>::new(&p.graph)
        .unwrap()
        .run(feeds.to_vec())
        .unwrap();
    let d = Engine::<f32>::new(&m.graph)
        .unwrap()
        .run(feeds.to_vec())
        .unwrap();
    let (a, b) = (y[0].to_f64_vec(), d[0].to_f64_vec());
    a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum()
}
