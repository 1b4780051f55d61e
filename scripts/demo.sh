#!/usr/bin/env bash
# The main job on a shipped fixture: structured pruning of the MNIST ResNet (fixtures/resnet.onnx)
# to 50 % fewer parameters in its prunable layers with the defaults (HAP criterion, neural
# implants, training-free compensation), validated in onnxruntime on the held-out set (accuracy,
# agreement, latency), with a JSON report; then 70 % unstructured sparsity with SNOWS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
bin=target/release/onnx-prune
out=target/demo
mkdir -p "$out"
$bin inspect fixtures/resnet.onnx --groups | head -n 12
$bin fixtures/resnet.onnx "$out/resnet-pruned.onnx" --force \
  --structured 0.5 \
  --calib fixtures/mnist_calib.npz --labels fixtures/mnist_calib_labels.npy \
  --eval fixtures/mnist_heldout.npz --eval-labels fixtures/mnist_heldout_labels.npy \
  --report "$out/report.json" --plan-out "$out/plan.json"
$bin fixtures/resnet.onnx "$out/resnet-sparse.onnx" --force \
  --unstructured 0.7 --method snows \
  --calib fixtures/mnist_calib.npz --labels fixtures/mnist_calib_labels.npy \
  --eval fixtures/mnist_heldout.npz --eval-labels fixtures/mnist_heldout_labels.npy \
  --report "$out/report-sparse.json"
echo "wrote $out/resnet-pruned.onnx, $out/resnet-sparse.onnx, $out/report.json, $out/report-sparse.json, $out/plan.json"
