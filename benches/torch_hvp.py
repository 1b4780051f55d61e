#!/usr/bin/env python3
"""PyTorch timings of forward, gradient and Hessian-vector product for the fixture models,
for comparison with onnx-prune's differentiable interpreter.

Objective: mean softmax cross-entropy of `logits` over the first 32 calibration samples
(fixtures/mnist_calib.npz, labels fixtures/mnist_calib_labels.npy), w.r.t. all weights
(every float initializer with >= 2 elements, as in fixtures/make_reference.py).  The torch
computation is the ONNX->torch evaluator of fixtures/make_reference.py, here in float32 and
with fused=True (HardSwish and LayerNormalization as single torch kernels, F.hardswish and
F.layer_norm, instead of the reference's elementwise formulas; same values to ~1e-15 in
float64): it walks the ONNX nodes in Python and calls one or a few torch ops per node, much
like an interpreter (eager PyTorch, no torch.compile).  BatchNormalization is a per-channel
x*a + b (torch.addcmul) so that running_mean / running_var stay differentiable.

  forward : logits under torch.no_grad()
  grad    : forward + reverse (torch.autograd.grad)
  hvp     : forward + reverse with create_graph=True + reverse of (grad . v)  (reverse over
            reverse; onnx-prune does forward over reverse with dual numbers)

Each figure is the median of --runs timed calls after --warmup untimed ones, for
torch.set_num_threads(1) and (2).  Not run in CI.

    /tmp/fixture-venv/bin/python benches/torch_hvp.py [--models resnet,vit] [--runs 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "fixtures")


def load_reference_module():
    spec = importlib.util.spec_from_file_location("make_reference", os.path.join(FIX, "make_reference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def median_ms(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet,mobilenet,vit,mlp")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    mr = load_reference_module()
    with np.load(os.path.join(FIX, "mnist_calib.npz")) as f:
        x = torch.from_numpy(f["input"][:args.batch].copy())
    y = torch.from_numpy(np.load(os.path.join(FIX, "mnist_calib_labels.npy"))[:args.batch].copy())

    rows = []
    for name in args.models.split(","):
        ev = mr.OnnxTorch(os.path.join(FIX, f"{name}.onnx"), torch.float32, fused=True)
        names = ev.weight_names()
        ws = [ev.params[n] for n in names]
        v = mr.make_v(ev, names)
        vt = [torch.from_numpy(v[n]) for n in names]

        def forward():
            with torch.no_grad():
                return ev({"input": x})["logits"]

        def grad():
            return torch.autograd.grad(mr.loss_fn(ev, x, y), ws)

        def hvp():
            g = torch.autograd.grad(mr.loss_fn(ev, x, y), ws, create_graph=True)
            gv = sum((gi * vi).sum() for gi, vi in zip(g, vt))
            return torch.autograd.grad(gv, ws)

        for th in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(th)
            r = [median_ms(f, args.warmup, args.runs) for f in (forward, grad, hvp)]
            rows.append((name, th, *r))
            print(f"  {name} threads={th}: forward {r[0]:.2f} ms, grad {r[1]:.2f} ms, hvp {r[2]:.2f} ms",
                  flush=True)

    print()
    print(f"PyTorch {torch.__version__} (eager, float32, CPU), batch {args.batch}, median of {args.runs} "
          f"after {args.warmup} warm-up; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} logical CPUs")
    print()
    print("| model | threads | torch forward ms | torch grad ms | torch hvp ms |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, th, f, g, h in rows:
        print(f"| {name} | {th} | {f:.2f} | {g:.2f} | {h:.2f} |")


if __name__ == "__main__":
    main()
