#!/usr/bin/env python3
"""Roboflow's ByteTrack, OC-SORT or SORT (PyPI `trackers`) on a MOTChallenge det.txt: frames
per second.

    python scripts/bench_tracker.py DET.txt FRAMES [bytetrack|ocsort|sort]

Tracks the detections three times and prints the best frames per second of the tracking loop
alone (building `supervision.Detections` per frame included, as a user's loop would).
benches/benches/tracking.rs compares vigil's tracker with it on the same file in the same run.
"""
import sys
import time

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker, OCSORTTracker, SORTTracker

TRACKERS = {"bytetrack": ByteTrackTracker, "ocsort": OCSORTTracker, "sort": SORTTracker}


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    make = TRACKERS[sys.argv[3] if len(sys.argv) > 3 else "bytetrack"]
    frames = {}
    for line in open(path):
        f = line.split(",")
        frames.setdefault(int(float(f[0])), []).append([float(v) for v in f[2:7]])
    inputs = []
    for k in range(1, n + 1):
        b = np.array(frames.get(k, []), dtype=np.float32).reshape(-1, 5)
        inputs.append((np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1), b[:, 4]))
    best = 0.0
    for _ in range(3):
        tracker = make(frame_rate=10.0)
        t = time.perf_counter()
        for xyxy, conf in inputs:
            tracker.update(sv.Detections(xyxy=xyxy, confidence=conf, class_id=np.zeros(len(conf), dtype=int)))
        best = max(best, n / (time.perf_counter() - t))
    print(f"{best:.1f}")


if __name__ == "__main__":
    main()
