//! Shared test helpers: where setup put the downloaded models, and a seeded input for each
//! fixture and real model.
#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use onnx_prune::data::read_npz;
use onnx_prune::tensor::Tensor;
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
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh", p.display());
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
    Tensor::f32(ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| r.uniform()).collect()).unwrap())
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

fn real(name: &str, feeds: Vec<(&str, Tensor<f32>)>) -> Case {
    Case {
        name: name.into(),
        path: model_path(name),
        feeds: feeds.into_iter().map(|(n, t)| (n.to_string(), t)).collect(),
        fixture: false,
    }
}

/// MiniLM inputs: token ids in the vocabulary and a mask with padding on the second sentence.
pub fn minilm_feeds(batch: usize, len: usize) -> Vec<(&'static str, Tensor<f32>)> {
    let mut r = Rng::new(7);
    let ids: Vec<i64> = (0..batch * len)
        .map(|i| if i % len == 0 { 101 } else { 1000 + (r.next_u64() % 28000) as i64 })
        .collect();
    let mask: Vec<i64> = (0..batch * len).map(|i| if i / len == 1 && i % len >= len - 4 { 0 } else { 1 }).collect();
    let t = |v: Vec<i64>| Tensor::i64(ArrayD::from_shape_vec(IxDyn(&[batch, len]), v).unwrap());
    vec![("input_ids", t(ids)), ("attention_mask", t(mask))]
}

pub fn real_cases() -> Vec<Case> {
    let mut v = vec![
        real("pp_lcnet_orientation", vec![("x", uniform(&[2, 3, 224, 224], 1))]),
        real("ppocr_v4_rec", vec![("x", uniform(&[2, 3, 48, 320], 2))]),
        real("ppocr_v4_det", vec![("x", uniform(&[1, 3, 160, 160], 3))]),
        real("ppocr_mobile_cls", vec![("x", uniform(&[2, 3, 48, 192], 4))]),
        real("minilm_l3", minilm_feeds(2, 16)),
        real("open_nsfw", vec![("input_0", uniform(&[2, 224, 224, 3], 5))]),
    ];
    for (i, n) in LIGHT.iter().enumerate() {
        let input = if ["light_resnet50", "light_shufflenet", "light_zfnet512"].contains(n) { "gpu_0/data_0" } else { "data_0" };
        v.push(real(n, vec![(input, uniform(&[1, 3, 224, 224], 10 + i as u64))]));
    }
    v
}

pub fn all_cases() -> Vec<Case> {
    let mut v = fixture_cases();
    v.extend(real_cases());
    v
}
