#!/usr/bin/env bash
# The main job on a shipped fixture: summarise the MNIST ResNet, run it with our interpreter,
# and check it against onnxruntime on held-out data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --quiet
bin=target/release/onnx-prune
out=$(mktemp -d)
$bin inspect fixtures/resnet.onnx --layers
$bin eval fixtures/resnet.onnx --data fixtures/mnist_heldout.npz --out "$out/ours.npz" --engine interp
$bin eval fixtures/resnet.onnx --data fixtures/mnist_heldout.npz --out "$out/ort.npz" --engine ort
$bin compare fixtures/resnet.onnx fixtures/resnet.onnx --data fixtures/mnist_heldout.npz \
  --labels fixtures/mnist_heldout_labels.npy
rm -rf "$out"
