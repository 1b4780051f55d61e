//! The differentiable interpreter in f32 against an independent autodiff: gradients and
//! Hessian-vector products of the cross-entropy of each fixture model, computed by PyTorch's
//! double backward in float64 (`fixtures/make_reference.py`, committed results under
//! `fixtures/reference/`). Relative error ≤ 1e-4 per model (‖ours − torch‖ / ‖torch‖ over all
//! weights), and every tensor's error is printed.

use crate::common;

use ndarray::ArrayD;
use onnx_prune::autodiff::{Curvature, Objective, OutputKind};
use onnx_prune::data::{read_npy, read_npz};
use onnx_prune::interp::Feeds;
use onnx_prune::ir::Model;

fn by_name(path: &std::path::Path) -> Vec<(String, ArrayD<f32>)> {
    read_npz(path)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.as_float().expect("float").to_owned()))
        .collect()
}

fn rel(ours: &[ArrayD<f32>], theirs: &[ArrayD<f32>]) -> f64 {
    let (mut d, mut r) = (0.0f64, 0.0f64);
    for (a, b) in ours.iter().zip(theirs) {
        for (x, y) in a.iter().zip(b) {
            d += (*x as f64 - *y as f64).powi(2);
            r += (*y as f64).powi(2);
        }
    }
    (d / r.max(f64::MIN_POSITIVE)).sqrt()
}

#[test]
fn gradients_and_hvps_match_pytorch() {
    let refdir = common::fixtures().join("reference");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(refdir.join("reference.json")).unwrap())
            .unwrap();
    let feeds: Feeds<f32> = common::head(
        read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap(),
        8,
    );
    let labels = read_npy(&common::fixtures().join("mnist_calib_labels.npy"))
        .unwrap()
        .to_i64_vec()[..8]
        .to_vec();
    for model in ["resnet", "mobilenet", "vit"] {
        let m = Model::load(&common::fixtures().join(format!("{model}.onnx"))).unwrap();
        let g = &m.graph;
        let grad_ref = by_name(&refdir.join(format!("{model}_grad.npz")));
        let v = by_name(&refdir.join(format!("{model}_v.npz")));
        let hv_ref = by_name(&refdir.join(format!("{model}_hv.npz")));
        assert_eq!(
            grad_ref.len(),
            meta["models"][model]["n_weight_tensors"].as_u64().unwrap() as usize
        );
        let names: Vec<&str> = grad_ref.iter().map(|(n, _)| n.as_str()).collect();
        let wrt: Vec<usize> = names
            .iter()
            .map(|n| g.id(n).unwrap_or_else(|| panic!("{model}: no value {n:?}")))
            .collect();
        let lookup = |set: &[(String, ArrayD<f32>)]| -> Vec<ArrayD<f32>> {
            names
                .iter()
                .map(|n| set.iter().find(|(m, _)| m == n).unwrap().1.clone())
                .collect()
        };
        let (v, hv_ref, grad_ref) = (lookup(&v), lookup(&hv_ref), lookup(&grad_ref));
        let obj = Objective::CrossEntropy {
            value: g.outputs[0],
            labels: labels.clone(),
            kind: OutputKind::Logits,
            temperature: 1.0,
        };
        let mut cur = Curvature::<f32>::new(g, 8).unwrap();
        let (loss, grad) = cur.gradient(&feeds, &obj, &wrt).unwrap();
        let h = cur.hvp(&feeds, &obj, &wrt, &v).unwrap();
        let loss_ref = meta["models"][model]["loss"].as_f64().unwrap();
        let (eg, eh) = (rel(&grad, &grad_ref), rel(&h.hv, &hv_ref));
        // Per tensor, relative to the tensor's norm floored at 1e-6 of the whole (the key bias of
        // attention has an exactly zero gradient: softmax ignores a per-row shift).
        let norm = |a: &[ArrayD<f32>]| {
            a.iter()
                .flat_map(|t| t.iter())
                .map(|&x| (x as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let worst = |ours: &[ArrayD<f32>], theirs: &[ArrayD<f32>]| {
            let floor = 1e-6 * norm(theirs);
            names
                .iter()
                .zip(ours.iter().zip(theirs))
                .map(|(n, (a, b))| {
                    let d: f64 = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    (d / (norm(std::slice::from_ref(b)) + floor), *n)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap()
        };
        let (wg, wh) = (worst(&grad, &grad_ref), worst(&h.hv, &hv_ref));
        println!(
            "{model:<10} vs PyTorch f64: loss {loss:.9} (torch {loss_ref:.9})  gradient rel err {eg:.2e}  H·v rel err {eh:.2e}  \
             (worst tensors: grad {:.1e} {:?}, H·v {:.1e} {:?})",
            wg.0, wg.1, wh.0, wh.1
        );
        assert!(
            (loss - loss_ref).abs() <= 1e-4 * loss_ref.abs() + 1e-6,
            "{model}: loss {loss} vs {loss_ref}"
        );
        assert!(eg <= 1e-4, "{model}: gradient relative error {eg:.3e}");
        assert!(eh <= 1e-4, "{model}: H·v relative error {eh:.3e}");
        // The same HVP's gradient is the plain gradient.
        assert!(rel(&h.gradient, &grad) < 1e-5);
    }
}
