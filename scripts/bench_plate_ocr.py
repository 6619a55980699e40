#!/usr/bin/env python3
"""The plate reader's work in Python with onnxruntime: what a team would otherwise write.

    python scripts/bench_plate_ocr.py CROPS_DIR SCENE.rgb PPOCR_REC.onnx LETTERS.onnx PLATEDET.onnx

Per crop (CROPS_DIR/*.png): PP-OCR recognition on the serial's and the code's parts (height 48,
PIL resizing, values in [-1, 1], CTC argmax) and the letter classifier on the middle, as vigil
does; per vehicle of SCENE.rgb (1280 x 720 frames of `scripts/plates.py scene`): platedet on the
vehicle's crop letterboxed to 640 (float16), then the same OCR on the plate. One intra-op thread
per session, like vigil. Prints crops per second and vehicles per second (best of three rounds
for crops). benches/benches/plate_ocr.rs compares vigil's Rust path with it in the same run.
"""
import glob
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main():
    crops_dir, scene, rec_path, letters_path, det_path = sys.argv[1:6]
    rec, letters, det = session(rec_path), session(letters_path), session(det_path)
    chars = ["\0"] + rec.get_modelmeta().custom_metadata_map["character"].splitlines() + [" "]

    def read_line(img):
        w, h = img.size
        nw = max(16, int(np.ceil(48 * w / h)))
        a = np.asarray(img.resize((nw, 48), Image.BILINEAR), dtype=np.float32) / 127.5 - 1.0
        out = rec.run(None, {"x": a.transpose(2, 0, 1)[None]})[0][0]
        idx, text, prev = out.argmax(1), [], 0
        for k in idx:
            if k != 0 and k != prev and chars[k].isdigit():
                text.append(chars[k])
            prev = k
        return "".join(text)

    def classify(img):
        g = np.asarray(img.convert("RGB").resize((32, 32), Image.BILINEAR), dtype=np.float32).mean(axis=2)
        g = (g - g.mean()) / (g.std() + 1.0)
        return int(letters.run(None, {"crop": g[None, None].astype(np.float32)})[0].argmax())

    def read_crop(img):
        w, h = img.size
        if w < 2.6 * h:
            top, bottom = img.crop((0, 0, w, h // 2)), img.crop((0, h // 2, w, h))
            return read_line(bottom), classify(top.crop((0, 0, w // 2, h // 2))), read_line(top.crop((w // 2, 0, w, h // 2)))
        return (
            read_line(img.crop((0, 0, int(w * 0.56), h))),
            classify(img.crop((int(w * 0.57), 0, int(w * 0.77), h))),
            read_line(img.crop((int(w * 0.79), 0, w, h))),
        )

    crops = [Image.open(p).convert("RGB") for p in sorted(glob.glob(f"{crops_dir}/*.png"))]
    for c in crops[:3]:
        read_crop(c)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for c in crops:
            read_crop(c)
        best = min(best, time.perf_counter() - t)

    raw = np.fromfile(scene, dtype=np.uint8).reshape(-1, 720, 1280, 3)
    t = time.perf_counter()
    for i, frame in enumerate(raw):
        x = int(1280 * 0.15 + 1280 * 0.55 * i / max(1, len(raw) - 1))
        car = Image.fromarray(frame).crop((x - 25, 275 - 17, x + 275, 275 + 187))
        w, h = car.size
        r = min(640 / w, 640 / h)
        nw, nh = int(w * r), int(h * r)
        canvas = Image.new("RGB", (640, 640), (114, 114, 114))
        canvas.paste(car.resize((nw, nh), Image.BILINEAR), ((640 - nw) // 2, (640 - nh) // 2))
        a = (np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1)[None] / 255).astype(np.float16)
        out = det.run(None, {"images": a})[0][0].astype(np.float32)
        j = out[4].argmax()
        cx, cy, bw, bh = out[:4, j]
        x0, y0 = (cx - bw / 2 - (640 - nw) / 2) / r, (cy - bh / 2 - (640 - nh) / 2) / r
        read_crop(car.crop((int(x0), int(y0), int(x0 + bw / r), int(y0 + bh / r))))
    vehicles = len(raw) / (time.perf_counter() - t)
    print(f"{len(crops) / best:.3f} {vehicles:.3f}")


if __name__ == "__main__":
    main()
