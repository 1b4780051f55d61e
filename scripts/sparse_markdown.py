"""Renders target/sparse-quality/*.json (scripts/sparse_quality.sh) as the README's table:
held-out top-1 (fixtures; real models: scripts/score_real.py's metric) per model × row (MP, MP+, obs, woodfisher, snows on magnitude / obs /
woodfisher masks) × pattern."""
import glob
import json
import os

rows = ["mp", "mp+", "obs", "wf", "snows-mag", "snows-gn", "snows-obs", "snows-wf"]
pats = ["0.5", "0.7", "0.8", "0.9", "2of4"]
res, dense = {}, {}
metric = {}
for f in glob.glob("target/sparse-quality/*.json"):
    if f.endswith(".score.json"):
        continue
    base = os.path.basename(f)[:-5]
    m, p, row = base.split("-", 2)
    score = f[:-5] + ".score.json"
    if os.path.exists(score):
        # A real model: scripts/score_real.py's metric.
        s = json.load(open(score))
        res[(m, p, row)] = s["text"]
        dense[m], metric[m] = s["dense_text"], s["metric"]
        continue
    v = json.load(open(f))["validation"]
    if v.get("accuracy_pruned") is None:
        continue
    res[(m, p, row)] = f"{100 * v['accuracy_pruned']:.1f}"
    dense[m], metric[m] = f"{100 * v['accuracy_dense']:.1f}", "top-1"
for m in ["resnet", "mobilenet", "vit", "mlp", "mlpnet", "pp_lcnet_orientation", "ppocr_v4_rec", "minilm_l3"]:
    if m not in dense:
        continue
    print(f"\n**{m}** ({metric[m]}, dense {dense[m]})\n")
    print("| row | " + " | ".join("2:4" if p == "2of4" else f"{float(p) * 100:.0f} %" for p in pats) + " |")
    print("|---|" + "---|" * len(pats))
    for row in rows:
        cells = [res.get((m, p, row), "–") for p in pats]
        print(f"| {row} | " + " | ".join(cells) + " |")
