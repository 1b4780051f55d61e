//! The differentiable interpreter against finite differences, in f64:
//! - every ONNX node test the interpreter runs, whose op is differentiable: gradients of
//!   L = Σ r·y (random r) with respect to every float input, and exact Hessian-vector products
//!   (forward-over-reverse) against central differences of the gradient;
//! - whole fixture models: gradients, HVPs, JVPs, Gauss-Newton products, per-sample gradients,
//!   micro-batching, Hutchinson traces against exact traces, and layer Hessians.

use crate::common;

use ndarray::{ArrayD, IxDyn};
use onnx_prune::autodiff::rng::SplitMix64;
use onnx_prune::autodiff::vjp::{differentiable, differentiable_inputs};
use onnx_prune::autodiff::{Curvature, Diff, HutchinsonOptions, Objective, Tape};
use onnx_prune::interp::{Engine, Feeds};
use onnx_prune::ir::{Graph, Model};
use onnx_prune::onnx::TensorProto;
use onnx_prune::tensor::{Data, Dual, Tensor, tensor_from_proto};
use prost::Message;
use std::path::Path;

fn random_like(shape: &[usize], rng: &mut SplitMix64) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(shape), |_| rng.normal())
}

/// L = Σ_k r_k · y_k over the float outputs.
fn objective_value(g: &Graph, tape: &Tape<f64>, r: &[(usize, ArrayD<f64>)]) -> f64 {
    r.iter()
        .map(|(id, rk)| {
            tape.float(g, *id)
                .unwrap()
                .iter()
                .zip(rk)
                .map(|(a, b)| a * b)
                .sum::<f64>()
        })
        .sum()
}

fn with_input(feeds: &Feeds<f64>, name: &str, x: ArrayD<f64>) -> Feeds<f64> {
    feeds
        .iter()
        .map(|(n, t)| {
            if n == name {
                (n.clone(), Tensor::float(t.dtype, x.clone()))
            } else {
                (n.clone(), t.clone())
            }
        })
        .collect()
}

struct Checked {
    grads: usize,
    hvps: usize,
}

/// Gradient and HVP checks of one node test; Err names the mismatch.
fn check_node_test(dir: &Path, rng: &mut SplitMix64) -> Result<Option<Checked>, String> {
    let Ok(model) = Model::load(&dir.join("model.onnx")) else {
        return Ok(None);
    };
    let g = &model.graph;
    if g.nodes.len() != 1 || Engine::<f64>::exact(g).is_err() {
        return Ok(None);
    }
    let op = g.nodes[0].op.as_ref().unwrap();
    if !differentiable(op) {
        return Ok(None);
    }
    let data = dir.join("test_data_set_0");
    let mut feeds: Feeds<f64> = Vec::new();
    for (i, &id) in g.inputs.iter().enumerate() {
        let p =
            TensorProto::decode(&std::fs::read(data.join(format!("input_{i}.pb"))).unwrap()[..])
                .unwrap();
        let Ok(t) = tensor_from_proto::<f64>(&p) else {
            return Ok(None);
        };
        feeds.push((g.name(id).to_string(), t));
    }
    let diff = Diff::<f64>::new(g).map_err(|e| e.to_string())?;
    let Ok(tape) = diff.forward(feeds.clone()) else {
        return Ok(None);
    };
    let float_outputs: Vec<usize> = g
        .outputs
        .iter()
        .copied()
        .filter(|&o| matches!(tape.get(o).map(|t| &t.data), Some(Data::Float(_))))
        .collect();
    let flows = differentiable_inputs(op, g.nodes[0].inputs.len());
    let float_inputs: Vec<(usize, String)> = g
        .inputs
        .iter()
        .filter(|&&i| {
            matches!(tape.get(i).map(|t| &t.data), Some(Data::Float(_)))
                && !tape.get(i).unwrap().is_empty()
        })
        .filter(|&&i| {
            g.nodes[0]
                .inputs
                .iter()
                .zip(&flows)
                .any(|(v, &f)| f && *v == Some(i))
        })
        .map(|&i| (i, g.name(i).to_string()))
        .collect();
    if float_outputs.is_empty() || float_inputs.is_empty() {
        return Ok(None);
    }
    if float_outputs
        .iter()
        .any(|&o| tape.float(g, o).unwrap().iter().any(|v| !v.is_finite()))
    {
        return Ok(None);
    }
    let r: Vec<(usize, ArrayD<f64>)> = float_outputs
        .iter()
        .map(|&o| (o, random_like(tape.get(o).unwrap().shape(), rng)))
        .collect();
    let wrt: Vec<usize> = float_inputs.iter().map(|(i, _)| *i).collect();
    let grads = match diff.backward(&tape, r.clone(), &wrt) {
        Ok(g) => g,
        Err(e) if e.to_string().contains("not supported") => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let f = |feeds: Feeds<f64>| -> Option<f64> {
        let t = diff.forward(feeds).ok()?;
        let v = objective_value(g, &t, &r);
        v.is_finite().then_some(v)
    };
    let mut checked = Checked { grads: 0, hvps: 0 };
    for ((id, name), grad) in float_inputs.iter().zip(&grads) {
        let x = tape.float(g, *id).unwrap();
        let n = x.len();
        for _ in 0..n.min(6) {
            let k = (rng.next_u64() as usize) % n;
            let xv = x.as_slice().unwrap()[k];
            let h = 1e-6 * xv.abs().max(1.0);
            let at = |d: f64| {
                let mut y = x.clone();
                y.as_slice_mut().unwrap()[k] = xv + d;
                f(with_input(&feeds, name, y))
            };
            let (Some(fp), Some(f0), Some(fm), Some(fp4), Some(fm4)) =
                (at(h), at(0.0), at(-h), at(h / 4.0), at(-h / 4.0))
            else {
                continue;
            };
            let (fwd, bwd) = ((fp - f0) / h, (f0 - fm) / h);
            let (fd, fd4) = ((fp - fm) / (2.0 * h), (fp4 - fm4) / (h / 2.0));
            // A kink or a jump near x (ReLU at 0, a max tie, Sign or Floor at a step): the
            // one-sided slopes differ, or the estimate depends on the step. No derivative there.
            if (fwd - bwd).abs() > 1e-3 * (1.0 + fwd.abs())
                || (fd - fd4).abs() > 1e-4 * (1.0 + fd.abs())
            {
                continue;
            }
            let an = grad
                .as_slice()
                .map(|s| s[k])
                .unwrap_or_else(|| grad.iter().nth(k).copied().unwrap());
            if (fd - an).abs() > 1e-5 * (1.0 + fd.abs().max(an.abs())) {
                return Err(format!(
                    "d/d{name}[{k}]: analytic {an}, finite difference {fd}"
                ));
            }
            checked.grads += 1;
        }
    }
    // HVP with respect to the first float input along a random direction.
    let (id0, name0) = &float_inputs[0];
    let x0 = tape.float(g, *id0).unwrap();
    let v = random_like(x0.shape(), rng);
    let dual = Diff::<Dual<f64>>::new(g).map_err(|e| e.to_string())?;
    let dfeeds: Feeds<Dual<f64>> = feeds
        .iter()
        .map(|(n, t)| {
            let t2 = if n == name0 {
                Tensor::float(
                    t.dtype,
                    ndarray::Zip::from(&x0)
                        .and(&v)
                        .map_collect(|&a, &b| Dual::new(a, b)),
                )
            } else {
                t.convert()
            };
            (n.clone(), t2)
        })
        .collect();
    let dtape = dual.forward(dfeeds).map_err(|e| e.to_string())?;
    let dseeds: Vec<(usize, ArrayD<Dual<f64>>)> = r
        .iter()
        .map(|(o, rk)| (*o, rk.mapv(Dual::constant)))
        .collect();
    let hv = dual
        .backward(&dtape, dseeds, &[*id0])
        .map_err(|e| e.to_string())?[0]
        .mapv(|d| d.t);
    let eps = 1e-5;
    let grad_at = |s: f64| -> Option<ArrayD<f64>> {
        let y = &x0 + &(&v * s);
        let t = diff.forward(with_input(&feeds, name0, y)).ok()?;
        diff.backward(&t, r.clone(), &[*id0])
            .ok()
            .map(|mut g| g.remove(0))
    };
    if let (Some(gp), Some(gm)) = (grad_at(eps), grad_at(-eps)) {
        let fd = (&gp - &gm) / (2.0 * eps);
        let scale = fd
            .iter()
            .chain(hv.iter())
            .fold(1.0f64, |a, b| a.max(b.abs()));
        let err = fd
            .iter()
            .zip(hv.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        // Central differences of a piecewise-smooth gradient jump at kinks; accept those
        // only when the gradient itself jumped (the second difference is large).
        if err > 1e-4 * scale {
            let g0 = grad_at(0.0).ok_or("gradient at x")?;
            let jump = (&(&gp - &g0) - &(&g0 - &gm))
                .iter()
                .fold(0.0f64, |a, b| a.max(b.abs()));
            if jump < 1e-6 * scale {
                return Err(format!(
                    "H·v along {name0}: max error {err:.3e} (scale {scale:.3e})"
                ));
            }
        } else {
            checked.hvps += 1;
        }
    }
    Ok(Some(checked))
}

#[test]
fn node_tests_gradients_and_hvps_match_finite_differences() {
    let root = common::deps().join("onnx-node-tests").join("node");
    assert!(
        root.is_dir(),
        "{} is missing: run scripts/setup.sh",
        root.display()
    );
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let mut rng = SplitMix64::new(7);
    let (mut tests, mut grads, mut hvps) = (0, 0, 0);
    let mut ops = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        match check_node_test(dir, &mut rng) {
            Ok(Some(c)) if c.grads > 0 => {
                tests += 1;
                grads += c.grads;
                hvps += c.hvps;
                let m = Model::load(&dir.join("model.onnx")).unwrap();
                ops.insert(m.graph.nodes[0].op_type.clone());
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    for f in &failures {
        println!("FAILED {f}");
    }
    println!(
        "derivative checks: {tests} node tests over {} ops, {grads} gradient coordinates and {hvps} Hessian-vector products against finite differences",
        ops.len()
    );
    println!("ops: {}", ops.into_iter().collect::<Vec<_>>().join(" "));
    assert!(
        failures.is_empty(),
        "{} node tests fail the derivative check",
        failures.len()
    );
    assert!(tests > 200, "too few node tests were checked: {tests}");
}

fn fixture(name: &str) -> (Model, Feeds<f64>, Vec<i64>) {
    let m = Model::load(&common::fixtures().join(format!("{name}.onnx"))).unwrap();
    let feeds: Feeds<f64> = common::head(
        onnx_prune::data::read_npz(&common::fixtures().join("mnist_calib.npz")).unwrap(),
        6,
    )
    .into_iter()
    .map(|(n, t)| (n, t.convert()))
    .collect();
    let labels = onnx_prune::data::read_npy(&common::fixtures().join("mnist_calib_labels.npy"))
        .unwrap()
        .to_i64_vec()[..6]
        .to_vec();
    (m, feeds, labels)
}

fn weight_ids(g: &Graph, min_len: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = g
        .weights
        .iter()
        .filter(|(_, w)| w.tensor.dtype.is_float() && w.tensor.len() >= min_len)
        .map(|(&id, _)| id)
        .collect();
    ids.sort();
    ids
}

#[test]
fn fixture_gradients_hvps_and_gauss_newton() {
    for name in ["resnet", "mobilenet", "vit", "mlpnet"] {
        let (m, feeds, labels) = fixture(name);
        let g = &m.graph;
        let out = g.outputs[0];
        let mut cur = Curvature::<f64>::new(g, 4).unwrap();
        let dense = cur.forward(feeds.clone()).unwrap().float(g, out).unwrap();
        let objectives = [
            Objective::CrossEntropy {
                value: out,
                labels: labels.clone(),
                kind: onnx_prune::autodiff::OutputKind::Logits,
                temperature: 1.0,
            },
            // Tempered, as the pruning-at-initialisation criteria use it.
            Objective::CrossEntropy {
                value: out,
                labels: labels.clone(),
                kind: onnx_prune::autodiff::OutputKind::Logits,
                temperature: 7.0,
            },
            Objective::kl_to(out, &dense.mapv(|v| v * 0.5)),
        ];
        let wrt = weight_ids(g, 2);
        let mut rng = SplitMix64::new(11);
        for obj in &objectives {
            let (l0, grads) = cur.gradient(&feeds, obj, &wrt).unwrap();
            // Finite differences on a few coordinates of a few weights.
            for (wi, &id) in wrt.iter().enumerate().step_by((wrt.len() / 4).max(1)) {
                let w0 = cur.forward(feeds.clone()).unwrap().float(g, id).unwrap();
                for _ in 0..3 {
                    let k = (rng.next_u64() as usize) % w0.len();
                    let h = 1e-6;
                    let loss_at = |cur: &mut Curvature<f64>, d: f64| {
                        let mut w = w0.clone();
                        w.as_slice_mut().unwrap()[k] += d;
                        cur.set_weight(id, Tensor::f32(w)).unwrap();
                        let l = cur.gradient(&feeds, obj, &[]).unwrap().0;
                        cur.set_weight(id, Tensor::f32(w0.clone())).unwrap();
                        l
                    };
                    let fd = (loss_at(&mut cur, h) - loss_at(&mut cur, -h)) / (2.0 * h);
                    let an = grads[wi].as_slice().unwrap()[k];
                    assert!(
                        (fd - an).abs() < 1e-6 + 1e-4 * fd.abs().max(an.abs()),
                        "{name}: dL/d{}[{k}] analytic {an} vs {fd} (L = {l0})",
                        g.name(id)
                    );
                }
            }
            // Symmetry over all weights: uᵀ(H·v) = vᵀ(H·u), which a wrong rule would break.
            let u: Vec<ArrayD<f64>> = grads
                .iter()
                .map(|gr| random_like(gr.shape(), &mut rng))
                .collect();
            let w: Vec<ArrayD<f64>> = grads
                .iter()
                .map(|gr| random_like(gr.shape(), &mut rng))
                .collect();
            let r = cur.hvp(&feeds, obj, &wrt, &u).unwrap();
            let (g0, hu) = (r.gradient, r.hv);
            let hw = cur.hvp(&feeds, obj, &wrt, &w).unwrap().hv;
            for (a, b) in g0.iter().zip(&grads) {
                assert!(
                    (a - b).iter().all(|d| d.abs() < 1e-9),
                    "{name}: HVP's gradient differs from the gradient"
                );
            }
            let dot = |a: &[ArrayD<f64>], b: &[ArrayD<f64>]| -> f64 {
                a.iter().zip(b).map(|(x, y)| (x * y).sum()).sum()
            };
            let (whu, uhw) = (dot(&w, &hu), dot(&u, &hw));
            assert!(
                (whu - uhw).abs() < 1e-8 * whu.abs().max(1.0),
                "{name}: wᵀHu {whu} vs uᵀHw {uhw}"
            );
            // H·v against central differences of the gradient. ReLU/HardSwish nets are only
            // piecewise smooth in their weights (a perturbation of every weight moves some unit
            // across its kink); there the last layer, after which the objective is smooth, is
            // checked; ViT (GELU, softmax, LayerNorm) is smooth and checked over all weights.
            let fd_wrt: Vec<usize> = if name == "vit" {
                wrt.clone()
            } else {
                vec![*wrt.last().expect("weights")]
            };
            let wrt = fd_wrt;
            let v: Vec<ArrayD<f64>> = wrt
                .iter()
                .map(|&id| random_like(g.weights[&id].tensor.shape(), &mut rng))
                .collect();
            let hv = cur.hvp(&feeds, obj, &wrt, &v).unwrap().hv;
            let shifted = |cur: &mut Curvature<f64>, s: f64| {
                let w0: Vec<ArrayD<f64>> = wrt
                    .iter()
                    .map(|&id| cur.forward(feeds.clone()).unwrap().float(g, id).unwrap())
                    .collect();
                for ((&id, w), d) in wrt.iter().zip(&w0).zip(&v) {
                    cur.set_weight(id, Tensor::f32(w + &(d * s))).unwrap();
                }
                let gr = cur.gradient(&feeds, obj, &wrt).unwrap().1;
                for (&id, w) in wrt.iter().zip(w0) {
                    cur.set_weight(id, Tensor::f32(w)).unwrap();
                }
                gr
            };
            let central = |cur: &mut Curvature<f64>, eps: f64| -> Vec<f64> {
                let (p, m) = (shifted(cur, eps), shifted(cur, -eps));
                p.iter()
                    .zip(&m)
                    .flat_map(|(a, b)| {
                        a.iter()
                            .zip(b.iter())
                            .map(|(x, y)| (x - y) / (2.0 * eps))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            let (fd1, fd2) = (central(&mut cur, 1e-6), central(&mut cur, 2.5e-7));
            let an: Vec<f64> = hv.iter().flat_map(|h| h.iter().copied()).collect();
            let scale = an.iter().fold(1e-12f64, |a, b| a.max(b.abs()));
            let (mut worst, mut smooth) = (0.0f64, 0usize);
            for ((a, b), c) in fd1.iter().zip(&fd2).zip(&an) {
                if (a - b).abs() <= 1e-5 * scale {
                    smooth += 1;
                    worst = worst.max((a - c).abs());
                }
            }
            assert!(
                smooth * 10 >= an.len() * 9,
                "{name}: only {smooth} of {} coordinates agree between step sizes",
                an.len()
            );
            assert!(
                worst < 1e-4 * scale,
                "{name}: H·v max error {worst:.3e} (scale {scale:.3e})"
            );
            // Gauss-Newton: vᵀGv = (Jv)ᵀΛ(Jv) ≥ 0, from independent paths (GN product vs JVP + Λ).
            let gv = cur.gnvp(&feeds, obj, &wrt, &v).unwrap();
            let vgv: f64 = gv.iter().zip(&v).map(|(a, b)| (a * b).sum()).sum();
            let jv = cur.jvp(&feeds, &wrt, &v).unwrap();
            let tape = cur.forward(feeds.clone()).unwrap();
            let ljv = obj
                .output_hessian(g, &tape, std::slice::from_ref(&jv[0].1))
                .unwrap()
                .remove(0);
            let quad: f64 = (&ljv * &jv[0].1).sum();
            assert!(
                vgv >= -1e-9 && (vgv - quad).abs() < 1e-8 * quad.abs().max(1.0),
                "{name}: vᵀGv {vgv} vs (Jv)ᵀΛJv {quad}"
            );
            // The outputs are linear in the last layer's weight, so there G = H: an independent
            // check of Λ (the temperature's 1/T² included).
            if name != "vit" {
                let vhv: f64 = hv.iter().zip(&v).map(|(a, b)| (a * b).sum()).sum();
                assert!(
                    (vhv - vgv).abs() < 1e-7 * vgv.abs().max(1e-6),
                    "{name}: last layer vᵀHv {vhv} vs vᵀGv {vgv}"
                );
            }
            println!(
                "{name:<10} {:<14} grad ✓  H·v max err {worst:.1e}  vᵀGv = {vgv:.4e}",
                if matches!(obj, Objective::Kl { .. }) {
                    "KL to teacher"
                } else {
                    "cross-entropy"
                }
            );
        }
    }
}

#[test]
fn jvp_matches_finite_differences_and_micro_batches_agree() {
    // ViT is smooth in its weights (GELU, softmax, LayerNorm): finite differences are exact
    // up to rounding everywhere.
    let (m, feeds, labels) = fixture("vit");
    let g = &m.graph;
    let out = g.outputs[0];
    let wrt = weight_ids(g, 100);
    let mut rng = SplitMix64::new(3);
    let mut cur = Curvature::<f64>::new(g, 2).unwrap();
    let v: Vec<ArrayD<f64>> = wrt
        .iter()
        .map(|&id| random_like(g.weights[&id].tensor.shape(), &mut rng))
        .collect();
    let jv = cur.jvp(&feeds, &wrt, &v).unwrap();
    let out_at = |cur: &mut Curvature<f64>, s: f64| {
        for (&id, d) in wrt.iter().zip(&v) {
            let w = g.weights[&id].tensor.convert::<f64>();
            cur.set_weight(id, Tensor::f32(w.as_float().unwrap().to_owned() + &(d * s)))
                .unwrap();
        }
        cur.forward(feeds.clone()).unwrap().float(g, out).unwrap()
    };
    let central =
        |cur: &mut Curvature<f64>, eps: f64| (out_at(cur, eps) - out_at(cur, -eps)) / (2.0 * eps);
    let (fd1, fd2) = (central(&mut cur, 1e-6), central(&mut cur, 2.5e-7));
    let scale = jv[0].1.iter().fold(1.0f64, |a, b| a.max(b.abs()));
    let (mut worst, mut smooth) = (0.0f64, 0usize);
    for ((a, b), c) in fd1.iter().zip(fd2.iter()).zip(jv[0].1.iter()) {
        if (a - b).abs() <= 1e-6 * scale {
            smooth += 1;
            worst = worst.max((a - c).abs());
        }
    }
    assert!(
        smooth * 10 >= fd1.len() * 9,
        "only {smooth} of {} outputs away from kinks",
        fd1.len()
    );
    assert!(worst < 1e-6 * scale, "J·v error {worst}");
    for (&id, _) in wrt.iter().zip(&v) {
        cur.set_weight(id, g.weights[&id].tensor.convert()).unwrap();
    }
    // Micro-batches of 2 and one batch of 6 give the same gradient; per-sample gradients
    // average to it.
    let obj = Objective::CrossEntropy {
        value: out,
        labels,
        kind: onnx_prune::autodiff::OutputKind::Logits,
        temperature: 1.0,
    };
    let small = Curvature::<f64>::new(g, 2).unwrap();
    let (l2, g2) = small.gradient(&feeds, &obj, &wrt).unwrap();
    let big = Curvature::<f64>::new(g, 64).unwrap();
    let (l6, g6) = big.gradient(&feeds, &obj, &wrt).unwrap();
    assert!((l2 - l6).abs() < 1e-12);
    let per = big.per_sample_gradients(&feeds, &obj, &wrt).unwrap();
    for (b, (a, c)) in g2.iter().zip(&g6).enumerate() {
        assert!((a - c).iter().all(|d| d.abs() < 1e-12));
        let mean: ArrayD<f64> = per
            .iter()
            .map(|p| &p[b])
            .fold(ArrayD::zeros(a.raw_dim()), |acc, p| acc + p)
            / per.len() as f64;
        assert!((&mean - a).iter().all(|d| d.abs() < 1e-12));
    }
    let (ps, pb) = (small.stats().peak_tape_bytes, big.stats().peak_tape_bytes);
    println!("peak tape: micro-batch 2 {ps} bytes, batch 6 {pb} bytes");
    assert!(ps * 2 < pb, "micro-batches bound the tape");
}

#[test]
fn hutchinson_converges_to_the_exact_block_trace() {
    let (m, feeds, labels) = fixture("mlpnet");
    let g = &m.graph;
    let out = g.outputs[0];
    // The last layer (20×10): small enough for the exact trace by unit-vector HVPs.
    let last = g
        .nodes
        .iter()
        .rev()
        .find(|n| n.op_type == "MatMul")
        .unwrap();
    let w = last.inputs[1].unwrap();
    let shape = g.weights[&w].tensor.shape().to_vec();
    let n: usize = shape.iter().product();
    let obj = Objective::CrossEntropy {
        value: out,
        labels,
        kind: onnx_prune::autodiff::OutputKind::Logits,
        temperature: 1.0,
    };
    let mut cur = Curvature::<f64>::new(g, 8).unwrap();
    let mut exact = 0.0;
    let mut diag = vec![0.0; n];
    for (k, dk) in diag.iter_mut().enumerate() {
        let mut e = ArrayD::zeros(IxDyn(&shape));
        e.as_slice_mut().unwrap()[k] = 1.0;
        let hv = cur.hvp(&feeds, &obj, &[w], &[e]).unwrap().hv;
        *dk = hv[0].as_slice().unwrap()[k];
        exact += *dk;
    }
    let h = cur
        .hutchinson(
            &feeds,
            &obj,
            &[w],
            HutchinsonOptions {
                seed: 1,
                min_probes: 400,
                max_probes: 400,
                tol: 0.0,
            },
        )
        .unwrap();
    let est = h.traces[0];
    println!(
        "exact trace {exact:.6}, Hutchinson {:.6} ± {:.6} ({} probes)",
        est.mean, est.stderr, est.probes
    );
    assert!(
        (est.mean - exact).abs() < 4.0 * est.stderr + 1e-9,
        "trace {exact} vs {est:?}"
    );
    let derr = h.diagonals[0]
        .iter()
        .zip(&diag)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let dscale = diag.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    assert!(
        derr < 0.5 * dscale,
        "diagonal estimate error {derr} vs scale {dscale}"
    );
    // Deterministic under the seed.
    let again = cur
        .hutchinson(
            &feeds,
            &obj,
            &[w],
            HutchinsonOptions {
                seed: 1,
                min_probes: 5,
                max_probes: 5,
                tol: 0.0,
            },
        )
        .unwrap();
    let once = cur
        .hutchinson(
            &feeds,
            &obj,
            &[w],
            HutchinsonOptions {
                seed: 1,
                min_probes: 5,
                max_probes: 5,
                tol: 0.0,
            },
        )
        .unwrap();
    assert_eq!(again.total.mean.to_bits(), once.total.mean.to_bits());
}

#[test]
fn layer_hessians_are_input_second_moments() {
    let (m, feeds, _) = fixture("mlp");
    let g = &m.graph;
    let cur = Curvature::<f64>::new(g, 4).unwrap();
    let gemm = g.nodes.iter().position(|n| n.op_type == "Gemm").unwrap();
    let lh = cur.layer_hessian(&feeds, gemm).unwrap();
    let x = cur
        .forward(feeds.clone())
        .unwrap()
        .float(g, g.nodes[gemm].inputs[0].unwrap())
        .unwrap();
    let x2 = x
        .into_shape_with_order(IxDyn(&[6, 784]))
        .unwrap()
        .into_dimensionality::<ndarray::Ix2>()
        .unwrap();
    let want = x2.t().dot(&x2) * (2.0 / 6.0);
    assert_eq!(lh.samples, 6);
    let err = lh.blocks[0]
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        err < 1e-9 * want.iter().fold(1.0f64, |a, b| a.max(b.abs())),
        "{err}"
    );
    // Conv (the stem: 1 input channel, 3×3, pad 1, stride 1) against an explicit unfold.
    let (m, feeds, _) = fixture("resnet");
    let g = &m.graph;
    let cur = Curvature::<f64>::new(g, 4).unwrap();
    let conv = g.nodes.iter().position(|n| n.op_type == "Conv").unwrap();
    let lh = cur.layer_hessian(&feeds, conv).unwrap();
    let x = feeds[0].1.as_float().unwrap().to_owned();
    let (n, h, w) = (x.shape()[0], x.shape()[2], x.shape()[3]);
    let mut want = ndarray::Array2::<f64>::zeros((9, 9));
    for img in 0..n {
        for y in 0..h {
            for xx in 0..w {
                let mut v = [0.0; 9];
                for ki in 0..3 {
                    for kj in 0..3 {
                        let (iy, ix) =
                            (y as isize + ki as isize - 1, xx as isize + kj as isize - 1);
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            v[ki * 3 + kj] = x[[img, 0, iy as usize, ix as usize]];
                        }
                    }
                }
                for a in 0..9 {
                    for b in 0..9 {
                        want[[a, b]] += v[a] * v[b];
                    }
                }
            }
        }
    }
    let want = want * (2.0 / (n * h * w) as f64);
    assert_eq!(lh.samples, n * h * w);
    let err = lh.blocks[0]
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        err < 1e-9 * want.iter().fold(1.0f64, |a, b| a.max(b.abs())),
        "conv layer Hessian error {err}"
    );
}

#[test]
fn regions_run_on_captured_activations() {
    // A region from the middle of the ResNet to two later values: its forward on the captured
    // activations reproduces the full graph's values, and its gradients and HVPs with respect
    // to the weights inside it are the full graph's.
    let (m, feeds, _) = fixture("resnet");
    let g = &m.graph;
    let relus: Vec<usize> = g
        .nodes
        .iter()
        .filter(|n| n.op_type == "Relu")
        .map(|n| n.outputs[0].unwrap())
        .collect();
    let source = relus[2];
    let targets = vec![relus[4], g.outputs[0]];
    let region = onnx_prune::autodiff::Region::new(g, &[source], &targets).unwrap();
    assert!(
        region.graph.nodes.len() < g.nodes.len() / 2 + 10,
        "the region holds only the needed nodes"
    );
    let rfeeds = region.feeds(g, &feeds, 4).unwrap();
    let full = Engine::<f64>::exact(g)
        .unwrap()
        .run_all(feeds.clone())
        .unwrap();
    let sub = Engine::<f64>::exact(&region.graph)
        .unwrap()
        .run(rfeeds.clone())
        .unwrap();
    for (t, &id) in sub.iter().zip(&targets) {
        let a = t.as_float().unwrap();
        let b = full[id].as_ref().unwrap().as_float().unwrap();
        assert!(
            a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() < 1e-12),
            "{}",
            g.name(id)
        );
    }
    // SNOWS-style objective: Σ mean squared error of both targets against perturbed targets.
    let mut rng = SplitMix64::new(5);
    let terms: Vec<(usize, ArrayD<f64>)> = targets
        .iter()
        .map(|&id| {
            let y = full[id].as_ref().unwrap().as_float().unwrap().to_owned();
            let noise = random_like(y.shape(), &mut rng);
            (id, y + noise * 0.1)
        })
        .collect();
    let obj = Objective::reconstruction(terms);
    let wrt: Vec<usize> = weight_ids(&region.graph, 2)
        .into_iter()
        .filter(|id| {
            region
                .graph
                .nodes
                .iter()
                .any(|n| n.inputs.contains(&Some(*id)))
        })
        .collect();
    assert!(wrt.len() >= 4);
    let mut cfull = Curvature::<f64>::new(g, 3).unwrap();
    let mut creg = Curvature::<f64>::new(&region.graph, 3).unwrap();
    let (lf, gf) = cfull.gradient(&feeds, &obj, &wrt).unwrap();
    let (lr, gr) = creg.gradient(&rfeeds, &obj, &wrt).unwrap();
    assert!((lf - lr).abs() < 1e-12 * lf.abs().max(1.0));
    for (a, b) in gf.iter().zip(&gr) {
        assert!((a - b).iter().all(|d| d.abs() < 1e-10));
    }
    let v: Vec<ArrayD<f64>> = wrt
        .iter()
        .map(|&id| random_like(g.weights[&id].tensor.shape(), &mut rng))
        .collect();
    let hf = cfull.hvp(&feeds, &obj, &wrt, &v).unwrap();
    let hr = creg.hvp(&rfeeds, &obj, &wrt, &v).unwrap();
    let scale = hf
        .hv
        .iter()
        .flat_map(|a| a.iter())
        .fold(1e-12f64, |m, x| m.max(x.abs()));
    for (a, b) in hf.hv.iter().zip(&hr.hv) {
        assert!((a - b).iter().all(|d| d.abs() < 1e-10 * scale));
    }
    // The reconstruction objective's gradient against central differences.
    let gd: f64 = gr.iter().zip(&v).map(|(a, b)| (a * b).sum()).sum();
    let at = |c: &mut Curvature<f64>, f: &Feeds<f64>, s: f64| {
        for (&id, d) in wrt.iter().zip(&v) {
            let w = g.weights[&id].tensor.convert::<f64>();
            c.set_weight(id, Tensor::f32(w.as_float().unwrap().to_owned() + &(d * s)))
                .unwrap();
        }
        c.gradient(f, &obj, &wrt).unwrap()
    };
    // ReLU kinks are dense: larger steps cross some (see fixtures/reference/README.md), so
    // take the best of three steps for ∇L·v, and compare H·v only where two steps agree.
    let fd_at = |c: &mut Curvature<f64>, eps: f64| {
        let (lp, gp) = at(c, &rfeeds, eps);
        let (lm, gm) = at(c, &rfeeds, -eps);
        let hv: Vec<ArrayD<f64>> = gp
            .iter()
            .zip(&gm)
            .map(|(p, m)| (p - m) / (2.0 * eps))
            .collect();
        ((lp - lm) / (2.0 * eps), hv)
    };
    let (fd7, hv7) = fd_at(&mut creg, 1e-7);
    let (fd8, hv8) = fd_at(&mut creg, 5e-8);
    let (fd6, _) = fd_at(&mut creg, 1e-6);
    let fd_err = [fd6, fd7, fd8]
        .iter()
        .map(|f| (f - gd).abs())
        .fold(f64::INFINITY, f64::min);
    assert!(
        fd_err < 1e-6 * gd.abs().max(1e-3),
        "∇L·v {gd} vs central differences {fd6} {fd7} {fd8}"
    );
    let scale_h = hr
        .hv
        .iter()
        .flat_map(|a| a.iter())
        .fold(1e-12f64, |m, x| m.max(x.abs()));
    let (mut worst, mut smooth, mut total) = (0.0f64, 0usize, 0usize);
    for ((a, b), c) in hv7.iter().zip(&hv8).zip(&hr.hv) {
        for ((x, y), z) in a.iter().zip(b).zip(c) {
            total += 1;
            if (x - y).abs() <= 1e-5 * scale_h {
                smooth += 1;
                worst = worst.max((x - z).abs());
            }
        }
    }
    assert!(
        smooth * 10 >= total * 9,
        "only {smooth} of {total} H·v coordinates agree between steps"
    );
    assert!(
        worst < 1e-4 * scale_h,
        "H·v error {worst:.2e} (scale {scale_h:.2e})"
    );
    let fd = fd7;
    println!(
        "region: {} of {} nodes, reconstruction loss {lr:.4e}, ∇L·v {gd:.6e} (FD {fd:.6e}), H·v max FD err {:.1e}",
        region.graph.nodes.len(),
        g.nodes.len(),
        worst / scale_h
    );
}
