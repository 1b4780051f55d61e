"""One run of scripts/sparse_matrix.sh, checked and printed as a JSON line: onnx.checker with
full shape inference on the written model, and its pruned weights read back from the file:
the zeros of every pruned layer equal the report's, at least the pruned count are zero, and
the pattern holds — at sparsity S the per-layer (uniform) or total (global) pruned count is
round(S·n); at N:M no row has more than N nonzeros in any group of M consecutive input
channels at one tap (the layout of src/sparse/mask.rs::nm_groups, rebuilt here from the
report's rows/cols/taps/out_major)."""
import json
import sys

import numpy as np
import onnx
from onnx import numpy_helper

m, p, mask, method, rc, secs, path, rep, last = sys.argv[1:]
row = {"model": m, "pattern": p, "mask": mask, "method": method, "exit": int(rc), "seconds": round(float(secs), 1)}


def weights(model):
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def check(model, r):
    problems = []
    ws = weights(model)
    total_pruned = total_n = 0
    nm = p == "2:4"
    for layer in r["layers"]:
        w = ws.get(layer["weight"])
        if w is None:
            problems.append(f"{layer['weight']}: not in the file")
            continue
        flat = w.astype(np.float64).ravel()
        zeros = int((flat == 0).sum())
        if zeros != layer["zeros"]:
            problems.append(f"{layer['weight']}: {zeros} zeros in the file, {layer['zeros']} reported")
        if zeros < layer["pruned"]:
            problems.append(f"{layer['weight']}: {zeros} zeros < {layer['pruned']} pruned")
        total_pruned += layer["pruned"]
        total_n += flat.size
        if nm:
            rows, cols, taps = layer["rows"], layer["cols"], layer["taps"]
            a = flat.reshape(rows, cols) if layer["out_major"] else flat.reshape(cols, rows).T
            cin = cols // taps
            full = cin // 4 * 4
            if full:
                # columns are channel·taps + tap: [rows, cin, taps] → groups of 4 channels per tap
                g = (a.reshape(rows, cin, taps)[:, :full, :] != 0).reshape(rows, full // 4, 4, taps)
                most = int(g.sum(axis=2).max())
                if most > 2:
                    problems.append(f"{layer['weight']}: {most} nonzeros in a group of 4")
        elif r.get("allocation") == "uniform":
            want = min(round(float(p) * flat.size), flat.size)
            if layer["pruned"] != want:
                problems.append(f"{layer['weight']}: {layer['pruned']} pruned of {flat.size}, want {want}")
    if not nm and r.get("allocation") == "global":
        want = round(float(p) * total_n)
        if total_pruned != want:
            problems.append(f"global: {total_pruned} pruned of {total_n}, want {want}")
    return problems, total_pruned, total_n


if rc == "0":
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        row["checker"] = "pass"
    except Exception as e:  # the checker's own message is the finding
        model = None
        row["checker"] = f"fail: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    r = json.load(open(rep))
    row["layers"] = len(r["layers"])
    row["allocation"] = r.get("allocation")
    row["methods"] = sorted({layer["method"] for layer in r["layers"]})
    if model is not None:
        problems, pruned, n = check(model, r)
        row["sparsity"] = round(pruned / n, 4) if n else None
        row["pattern_ok"] = not problems
        if problems:
            row["problems"] = problems[:5]
    row["cosine"] = r["validation"]["outputs"][0]["cosine"]
else:
    row["error"] = open(last).read().strip().splitlines()[-1:]
print(json.dumps(row))
