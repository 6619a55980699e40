#!/usr/bin/env python3
"""Rendered Moroccan plates: the Arabic letter classifier's training data and the held-out set.

    plates.py train   --out models/plates/letters.onnx   # render glyph crops, train, export
    plates.py heldout --out DIR [--n 400] [--seed 7]     # plates for `vigil plate eval DIR`
    plates.py scene   --out F.rgb --plate 12345-ب-6      # a car carrying the plate (the OCR bench)

Nothing here is downloaded: glyphs come from Debian's fonts (fonts-dejavu-core, fonts-noto-core).
The classifier is trained on DejaVu Sans, Noto Naskh Arabic and Noto Kufi Arabic; the held-out
plates write their letter in **Noto Sans Arabic**, a font the classifier never saw, with their own
seed, so the reported accuracy is on material the parameters were not chosen on.

The classifier is a two-layer perceptron over a 32 x 32 grey crop standardised to mean 0 and
standard deviation 1 (vigil does the same in Rust, `models/src/plates.rs`), trained with NumPy
(Adam, cross-entropy) and written as ONNX with `onnx.helper`: no deep-learning framework is needed
for a network this small. The whole run (30,000 rendered crops, 12 epochs) takes about eight
minutes on two cores, most of it rendering.
"""

import argparse
import csv
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# The letters vigil's classifier knows, in output order (models/src/plates.rs LETTERS), then
# "none" (a crop holding no letter: digits, a bar, blank plate).
LETTERS = ["أ", "ب", "د", "ه", "و", "ط", "ي", "ج"]
CLASSES = LETTERS + ["none"]
SIZE = 32

FONTS = "/usr/share/fonts/truetype"
DIGIT_FONTS = [f"{FONTS}/dejavu/DejaVuSans-Bold.ttf", f"{FONTS}/dejavu/DejaVuSansCondensed-Bold.ttf"]
TRAIN_LETTER_FONTS = [
    f"{FONTS}/dejavu/DejaVuSans.ttf",
    f"{FONTS}/dejavu/DejaVuSans-Bold.ttf",
    f"{FONTS}/noto/NotoNaskhArabic-Regular.ttf",
    f"{FONTS}/noto/NotoNaskhArabic-Bold.ttf",
    f"{FONTS}/noto/NotoKufiArabic-Regular.ttf",
    f"{FONTS}/noto/NotoKufiArabic-Bold.ttf",
]
HELDOUT_LETTER_FONTS = [f"{FONTS}/noto/NotoSansArabic-Regular.ttf", f"{FONTS}/noto/NotoSansArabic-Bold.ttf"]


def font(path, size, cache={}):
    key = (path, size)
    if key not in cache:
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: install Debian's fonts-dejavu-core and fonts-noto-core")
        cache[key] = ImageFont.truetype(path, size)
    return cache[key]


def render_plate(rng, serial, letter, region, two_line, letter_font, h):
    """A clean plate and the box of each field: {"serial", "letter", "region"} -> (x0, y0, x1, y1)."""
    ink = (12, 12, 12)
    if two_line:
        w = int(h * rng.uniform(1.5, 1.9))
        line = h / 2
    else:
        w = int(h * rng.uniform(4.3, 5.0))
        line = h
    im = Image.new("RGB", (w, h), (242, 242, 238))
    d = ImageDraw.Draw(im)
    d.rounded_rectangle([0, 0, w - 1, h - 1], radius=max(2, h // 12), outline=ink, width=max(2, h // 20))
    digit_font = DIGIT_FONTS[rng.integers(len(DIGIT_FONTS))]
    digit_h = line * rng.uniform(0.55, 0.68)
    letter_h = line * rng.uniform(0.38, 0.55)
    bar = max(2, h // 22)
    boxes = {}

    def put(key, x, y, text, path, ink_h, max_w):
        # The largest size whose ink is at most ink_h tall and max_w wide, centred on (x, y).
        size = int(ink_h * 2)
        while size > 6:
            x0, y0, x1, y1 = font(path, size).getbbox(text)
            if y1 - y0 <= ink_h and x1 - x0 <= max_w:
                break
            size -= 1
        f = font(path, size)
        x0, y0, x1, y1 = f.getbbox(text)
        at = (x - (x0 + x1) / 2, y - (y0 + y1) / 2)
        d.text(at, text, font=f, fill=ink)
        boxes[key] = d.textbbox(at, text, font=f)

    if two_line:
        # Letter and code on top, serial below (the domain notes); the letter sits left or right.
        left, right = (letter, region) if rng.random() < 0.5 else (region, letter)
        for text, x in [(left, w * 0.27), (right, w * 0.73)]:
            if text == letter:
                put("letter", x, line / 2, text, letter_font, letter_h, w * 0.35)
            else:
                put("region", x, line / 2, text, digit_font, digit_h, w * 0.38)
        d.line([(w * 0.5, bar * 2), (w * 0.5, line - bar)], fill=ink, width=bar)
        d.line([(bar * 2, line), (w - bar * 2, line)], fill=ink, width=bar)
        put("serial", w / 2, line * 1.5, serial, digit_font, digit_h, w * 0.85)
    else:
        b1, b2 = w * rng.uniform(0.54, 0.58), w * rng.uniform(0.77, 0.8)
        put("serial", b1 / 2, h / 2, serial, digit_font, digit_h, b1 * 0.86)
        d.line([(b1, bar * 2), (b1, h - bar * 2)], fill=ink, width=bar)
        put("letter", (b1 + b2) / 2, h / 2, letter, letter_font, letter_h, (b2 - b1) * 0.7)
        d.line([(b2, bar * 2), (b2, h - bar * 2)], fill=ink, width=bar)
        put("region", (b2 + w) / 2, h / 2, region, digit_font, digit_h, (w - b2) * 0.75)
    return im, boxes


def degrade(rng, im, margin=True):
    """Perspective, blur, noise and night contrast, with some car body around the plate; returns
    the image and the plate's offset in it."""
    w, h = im.size
    mx = my = 0
    if margin:
        mx, my = int(w * rng.uniform(0.02, 0.12)), int(h * rng.uniform(0.05, 0.3))
        body = tuple(int(v) for v in rng.integers(20, 200, 3))
        canvas = Image.new("RGB", (w + 2 * mx, h + 2 * my), body)
        canvas.paste(im, (mx, my))
        im = canvas
    w, h = im.size
    # Perspective: move each corner by up to 6% of the size.
    j = lambda s: rng.uniform(-0.06, 0.06) * s  # noqa: E731
    quad = (j(w), j(h), j(w), h + j(h), w + j(w), h + j(h), w + j(w), j(h))
    im = im.transform((w, h), Image.QUAD, quad, resample=Image.BILINEAR, fillcolor=(90, 90, 90))
    if rng.random() < 0.7:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.4)))
    a = np.asarray(im, dtype=np.float32)
    if rng.random() < 0.35:  # night: dark, low contrast
        a = a * rng.uniform(0.15, 0.45) + rng.uniform(0, 25)
    a = a + rng.normal(0, rng.uniform(2, 14), a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), (mx, my)


def random_plate(rng):
    serial = str(rng.integers(1, 100000))
    region = str(rng.integers(1, 90))
    letter = LETTERS[rng.integers(len(LETTERS))]
    return serial, letter, region


def resize_bilinear(grey, w, h):
    """Bilinear sampling at pixel centres, as `models/src/plates.rs` resizes (no antialiasing)."""
    sh, sw = grey.shape
    fx = np.clip((np.arange(w) + 0.5) * sw / w - 0.5, 0, sw - 1)
    fy = np.clip((np.arange(h) + 0.5) * sh / h - 0.5, 0, sh - 1)
    x1, y1 = np.floor(fx).astype(int), np.floor(fy).astype(int)
    x2, y2 = np.minimum(x1 + 1, sw - 1), np.minimum(y1 + 1, sh - 1)
    wx, wy = fx - x1, fy - y1
    top = grey[y1][:, x1] * (1 - wx) + grey[y1][:, x2] * wx
    bottom = grey[y2][:, x1] * (1 - wx) + grey[y2][:, x2] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def standardise(crop_rgb):
    grey = np.asarray(crop_rgb, dtype=np.float32).mean(axis=2)
    small = resize_bilinear(grey, SIZE, SIZE)
    return (small - small.mean()) / (small.std() + 1.0)


def letter_sample(rng, letter_fonts, cls):
    """One training crop: the span between the serial and the code, as vigil cuts it."""
    serial, letter, region = random_plate(rng)
    if cls < len(LETTERS):
        letter = LETTERS[cls]
    two = rng.random() < 0.3
    h = int(rng.integers(70, 140) if two else rng.integers(36, 100))
    lf = letter_fonts[rng.integers(len(letter_fonts))]
    im, boxes = render_plate(rng, serial, letter, region, two, lf, h)
    ph = im.size[1]
    im, (mx, my) = degrade(rng, im, margin=rng.random() < 0.6)
    boxes = {k: (b[0] + mx, b[1] + my, b[2] + mx, b[3] + my) for k, b in boxes.items()}
    W, H = im.size
    lx0, ly0, lx1, ly1 = boxes["letter"]
    if cls < len(LETTERS):
        gw = lx1 - lx0
        if two:
            left_limit = 0 if boxes["region"][0] > lx0 else boxes["region"][2]
            right_limit = W if boxes["region"][0] < lx0 else boxes["region"][0]
            y0, y1 = my, my + ph // 2
        else:
            left_limit, right_limit = boxes["serial"][2], boxes["region"][0]
            y0, y1 = my, my + ph
        x0 = rng.uniform(left_limit, max(left_limit, lx0 - 0.1 * gw))
        x1 = rng.uniform(min(right_limit, lx1 + 0.1 * gw), right_limit)
        # The rows vigil cuts run from a little inside the plate to a little into the car.
        lh = y1 - y0
        y0 += rng.uniform(-0.25, 0.12) * lh
        y1 -= rng.uniform(-0.25, 0.12) * lh
    else:
        # No letter: a digit's span, the plate's edge or a bar.
        if rng.random() < 0.25:
            # A bar alone (a separator taken for the letter's span).
            bx = boxes["serial"][2] + rng.uniform(0, 0.3) * (boxes["region"][0] - boxes["serial"][2])
            x0, x1 = bx - rng.uniform(1, 6), bx + rng.uniform(3, 14)
            y0, y1 = my, my + ph
            x0, x1 = int(max(0, x0)), int(min(W, max(x1, x0 + 4)))
            return standardise(im.crop((x0, int(y0), x1, int(min(H, y1)))))
        key = ["serial", "region"][rng.integers(2)]
        bx0, by0, bx1, by1 = boxes[key]
        cw = (bx1 - bx0) / max(1, len(serial if key == "serial" else region))
        x0 = rng.uniform(bx0 - cw, bx1 - cw)
        x1 = x0 + cw * rng.uniform(0.8, 2.5)
        y0, y1 = by0 - rng.uniform(2, 8), by1 + rng.uniform(2, 8)
    x0, x1 = int(max(0, x0)), int(min(W, max(x1, x0 + 4)))
    y0, y1 = int(max(0, y0)), int(min(H, max(y1, y0 + 4)))
    return standardise(im.crop((x0, y0, x1, y1)))


def dataset(rng, fonts, n):
    ys = rng.integers(0, len(CLASSES), n)
    # "none" is drawn as often as one letter.
    xs = np.stack([letter_sample(rng, fonts, int(y)) for y in ys]).reshape(n, -1).astype(np.float32)
    return xs, ys


def train(args):
    rng = np.random.default_rng(args.seed)
    print(f"rendering {args.n} training crops and {args.n // 5} validation crops ...", flush=True)
    xs, ys = dataset(rng, TRAIN_LETTER_FONTS, args.n)
    vx, vy = dataset(rng, TRAIN_LETTER_FONTS, args.n // 5)
    hx, hy = dataset(rng, HELDOUT_LETTER_FONTS, 2000)
    d, hdn, k = SIZE * SIZE, args.hidden, len(CLASSES)
    params = {
        "w1": rng.normal(0, math.sqrt(2 / d), (d, hdn)).astype(np.float32),
        "b1": np.zeros(hdn, np.float32),
        "w2": rng.normal(0, math.sqrt(2 / hdn), (hdn, k)).astype(np.float32),
        "b2": np.zeros(k, np.float32),
    }
    m = {n: np.zeros_like(p) for n, p in params.items()}
    v = {n: np.zeros_like(p) for n, p in params.items()}

    def forward(x):
        z = x @ params["w1"] + params["b1"]
        a = np.maximum(z, 0)
        logits = a @ params["w2"] + params["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return z, a, p / p.sum(axis=1, keepdims=True)

    step, lr, batch = 0, 2e-3, 128
    for epoch in range(args.epochs):
        order = rng.permutation(len(xs))
        for i in range(0, len(xs), batch):
            idx = order[i : i + batch]
            x, y = xs[idx], ys[idx]
            z, a, p = forward(x)
            g = p.copy()
            g[np.arange(len(y)), y] -= 1
            g /= len(y)
            grads = {"w2": a.T @ g, "b2": g.sum(0)}
            ga = (g @ params["w2"].T) * (z > 0)
            grads["w1"], grads["b1"] = x.T @ ga + 1e-4 * params["w1"], ga.sum(0)
            step += 1
            for n in params:
                m[n] = 0.9 * m[n] + 0.1 * grads[n]
                v[n] = 0.999 * v[n] + 0.001 * grads[n] ** 2
                mh, vh = m[n] / (1 - 0.9**step), v[n] / (1 - 0.999**step)
                params[n] -= lr * mh / (np.sqrt(vh) + 1e-8)
        lr *= 0.85
        acc = (forward(vx)[2].argmax(1) == vy).mean()
        print(f"epoch {epoch + 1}: validation accuracy {acc:.4f}", flush=True)
    held = (forward(hx)[2].argmax(1) == hy).mean()
    print(f"held-out font (Noto Sans Arabic) crop accuracy: {held:.4f}")
    export(params, args.out)


def export(params, out):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    k = len(CLASSES)
    nodes = [
        helper.make_node("Flatten", ["crop"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["z"]),
        helper.make_node("Relu", ["z"], ["a"]),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    inits = [numpy_helper.from_array(params[n], n) for n in ["w1", "b1", "w2", "b2"]]
    graph = helper.make_graph(
        nodes,
        "vigil_plate_letters",
        [helper.make_tensor_value_info("crop", TensorProto.FLOAT, ["n", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    model.doc_string = "Arabic letter of Moroccan plates; trained by vigil's scripts/plates.py on rendered glyphs"
    helper.set_model_props(model, {"classes": "\n".join(CLASSES), "input": "32x32 grey, standardised"})
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    onnx.save(model, out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


def heldout(args):
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "truth.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "plate", "lines", "night"])
        for i in range(args.n):
            serial, letter, region = random_plate(rng)
            two = rng.random() < 0.3
            lf = HELDOUT_LETTER_FONTS[rng.integers(len(HELDOUT_LETTER_FONTS))]
            im, _ = render_plate(rng, serial, letter, region, two, lf, int(rng.integers(70, 140) if two else rng.integers(36, 100)))
            im, _ = degrade(rng, im)
            night = float(np.asarray(im).mean()) < 90
            name = f"{i:04}.png"
            im.save(os.path.join(args.out, name))
            w.writerow([name, f"{serial}-{letter}-{region}", 2 if two else 1, int(night)])
    print(f"wrote {args.n} plates and truth.csv to {args.out}")


def scene(args):
    """Raw RGB24 frames (as `vigil render` writes them) of a vehicle front carrying `--plate`
    crossing a street: the vehicle in the simulator's vehicle blue (the shapes detector's
    colour), with grille, headlights and bumper around the plate, as an ANPR camera sees it."""
    rng = np.random.default_rng(args.seed)
    w, h = (int(v) for v in args.size.split("x"))
    serial, letter, region = args.plate.split("-")
    plate, _ = render_plate(rng, serial, letter, region, False, HELDOUT_LETTER_FONTS[1], 30)
    plate = plate.resize((int(30 * plate.width / plate.height), 30), Image.BILINEAR)
    street = np.full((h, w, 3), 105, np.uint8)
    street[:, :, 1] = 108
    street[(np.arange(h) % 90 < 3), :, :] = 190
    cw, ch = 250, 170
    with open(args.out, "wb") as f:
        for i in range(args.frames):
            im = Image.fromarray(street.copy())
            d = ImageDraw.Draw(im)
            x = int(w * 0.15 + (w * 0.55) * i / max(1, args.frames - 1))
            y = h // 2 - ch // 2
            d.rounded_rectangle([x, y, x + cw, y + ch], radius=24, fill=(40, 60, 200))
            d.rectangle([x + 30, y + 18, x + cw - 30, y + 62], fill=(25, 25, 30))  # windscreen
            d.rectangle([x + 45, y + 78, x + cw - 45, y + 104], fill=(28, 28, 28))  # grille
            for gy in range(y + 82, y + 102, 6):
                d.line([(x + 48, gy), (x + cw - 48, gy)], fill=(75, 75, 75), width=2)
            d.ellipse([x + 8, y + 76, x + 40, y + 98], fill=(235, 235, 210))
            d.ellipse([x + cw - 40, y + 76, x + cw - 8, y + 98], fill=(235, 235, 210))
            d.rectangle([x, y + ch - 14, x + cw, y + ch], fill=(18, 18, 18))  # bumper
            im.paste(plate, (x + (cw - plate.width) // 2, y + ch - 14 - plate.height - 6))
            f.write(im.tobytes())
    print(f"wrote {args.frames} frames of {w}x{h} to {args.out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", default="models/plates/letters.onnx")
    t.add_argument("--n", type=int, default=30000)
    t.add_argument("--epochs", type=int, default=12)
    t.add_argument("--hidden", type=int, default=192)
    t.add_argument("--seed", type=int, default=1)
    h = sub.add_parser("heldout")
    h.add_argument("--out", required=True)
    h.add_argument("--n", type=int, default=400)
    h.add_argument("--seed", type=int, default=7)
    c = sub.add_parser("scene")
    c.add_argument("--out", required=True)
    c.add_argument("--plate", required=True, help="serial-letter-code, e.g. 12345-ب-6")
    c.add_argument("--frames", type=int, default=40)
    c.add_argument("--size", default="1280x720")
    c.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    {"train": train, "heldout": heldout, "scene": scene}[args.cmd](args)


if __name__ == "__main__":
    main()
