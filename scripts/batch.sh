#!/usr/bin/env bash
# Compresses every *.onnx of a folder with the same options, continuing past failures, and
# writes one summary table (OUT/summary.tsv, also printed). Exit 0 when every model succeeded,
# 1 when any failed (its log is OUT/NAME.log), 2 on bad usage.
#
#   scripts/batch.sh MODELS/ OUT/ [--jobs N] -- --structured 0.5 [any onnx-prune options]
#
# Each model gets OUT/NAME.onnx, OUT/NAME.json (--report) and OUT/NAME.log. --jobs runs that
# many models at once (default 1: the passes already use every core).
set -uo pipefail
usage() { echo "usage: $0 MODELS/ OUT/ [--jobs N] [--bin PATH] -- ONNX-PRUNE-OPTIONS…" >&2; exit 2; }
[ $# -ge 3 ] || usage
in=$1 out=$2; shift 2
jobs=1
bin=${ONNX_PRUNE:-$(dirname "$0")/../target/release/onnx-prune}
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    --jobs) jobs=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ "${1:-}" = "--" ] || usage
shift
[ -d "$in" ] || { echo "error: $in is not a folder" >&2; exit 2; }
[ -x "$bin" ] || { echo "error: $bin not found (cargo build --release, or --bin PATH)" >&2; exit 2; }
mkdir -p "$out"
export bin out
one() {
  local m=$1 name
  name=$(basename "$m" .onnx)
  local start end rc
  start=$(date +%s%N)
  "$bin" "$m" "$out/$name.onnx" --force --report "$out/$name.json" "${@:2}" >"$out/$name.log" 2>&1
  rc=$?
  end=$(date +%s%N)
  local ds=$(((end - start) / 100000000))
  printf '%s\t%s\t%d.%d\n' "$name" "$rc" $((ds / 10)) $((ds % 10)) >"$out/$name.status"
}
export -f one
shopt -s nullglob
models=("$in"/*.onnx)
[ ${#models[@]} -gt 0 ] || { echo "error: no .onnx file in $in" >&2; exit 2; }
printf '%s\0' "${models[@]}" | xargs -0 -P "$jobs" -I{} bash -c 'one "$@"' _ {} "$@"
summary="$out/summary.tsv"
printf 'model\tstatus\tseconds\tparams before\tparams after\taccuracy/agreement\terror\n' >"$summary"
failed=0
for m in "${models[@]}"; do
  name=$(basename "$m" .onnx)
  IFS=$'\t' read -r _ rc secs <"$out/$name.status"
  if [ "$rc" = 0 ]; then
    python3 - "$out/$name.json" "$name" "$secs" >>"$summary" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); v = r.get("validation", {})
if "before" in r:
    b, a = r["before"]["params"], r["after"]["params"]
else:  # unstructured: same parameter count, zeros inside
    b, a = r.get("params"), f"{100 * r.get('model_sparsity', 0):.1f}% zeros"
if v.get("accuracy_pruned") is not None:
    q = f"top-1 {100 * v['accuracy_dense']:.1f}% -> {100 * v['accuracy_pruned']:.1f}%"
elif v.get("outputs"):
    o = v["outputs"][0]; q = f"cosine {o.get('cosine', float('nan')):.4f}"
else:
    q = ""
print(f"{sys.argv[2]}\tok\t{sys.argv[3]}\t{b}\t{a}\t{q}\t")
PY
  else
    failed=$((failed + 1))
    err=$(grep -m1 '^error:' "$out/$name.log" || tail -n1 "$out/$name.log")
    printf '%s\tfailed (exit %s)\t%s\t\t\t\t%s\n' "$name" "$rc" "$secs" "$err" >>"$summary"
  fi
  rm -f "$out/$name.status"
done
column -t -s $'\t' "$summary" 2>/dev/null || cat "$summary"
echo "${#models[@]} models, $failed failed; summary in $summary"
[ "$failed" = 0 ]
