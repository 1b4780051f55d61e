"""Renders scripts/results/sparse-quality.jsonl (scripts/sparse_quality.sh) as the README's table:
held-out top-1 (fixtures; real models: scripts/score_real.py's metric) per model × row (MP, MP+, obs, woodfisher, snows on magnitude / obs /
woodfisher masks) × pattern."""
import json
import sys

# The committed log of scripts/sparse_quality.sh (or the file given): the latest line of each
# model × pattern × row wins. Cells whose runs predate the log (2026-12-04 and earlier: the
# README's fixture tables and the layer-wise rows of the real models) print as "–".
log = sys.argv[1] if len(sys.argv) > 1 else "scripts/results/sparse-quality.jsonl"
rows = ["mp", "mp+", "obs", "wf", "snows-mag", "snows-gn", "snows-obs", "snows-wf"]
pats = ["0.5", "0.7", "0.8", "0.9", "2of4"]
res, dense, metric, extra = {}, {}, {}, {}
for line in open(log):
    r = json.loads(line)
    m = r["model"]
    # Rows beyond the table's own (e.g. the "-sens" rows of --allocation sensitivity, or the
    # calibration-size rows) follow them, in the order the log first names them.
    if r["row"] not in rows and r["row"] not in extra.setdefault(m, []):
        extra[m].append(r["row"])
    res[(m, r["pattern"].replace(":", "of"), r["row"])] = r["text"]
    dense[m], metric[m] = r["dense_text"], r["metric"]
for m in ["resnet", "mobilenet", "vit", "mlp", "mlpnet", "pp_lcnet_orientation", "ppocr_v4_rec", "minilm_l3"]:
    if m not in dense:
        continue
    print(f"\n**{m}** ({metric[m]}, dense {dense[m]})\n")
    print("| row | " + " | ".join("2:4" if p == "2of4" else f"{float(p) * 100:.0f} %" for p in pats) + " |")
    print("|---|" + "---|" * len(pats))
    for row in rows + [x for x in extra.get(m, []) if x.endswith("-sens")]:
        cells = [res.get((m, p, row), "–") for p in pats]
        print(f"| {row} | " + " | ".join(cells) + " |")
