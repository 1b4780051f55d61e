"""One run of scripts/sparse_quality.sh as a JSON line for scripts/results/sparse-quality.jsonl
(committed, so the README's quality table outlives the machine that ran it): the cell's metric
(held-out top-1 of a fixture, or scripts/score_real.py's metric of a real model), the dense
figure, wall time, and for SNOWS how many layers kept their Newton steps after the held-out
check. Usage: sparse_quality_row.py MODEL PATTERN ROW EXTRA SECONDS REPORT.json [SCORE.json]."""
import json
import sys

m, p, row, extra, secs, rep = sys.argv[1:7]
score = sys.argv[7] if len(sys.argv) > 7 else None
r = json.load(open(rep))
out = {"model": m, "pattern": p, "row": row, "mask": r["mask"], "method": r["method"], "extra": extra}
if score:
    s = json.load(open(score))
    out.update(metric=s["metric"], text=s["text"], dense_text=s["dense_text"])
else:
    v = r["validation"]
    out.update(metric="top-1", text=f"{100 * v['accuracy_pruned']:.1f}", dense_text=f"{100 * v['accuracy_dense']:.1f}")
snows = [l["snows"] for l in r.get("layers", []) if l.get("snows")]
if snows:
    out["snows_layers"] = len(snows)
    out["snows_kept"] = sum(1 for s in snows if s.get("kept"))
out["seconds"] = round(float(secs), 1)
out["phases"] = {k: round(v, 1) for k, v in r.get("seconds", {}).items()}
out["date"] = r.get("date") or __import__("datetime").date.today().isoformat()
print(json.dumps(out))
