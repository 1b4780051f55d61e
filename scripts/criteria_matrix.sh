#!/usr/bin/env bash
# Every structured criterion × variant (no compensation / compensation / compensation +
# implants) at --structured 0.5 through the CLI on every fixture and every real model of
# MODELS.md (the light_* topologies included): the CLI validates each output in onnxruntime
# before writing it, and each written model is then checked with onnx.checker (full shape
# inference) and deleted. Small calibration settings (it checks validity, not quality:
# the quality table is examples/quality_table.rs). MODELS, CRITERIA, VARIANTS narrow the grid.
# Needs scripts/setup.sh. Appends one JSON line per run to target/criteria-matrix.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/onnx-prune
py=.deps/venv/bin/python
out=target/criteria-matrix
log=target/criteria-matrix.jsonl
mkdir -p "$out"
. scripts/models.sh
for m in ${MODELS:-$fixtures $real $light}; do
  model_data "$m"
  for c in ${CRITERIA:-magnitude taylor fisher hap sosp-h}; do
    for v in ${VARIANTS:-none comp implant}; do
      case $v in
        none) flags="--no-compensation --no-implant" ;;
        comp) flags="--no-implant" ;;
        implant) flags="--implant" ;;
      esac
      f="$out/$m-$c-$v.onnx"
      start=$(date +%s.%N)
      rc=0
      $bin "$model" "$f" --structured 0.5 --criterion "$c" $flags $data --calib-samples 32 \
        --hessian-samples 16 --probes 2 --latency-runs 0 --force --report "$out/report.json" \
        >"$out/last.log" 2>&1 || rc=$?
      secs=$(echo "$(date +%s.%N) - $start" | bc)
      checker="not run"
      if [ $rc -eq 0 ]; then
        if $py -c "import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)" "$f" 2>"$out/checker.log"; then
          checker=pass
        else
          checker="fail: $(tail -1 "$out/checker.log")"
        fi
      fi
      $py - "$m" "$c" "$v" "$rc" "$secs" "$checker" "$out/report.json" "$out/last.log" >>"$log" <<'EOF'
import json, sys
m, c, v, rc, secs, checker, rep, last = sys.argv[1:]
row = {"model": m, "criterion": c, "variant": v, "exit": int(rc), "seconds": round(float(secs), 1), "checker": checker}
if rc == "0":
    r = json.load(open(rep))
    row["params_removed"] = round(r["params_removed"] / r["before"]["params"], 4)
    row["cosine"] = r["validation"]["outputs"][0]["cosine"]
    row["implants"] = len(r["compensation"]["implants"])
else:
    row["error"] = open(last).read().strip().splitlines()[-1:]
print(json.dumps(row))
EOF
      tail -1 "$log"
      rm -f "$f" "$out/report.json"
    done
  done
done
