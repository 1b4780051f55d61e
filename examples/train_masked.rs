//! Trains a model from its current weights with SGD on this crate's own gradients, holding the
//! keep-masks of an `--at-init` run fixed (masked weights stay exactly zero), and prints the
//! held-out top-1: the check that pruning-at-initialisation masks train
//! (`scripts/at_init_quality.sh`). Batch-normalised models train with their stored statistics
//! (inference-mode BatchNorm), so this is meant for networks without BatchNorm, like MLPNet.
//!
//! `cargo run --release --example train_masked -- MODEL TRAIN.npz TRAIN_LABELS.npy TEST.npz
//! TEST_LABELS.npy MASKS.npz|- [EPOCHS 10] [LR 0.05] [SEED 0]`

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ndarray::ArrayD;
use onnx_prune::autodiff::curvature::slice_feeds;
use onnx_prune::autodiff::rng::SplitMix64;
use onnx_prune::autodiff::{Curvature, Objective, OutputKind};
use onnx_prune::data::{read_npy, read_npz};
use onnx_prune::interp::Feeds;
use onnx_prune::ir::{Model, ValueId};
use onnx_prune::tensor::Tensor;
use std::collections::HashMap;

fn gather(feeds: &Feeds<f32>, idx: &[usize]) -> Feeds<f32> {
    feeds
        .iter()
        .map(|(n, t)| {
            let a = t.as_float().expect("float input");
            (
                n.clone(),
                Tensor::f32(a.select(ndarray::Axis(0), idx).into_dyn()),
            )
        })
        .collect()
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 7 {
        eprintln!(
            "usage: train_masked MODEL TRAIN.npz TRAIN_LABELS.npy TEST.npz TEST_LABELS.npy MASKS.npz|- [EPOCHS] [LR] [SEED]"
        );
        std::process::exit(1);
    }
    let model = Model::load(a[1].as_ref()).unwrap();
    let g = &model.graph;
    let train = read_npz(a[2].as_ref()).unwrap();
    let ytrain = read_npy(a[3].as_ref()).unwrap().to_i64_vec();
    let test = read_npz(a[4].as_ref()).unwrap();
    let ytest = read_npy(a[5].as_ref()).unwrap().to_i64_vec();
    let masks: HashMap<String, ArrayD<bool>> = if a[6] == "-" {
        HashMap::new()
    } else {
        read_npz(a[6].as_ref())
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, t.as_bool().expect("bool mask").to_owned()))
            .collect()
    };
    let epochs: usize = a.get(7).map_or(10, |s| s.parse().unwrap());
    let lr: f32 = a.get(8).map_or(0.05, |s| s.parse().unwrap());
    let seed: u64 = a.get(9).map_or(0, |s| s.parse().unwrap());

    // Trained: the float weights the layers read (not BatchNorm statistics or shape logic).
    let mut params: Vec<ValueId> = Vec::new();
    for n in &g.nodes {
        let idx: &[usize] = match n.op_type.as_str() {
            "Conv" | "Gemm" | "MatMul" | "Add" => &[0, 1, 2],
            "BatchNormalization" => &[1, 2],
            _ => &[],
        };
        for &k in idx {
            if let Some(Some(id)) = n.inputs.get(k)
                && g.weights
                    .get(id)
                    .is_some_and(|w| w.tensor.as_float().is_some())
                && !params.contains(id)
            {
                params.push(*id);
            }
        }
    }
    let mut w: Vec<ArrayD<f32>> = params
        .iter()
        .map(|id| g.weights[id].tensor.as_float().unwrap().to_owned())
        .collect();
    let keep: Vec<Option<ArrayD<f32>>> = params
        .iter()
        .map(|id| {
            masks.get(g.name(*id)).map(|m| {
                assert_eq!(
                    m.shape(),
                    w[params.iter().position(|p| p == id).unwrap()].shape()
                );
                m.mapv(|b| if b { 1.0 } else { 0.0 })
            })
        })
        .collect();
    for (wi, k) in w.iter_mut().zip(&keep) {
        if let Some(k) = k {
            *wi *= k;
        }
    }
    let dtype: Vec<_> = params.iter().map(|id| g.weights[id].tensor.dtype).collect();
    let out = g.outputs[0];
    let batch = 64usize;
    let n = train[0].1.shape()[0].min(ytrain.len());
    let mut cur = Curvature::<f32>::new(g, batch).unwrap();
    let mut vel: Vec<ArrayD<f32>> = w.iter().map(|x| ArrayD::zeros(x.raw_dim())).collect();
    let mut rng = SplitMix64::new(seed);
    let set = |cur: &mut Curvature<f32>, w: &[ArrayD<f32>]| {
        for ((id, x), dt) in params.iter().zip(w).zip(&dtype) {
            cur.set_weight(*id, Tensor::float(*dt, x.clone())).unwrap();
        }
    };
    let accuracy = |cur: &Curvature<f32>| -> f64 {
        let m = test[0].1.shape()[0].min(ytest.len());
        let mut right = 0usize;
        for s in (0..m).step_by(256) {
            let f = slice_feeds(&test, s..(s + 256).min(m));
            let y = cur.forward(f).unwrap().float(g, out).unwrap();
            for (r, row) in y.outer_iter().enumerate() {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .map(|(j, _)| j)
                    .unwrap();
                right += usize::from(best as i64 == ytest[s + r]);
            }
        }
        right as f64 / m as f64
    };
    let steps_per_epoch = n / batch;
    let total = epochs * steps_per_epoch;
    let mut step = 0usize;
    for _ in 0..epochs {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for b in 0..steps_per_epoch {
            let idx = &order[b * batch..(b + 1) * batch];
            let f = gather(&train, idx);
            let obj = Objective::CrossEntropy {
                value: out,
                labels: idx.iter().map(|&i| ytrain[i]).collect(),
                kind: OutputKind::Logits,
                temperature: 1.0,
            };
            set(&mut cur, &w);
            let (_, grads) = cur.gradient(&f, &obj, &params).unwrap();
            // Cosine learning rate, momentum 0.9, weight decay 5e-4; masked entries held at 0.
            let eta = lr * 0.5 * (1.0 + (std::f32::consts::PI * step as f32 / total as f32).cos());
            for (((x, v), gr), k) in w.iter_mut().zip(&mut vel).zip(&grads).zip(&keep) {
                ndarray::Zip::from(&mut *v)
                    .and(&*x)
                    .and(gr)
                    .for_each(|v, &x, &g| *v = 0.9 * *v + g + 5e-4 * x);
                x.scaled_add(-eta, v);
                if let Some(k) = k {
                    *x *= k;
                }
            }
            step += 1;
        }
    }
    set(&mut cur, &w);
    let kept: usize = keep
        .iter()
        .zip(&w)
        .map(|(k, x)| {
            k.as_ref()
                .map_or(x.len(), |k| k.iter().filter(|v| **v > 0.0).count())
        })
        .sum();
    let all: usize = w.iter().map(|x| x.len()).sum();
    println!(
        "top1 {:.4} kept {kept} of {all} trained weights, {epochs} epochs, {n} samples",
        accuracy(&cur)
    );
}
