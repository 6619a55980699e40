#!/usr/bin/env python3
"""onnxruntime's Python API on a model and a raw float32 input: what a team would otherwise run.

    python scripts/bench_ort.py MODEL INPUT.f32 N C H W

Runs the session (1 intra-op thread, like vigil's detector) N times after a warm-up, five
rounds, and prints the best round's milliseconds per run. benches/benches/cameras.rs compares
vigil's Rust path with it in the same run.
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    model, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    shape = [int(v) for v in sys.argv[4:]]
    x = np.fromfile(path, dtype=np.float32).reshape([-1] + shape)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(5):
        sess.run(None, {name: x})
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            sess.run(None, {name: x})
        best = min(best, (time.perf_counter() - t) / n)
    print(f"{best * 1000:.4f}")


if __name__ == "__main__":
    main()
