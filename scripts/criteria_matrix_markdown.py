"""Renders target/criteria-matrix.jsonl (scripts/criteria_matrix.sh) as the README's table: per
model, how many criterion × variant runs the CLI wrote (validated in onnxruntime), how many
passed onnx.checker, the failures, the wall time and the parameters removed."""
import json
import sys
from collections import OrderedDict

rows = [json.loads(l) for l in open(sys.argv[1] if len(sys.argv) > 1 else "target/criteria-matrix.jsonl")]
by = OrderedDict()
for r in rows:
    by.setdefault(r["model"], []).append(r)
print("| model | runs | written (validated in onnxruntime) | onnx.checker pass | params removed | seconds per run |")
print("|---|---|---|---|---|---|")
for m, rs in by.items():
    ok = [r for r in rs if r["exit"] == 0]
    chk = [r for r in ok if r["checker"] == "pass"]
    pr = [r["params_removed"] for r in ok]
    secs = [r["seconds"] for r in rs]
    prs = f"{100 * min(pr):.1f}–{100 * max(pr):.1f} %" if pr else "–"
    print(f"| {m} | {len(rs)} | {len(ok)} | {len(chk)} | {prs} | {min(secs):.1f}–{max(secs):.1f} |")
bad = [r for r in rows if r["exit"] != 0 or r["checker"] != "pass"]
for r in bad:
    print(f"\nfailed: {r['model']} {r['criterion']} {r['variant']}: exit {r['exit']}, checker {r['checker']}, {r.get('error')}")
print(f"\n{len(rows)} runs, {len(rows) - len(bad)} written and passing onnx.checker")
