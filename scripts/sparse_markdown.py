"""Renders target/sparse-quality/*.json (scripts/sparse_quality.sh) as the README's table:
held-out top-1 per model × row (MP, MP+, obs, woodfisher, snows on magnitude / obs /
woodfisher masks) × pattern."""
import glob
import json
import os

rows = ["mp", "mp+", "obs", "wf", "snows-mag", "snows-gn", "snows-obs", "snows-wf"]
pats = ["0.5", "0.7", "0.8", "0.9", "2of4"]
res, dense = {}, {}
for f in glob.glob("target/sparse-quality/*.json"):
    base = os.path.basename(f)[:-5]
    m, p, row = base.split("-", 2)
    r = json.load(open(f))
    v = r["validation"]
    res[(m, p, row)] = 100 * v["accuracy_pruned"]
    dense[m] = 100 * v["accuracy_dense"]
for m in ["resnet", "mobilenet", "vit", "mlp", "mlpnet"]:
    if m not in dense:
        continue
    print(f"\n**{m}** (dense {dense[m]:.1f} %)\n")
    print("| row | " + " | ".join("2:4" if p == "2of4" else f"{float(p) * 100:.0f} %" for p in pats) + " |")
    print("|---|" + "---|" * len(pats))
    for row in rows:
        cells = [f"{res[(m, p, row)]:.1f}" if (m, p, row) in res else "–" for p in pats]
        print(f"| {row} | " + " | ".join(cells) + " |")
