"""Renders scripts/results/sparse-matrix.jsonl (scripts/sparse_matrix.sh) as the README's table: per
model, how many mask × update × pattern runs the CLI wrote (validated in onnxruntime), how many
passed onnx.checker and the pattern check on the file's weights, which updates the SNOWS runs
ended with, and the wall time; then every failure."""
import json
import sys
from collections import OrderedDict

rows = [json.loads(l) for l in open(sys.argv[1] if len(sys.argv) > 1 else "scripts/results/sparse-matrix.jsonl")]
by = OrderedDict()
for r in rows:
    by.setdefault(r["model"], []).append(r)
print("| model | runs | written (validated in onnxruntime) | onnx.checker pass | pattern exact in the file | SNOWS runs that kept steps | seconds per run |")
print("|---|---|---|---|---|---|---|")
for m, rs in by.items():
    ok = [r for r in rs if r["exit"] == 0]
    chk = [r for r in ok if r.get("checker") == "pass"]
    pat = [r for r in ok if r.get("pattern_ok")]
    sn = [r for r in ok if r["method"] == "snows"]
    kept = sum(1 for r in sn if "snows" in r.get("methods", []))
    secs = [r["seconds"] for r in rs]
    print(f"| {m} | {len(rs)} | {len(ok)} | {len(chk)} | {len(pat)} | {kept} of {len(sn)} | {min(secs):.1f}–{max(secs):.1f} |")
bad = [r for r in rows if r["exit"] != 0 or r.get("checker") != "pass" or not r.get("pattern_ok")]
for r in bad:
    print(f"\nfailed: {r['model']} {r['pattern']} {r['mask']} {r['method']}: exit {r['exit']}, checker {r.get('checker')}, {r.get('problems') or r.get('error')}")
print(f"\n{len(rows)} runs, {len(rows) - len(bad)} written, passing onnx.checker and exact in the file")
