#!/usr/bin/env bash
# The unstructured / N:M quality table: one-shot held-out top-1 of the MNIST fixtures at
# 50/70/80/90 % and 2:4 for MP (magnitude, no update), MP+ (magnitude + layer-wise optimal
# update), obs (OBS mask + update), woodfisher (mask + update) and snows on the magnitude, obs
# and woodfisher masks. ROWS="wf:woodfisher:woodfisher …" runs only the rows given; EXTRA adds
# flags to every run (the snows-gn rows: ROWS="snows-gn:magnitude:snows"
# EXTRA="--curvature gauss-newton"); MODELS and PATTERNS ("0.5 0.8 2:4") narrow the grid.
# MODELS may name real models of MODELS.md too (pp_lcnet_orientation, ppocr_v4_rec, minilm_l3;
# needs scripts/setup.sh): they are scored by scripts/score_real.py.
# Writes target/sparse-quality/<model>-<pattern>-<row>.json and appends one JSON line per run to
# scripts/results/sparse-quality.jsonl (committed; LOG= to write elsewhere), which
# scripts/sparse_markdown.py renders (the latest line of each cell wins).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/onnx-prune}
out=target/sparse-quality
tmp=/tmp/sparse-q-$$.onnx  # one per sweep, so sweeps can run side by side
log=${LOG:-scripts/results/sparse-quality.jsonl}
mkdir -p "$out" "$(dirname "$log")"
# CALIB=target/mnist_calib_1024 swaps in a larger calibration set (scripts/mnist_calib_more.py)
# for the fixtures; the log's "extra" field names it.
calib=${CALIB:-fixtures/mnist_calib}
labels=${calib}_labels.npy
data="--calib $calib.npz --labels $labels --eval fixtures/mnist_heldout.npz --eval-labels fixtures/mnist_heldout_labels.npy --latency-runs 0 --force"
# The layer-wise rows first (seconds each), then SNOWS (a minute each on the CNN fixtures).
for rows in ${ROWS:-"mp:magnitude:none mp+:magnitude:obs obs:obs:obs wf:woodfisher:woodfisher" "snows-mag:magnitude:snows snows-obs:obs:snows snows-wf:woodfisher:snows"}; do
for m in ${MODELS:-resnet mobilenet vit mlp mlpnet}; do
  for p in ${PATTERNS:-0.5 0.7 0.8 0.9 2:4}; do
    if [ "$p" = "2:4" ]; then pat="--nm 2:4"; else pat="--unstructured $p"; fi
    for row in $rows; do
      IFS=: read -r name mask method <<<"$row"
      f="$out/$m-${p/:/of}-$name.json"
      start=$(date +%s.%N)
      if [ -f "fixtures/$m.onnx" ]; then
        $bin fixtures/$m.onnx "$tmp" $pat --mask $mask --method $method $data ${EXTRA:-} --report "$f" >/dev/null 2>&1 || echo "$m $p $name failed"
        secs=$(echo "$(date +%s.%N) - $start" | bc)
        python3 scripts/sparse_quality_row.py "$m" "$p" "$name" "${EXTRA:-}${CALIB:+ --calib $CALIB.npz}" "$secs" "$f" | tee -a "$log"
      else
        # A real model of MODELS.md: its own inputs, scored by scripts/score_real.py (the
        # metric of the structured quality table) into <model>-<pattern>-<row>.score.json.
        real="--calib .deps/inputs/${m}_calib.npz --eval .deps/inputs/${m}_eval.npz --latency-runs 0 --force"
        if [ -f ".deps/inputs/${m}_calib_labels.npy" ]; then real="$real --labels .deps/inputs/${m}_calib_labels.npy"; fi
        if $bin .deps/models/$m.onnx "$tmp" $pat --mask $mask --method $method $real ${EXTRA:-} --report "$f" >/dev/null 2>&1; then
          secs=$(echo "$(date +%s.%N) - $start" | bc)
          .deps/venv/bin/python scripts/score_real.py "$m" "$tmp" >"${f%.json}.score.json"
          python3 scripts/sparse_quality_row.py "$m" "$p" "$name" "${EXTRA:-}" "$secs" "$f" "${f%.json}.score.json" | tee -a "$log"
        else
          echo "$m $p $name failed"
        fi
      fi
    done
  done
done
done
rm -f "$tmp"
