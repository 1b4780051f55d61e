//! The quality table of the README: one-shot structured pruning (no fine-tuning) of every fixture
//! and real model, per criterion, ratio and variant (no compensation / compensation /
//! compensation + implants), scored on held-out data:
//! - fixtures, PP-LCNet, PP-OCR cls: top-1 accuracy against the free labels;
//! - PP-OCR rec: exact match and character error rate of the greedy CTC decode of rendered strings;
//! - MiniLM, PP-OCR det: cosine similarity with the dense model's output;
//! - Open-NSFW: Pearson correlation of the NSFW score's log-odds with the dense model's (its
//!   two-way softmax on mostly safe images has cosine ≈ 0.999 whatever is pruned).
//!
//! `cargo run --release --example quality_table -- [--models a,b] [--criteria c,d] [--ratios 0.3,0.5]
//!  [--variants none,comp,implant] [--out target/quality.json]`  (needs scripts/setup.sh)

use onnx_prune::data::{read_npy, read_npz};
use onnx_prune::interp::Feeds;
use onnx_prune::ir::Model;
use onnx_prune::prune::compensate::CompensateOptions;
use onnx_prune::prune::{self, Criterion, StructuredOptions};
use onnx_prune::runtime::{Device, OrtSession};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Case {
    name: &'static str,
    model: PathBuf,
    calib: PathBuf,
    eval: PathBuf,
    calib_labels: Option<PathBuf>,
    eval_labels: Option<PathBuf>,
    metric: Metric,
}

#[derive(Clone, Copy)]
enum Metric {
    Accuracy,
    Ctc,
    Cosine,
    LogOdds,
}

fn cases() -> Vec<Case> {
    let f = root().join("fixtures");
    let d = root().join(".deps");
    let mut v = Vec::new();
    for n in ["resnet", "mobilenet", "vit", "mlp", "mlpnet"] {
        v.push(Case {
            name: n,
            model: f.join(format!("{n}.onnx")),
            calib: f.join("mnist_calib.npz"),
            eval: f.join("mnist_heldout.npz"),
            calib_labels: Some(f.join("mnist_calib_labels.npy")),
            eval_labels: Some(f.join("mnist_heldout_labels.npy")),
            metric: Metric::Accuracy,
        });
    }
    for (n, metric) in [
        ("pp_lcnet_orientation", Metric::Accuracy),
        ("ppocr_mobile_cls", Metric::Accuracy),
        ("ppocr_v4_rec", Metric::Ctc),
        ("ppocr_v4_det", Metric::Cosine),
        ("minilm_l3", Metric::Cosine),
        ("open_nsfw", Metric::LogOdds),
    ] {
        let labels = |split: &str| {
            let p = d.join("inputs").join(format!("{n}_{split}_labels.npy"));
            p.exists().then_some(p)
        };
        v.push(Case {
            name: n,
            model: d.join("models").join(format!("{n}.onnx")),
            calib: d.join("inputs").join(format!("{n}_calib.npz")),
            eval: d.join("inputs").join(format!("{n}_eval.npz")),
            calib_labels: labels("calib"),
            eval_labels: labels("eval"),
            metric,
        });
    }
    v
}

/// Greedy CTC decode of [N, T, C] probabilities with PaddleOCR's vocabulary (blank 0).
fn ctc(probs: &onnx_prune::tensor::Tensor<f32>, vocab: &[String]) -> Vec<String> {
    let a = probs.as_float().expect("float");
    let (n, t, c) = (a.shape()[0], a.shape()[1], a.shape()[2]);
    (0..n)
        .map(|i| {
            let mut out = String::new();
            let mut prev = 0usize;
            for j in 0..t {
                let mut best = 0;
                for k in 1..c {
                    if a[[i, j, k]] > a[[i, j, best]] {
                        best = k;
                    }
                }
                if best != 0
                    && best != prev
                    && let Some(ch) = vocab.get(best - 1)
                {
                    out.push_str(ch);
                }
                prev = best;
            }
            out
        })
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            cur[j] = (prev[j] + 1)
                .min(cur[j - 1] + 1)
                .min(prev[j - 1] + usize::from(a[i - 1] != b[j - 1]));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// (headline score, text) of a model's bytes on the case's held-out data.
fn score(
    case: &Case,
    bytes: &[u8],
    dense: &[onnx_prune::tensor::Tensor<f32>],
    eval: &Feeds<f32>,
    vocab: &[String],
    labels: Option<&[i64]>,
    strings: Option<&[String]>,
) -> (f64, String) {
    let mut s = OrtSession::new(bytes, case.model.parent(), Device::Cpu, 0).unwrap();
    let y = s.run(eval).unwrap();
    match case.metric {
        Metric::Accuracy => {
            let acc = onnx_prune::validate::accuracy(&y[0].1, labels.expect("labels")).unwrap();
            (acc, format!("{:.1}", 100.0 * acc))
        }
        Metric::Ctc => {
            let got = ctc(&y[0].1, vocab);
            let want = strings.expect("strings");
            let exact =
                got.iter().zip(want).filter(|(a, b)| a == b).count() as f64 / want.len() as f64;
            let (e, n): (usize, usize) = got
                .iter()
                .zip(want)
                .map(|(a, b)| (edit_distance(a, b), b.chars().count()))
                .fold((0, 0), |x, y| (x.0 + y.0, x.1 + y.1));
            (
                exact,
                format!(
                    "{:.1} / {:.1}",
                    100.0 * exact,
                    100.0 * e as f64 / n.max(1) as f64
                ),
            )
        }
        Metric::Cosine => {
            // The first float output: MiniLM's first output passes input_ids through.
            let i = dense
                .iter()
                .position(|t| t.as_float().is_some())
                .unwrap_or(0);
            let agg = onnx_prune::validate::agreement("y", &dense[i], &y[i].1).unwrap();
            (agg.cosine, format!("{:.4}", agg.cosine))
        }
        Metric::LogOdds => {
            let r = pearson(&log_odds(&dense[0]), &log_odds(&y[0].1));
            (r, format!("{r:.4}"))
        }
    }
}

/// ln(p₁ / p₀) per row of an [N, 2] probability output.
fn log_odds(t: &onnx_prune::tensor::Tensor<f32>) -> Vec<f64> {
    t.to_f64_vec()
        .chunks(2)
        .map(|p| (p[1].max(1e-12) / p[0].max(1e-12)).ln())
        .collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().max(1) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma).powi(2);
        bb += (y - mb).powi(2);
    }
    ab / (aa * bb).sqrt().max(1e-30)
}

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

fn main() {
    let models = arg("--models");
    let criteria: Vec<Criterion> = arg("--criteria")
        .unwrap_or_else(|| "magnitude,taylor,fisher,hap,sosp-h".into())
        .split(',')
        .map(|c| <Criterion as clap::ValueEnum>::from_str(c, true).expect("criterion"))
        .collect();
    let ratios: Vec<f64> = arg("--ratios")
        .unwrap_or_else(|| "0.3,0.5,0.7".into())
        .split(',')
        .map(|r| r.parse().unwrap())
        .collect();
    let variants: Vec<String> = arg("--variants")
        .unwrap_or_else(|| "none,comp,implant".into())
        .split(',')
        .map(String::from)
        .collect();
    let out = arg("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/quality.json"));
    let mut rows = Vec::new();
    for case in cases() {
        if models
            .as_ref()
            .is_some_and(|m| !m.split(',').any(|x| x == case.name))
        {
            continue;
        }
        if !case.model.exists() {
            eprintln!("{}: missing (run scripts/setup.sh)", case.model.display());
            continue;
        }
        let m = Model::load(&case.model).unwrap();
        let calib = read_npz(&case.calib).unwrap();
        let eval = read_npz(&case.eval).unwrap();
        let labels = |p: &Option<PathBuf>| p.as_ref().map(|p| read_npy(p).unwrap().to_i64_vec());
        let (cl, el) = (labels(&case.calib_labels), labels(&case.eval_labels));
        let strings: Option<Vec<String>> = matches!(case.metric, Metric::Ctc).then(|| {
            let p = root()
                .join(".deps/inputs")
                .join(format!("{}_eval_labels.json", case.name));
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
        });
        let vocab: Vec<String> = m
            .source
            .proto
            .metadata_props
            .iter()
            .find(|e| e.key() == "character")
            .map(|e| {
                e.value()
                    .lines()
                    .map(String::from)
                    .chain(std::iter::once(" ".to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let dense_bytes = prost::Message::encode_to_vec(&m.source.proto);
        let dense_out: Vec<_> = OrtSession::new(&dense_bytes, case.model.parent(), Device::Cpu, 0)
            .unwrap()
            .run(&eval)
            .unwrap()
            .into_iter()
            .map(|x| x.1)
            .collect();
        let (_, dense_txt) = score(
            &case,
            &dense_bytes,
            &dense_out,
            &eval,
            &vocab,
            el.as_deref(),
            strings.as_deref(),
        );
        println!("{} dense: {dense_txt}", case.name);
        let data = prune::Data {
            calib: calib.clone(),
            calib_labels: cl.clone(),
            eval: eval.clone(),
            eval_labels: el.clone(),
            source: case.calib.display().to_string(),
            synthetic: false,
        };
        for &c in &criteria {
            for &r in &ratios {
                for v in &variants {
                    let comp = v != "none";
                    let o = StructuredOptions {
                        ratio: r,
                        criterion: c,
                        implant_ratio: (v == "implant").then_some(0.1),
                        compensation: CompensateOptions {
                            refit: comp,
                            bn_recalibrate: comp,
                            ..Default::default()
                        },
                        latency_runs: 0,
                        ..Default::default()
                    };
                    let t0 = std::time::Instant::now();
                    let res = prune::structured::run(&m, &data, &o, &mut |_, _, _| {});
                    let secs = t0.elapsed().as_secs_f64();
                    match res {
                        Ok(outc) => {
                            let (sc, txt) = score(
                                &case,
                                &outc.bytes,
                                &dense_out,
                                &eval,
                                &vocab,
                                el.as_deref(),
                                strings.as_deref(),
                            );
                            let removed =
                                outc.report.params_removed / outc.report.before.params as f64;
                            println!(
                                "{} {c} R={r} {v}: {txt} (−{:.1}% params, {} implants, {secs:.1}s)",
                                case.name,
                                100.0 * removed,
                                outc.report
                                    .compensation
                                    .implants
                                    .iter()
                                    .map(|i| i.channels)
                                    .sum::<usize>()
                            );
                            rows.push(serde_json::json!({"model": case.name, "criterion": c.to_string(), "ratio": r, "variant": v, "score": sc, "text": txt, "dense": dense_txt, "params_removed": removed, "seconds": secs}));
                        }
                        Err(e) => {
                            println!("{} {c} R={r} {v}: error {e}", case.name);
                            rows.push(serde_json::json!({"model": case.name, "criterion": c.to_string(), "ratio": r, "variant": v, "error": e.to_string()}));
                        }
                    }
                    std::fs::write(&out, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
                }
            }
        }
    }
    let _ = Path::new(".");
}
