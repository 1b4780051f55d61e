#!/usr/bin/env bash
# Every unstructured mask × weight update at 70 % and 2:4 through the CLI on every fixture and
# every real model of MODELS.md (the light_* topologies included): the CLI validates each output
# in onnxruntime before writing it; each written model is then checked with onnx.checker (full
# shape inference) and its pruned weights are read back from the file and checked against the
# report and the requested pattern by scripts/sparse_check.py (exact zero counts; the per-layer
# or global count at 70 %; at most N nonzeros in every N:M group), then deleted. Small
# calibration and solver settings: it checks validity, not quality (the quality table is
# scripts/sparse_quality.sh). MODELS, MASKS, METHODS, PATTERNS narrow the grid.
# Needs scripts/setup.sh. Appends one JSON line per run to scripts/results/sparse-matrix.jsonl
# (committed, so the evidence behind the README's table outlives a machine; LOG= to write
# elsewhere) and skips the runs that file already holds (delete it to start over), so an
# interrupted sweep resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/onnx-prune}
py=.deps/venv/bin/python
out=target/sparse-matrix
log=${LOG:-scripts/results/sparse-matrix.jsonl}
mkdir -p "$out" "$(dirname "$log")"
. scripts/models.sh
small="--compensation-samples 16 --fisher-samples 16 --hessian-samples 8 --probes 2 --newton-steps 1 --cg-iters 3 --horizon 3 --latency-runs 0 --force"
for m in ${MODELS:-$fixtures $real $light}; do
  model_data "$m"
  for p in ${PATTERNS:-0.7 2:4}; do
    if [ "$p" = "2:4" ]; then pat="--nm 2:4"; else pat="--unstructured $p"; fi
    for mask in ${MASKS:-magnitude obs woodfisher fisher-diag hutchinson-diag}; do
      for method in ${METHODS:-none obs woodfisher snows}; do
        f="$out/$m-${p/:/of}-$mask-$method.onnx"
        key="\"model\": \"$m\", \"pattern\": \"$p\", \"mask\": \"$mask\", \"method\": \"$method\","
        if [ -f "$log" ] && grep -qF "$key" "$log"; then continue; fi
        start=$(date +%s.%N)
        rc=0
        $bin "$model" "$f" $pat --mask "$mask" --method "$method" $data $small \
          --report "$out/report.json" >"$out/last.log" 2>&1 || rc=$?
        secs=$(echo "$(date +%s.%N) - $start" | bc)
        $py scripts/sparse_check.py "$m" "$p" "$mask" "$method" "$rc" "$secs" "$f" \
          "$out/report.json" "$out/last.log" >>"$log"
        tail -1 "$log"
        rm -f "$f" "$out/report.json"
      done
    done
  done
done
