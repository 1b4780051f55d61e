"""Renders target/quality.json (examples/quality_table.rs) as the README's markdown tables.

Per model: one row per criterion; each ratio's cell is `none / comp / implant` (no compensation /
compensation / compensation + neural implants). Then the margin of hap + implants + compensation
over magnitude without compensation at every ratio.
"""
import json
import sys
from collections import defaultdict

rows = []
for f in sys.argv[1:] or ["target/quality.json"]:
    rows += json.load(open(f))
by = defaultdict(dict)
dense = {}
order = []
for r in rows:
    if "error" in r:
        by[r["model"]][(r["criterion"], r["ratio"], r["variant"])] = "err"
        continue
    m = r["model"]
    if m not in order:
        order.append(m)
    dense[m] = r["dense"]
    by[m][(r["criterion"], r["ratio"], r["variant"])] = r
ratios = [0.3, 0.5, 0.7]
crit = ["magnitude", "taylor", "fisher", "hap", "sosp-h"]


def short(r):
    if r is None:
        return "–"
    if r == "err":
        return "err"
    t = r["text"]
    return t.split(" / ")[0] if " / " in t else t


margins = []
for m in order:
    print(f"\n**{m}** (dense: {dense[m]})\n")
    print("| criterion | " + " | ".join(f"R = {x}: none / comp / implant" for x in ratios) + " |")
    print("|---|" + "---|" * len(ratios))
    for c in crit:
        cells = []
        for x in ratios:
            cells.append(" / ".join(short(by[m].get((c, x, v))) for v in ["none", "comp", "implant"]))
        print(f"| {c} | " + " | ".join(cells) + " |")
    for x in ratios:
        a, b = by[m].get(("hap", x, "implant")), by[m].get(("magnitude", x, "none"))
        if isinstance(a, dict) and isinstance(b, dict):
            margins.append((m, x, a["score"] - b["score"]))
print("\nhap + implants + compensation minus magnitude without compensation:\n")
print("| model | " + " | ".join(f"R = {x}" for x in ratios) + " |")
print("|---|" + "---|" * len(ratios))
for m in order:
    cells = []
    cosine = m in ("ppocr_v4_det", "minilm_l3")
    for x in ratios:
        v = [d for (mm, xx, d) in margins if mm == m and xx == x]
        if not v:
            cells.append("–")
        elif m == "open_nsfw":
            cells.append(f"{v[0]:+.4f} log-odds r")
        elif cosine:
            cells.append(f"{v[0]:+.4f} cosine")
        else:
            cells.append(f"{100 * v[0]:+.1f} points")
    print(f"| {m} | " + " | ".join(cells) + " |")
neg = [(m, x, d) for (m, x, d) in margins if d <= 0]
print(f"\n{len(margins)} comparisons, {len(neg)} not won: {neg}")
