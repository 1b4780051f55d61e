"""Scores a pruned real model on its held-out inputs with the metric of the README's quality tables
(the same as examples/quality_table.rs): top-1 accuracy against the free labels (PP-LCNet,
PP-OCR cls), exact match / character error rate of the greedy CTC decode (PP-OCR rec), cosine
similarity of the first float output with the dense model's over the whole tensor (MiniLM,
PP-OCR det). Prints one JSON line: {"model", "metric", "dense", "pruned", "text", "dense_text"}.

Usage: .deps/venv/bin/python scripts/score_real.py MODEL_NAME PRUNED.onnx   (needs scripts/setup.sh)
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(__file__))
from make_inputs import ctc_greedy, edit_distance, rec_vocab  # noqa: E402

DEPS = os.path.join(os.path.dirname(__file__), "..", ".deps")


def run(path, feeds):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, dict(feeds))


def main(name, pruned):
    dense_path = os.path.join(DEPS, "models", f"{name}.onnx")
    feeds = np.load(os.path.join(DEPS, "inputs", f"{name}_eval.npz"))
    dense, got = run(dense_path, feeds), run(pruned, feeds)
    labels = os.path.join(DEPS, "inputs", f"{name}_eval_labels.npy")
    strings = os.path.join(DEPS, "inputs", f"{name}_eval_labels.json")
    if os.path.exists(labels):
        y = np.load(labels).astype(np.int64).ravel()
        acc = [float((o[0].argmax(-1).ravel() == y).mean()) for o in (dense, got)]
        row = {"metric": "top-1", "dense": acc[0], "pruned": acc[1],
               "dense_text": f"{100 * acc[0]:.1f}", "text": f"{100 * acc[1]:.1f}"}
    elif os.path.exists(strings):
        want = json.load(open(strings))
        vocab = rec_vocab(dense_path)
        res = []
        for o in (dense, got):
            read = ctc_greedy(o[0], vocab)
            exact = float(np.mean([a == b for a, b in zip(read, want)]))
            cer = sum(edit_distance(a, b) for a, b in zip(read, want)) / max(1, sum(len(b) for b in want))
            res.append((exact, cer))
        row = {"metric": "exact / CER", "dense": res[0][0], "pruned": res[1][0], "cer": res[1][1],
               "dense_text": f"{100 * res[0][0]:.1f} / {100 * res[0][1]:.1f}",
               "text": f"{100 * res[1][0]:.1f} / {100 * res[1][1]:.1f}"}
    else:
        i = next(k for k, o in enumerate(dense) if np.issubdtype(o.dtype, np.floating))
        a, b = dense[i].astype(np.float64).ravel(), got[i].astype(np.float64).ravel()
        cos = float(a @ b / max(1e-300, np.linalg.norm(a) * np.linalg.norm(b)))
        row = {"metric": "cosine", "dense": 1.0, "pruned": cos, "dense_text": "1.0000", "text": f"{cos:.4f}"}
    row["model"] = name
    print(json.dumps(row))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
