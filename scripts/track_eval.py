#!/usr/bin/env python3
"""Scores vigil's tracker against Roboflow's ByteTrack on the same simulated detections.

    python scripts/track_eval.py --vigil target/debug/vigil --work DIR [--frames 300] [--json OUT]

For each noise level (low, medium, high) it writes a MOTChallenge sequence from the city
simulator (`vigil mot-sim`: ground truth, and detections with box noise, misses and false
positives), then tracks the same det.txt with
  - vigil (`vigil track`, ByteTrack-class, Rust), and
  - Roboflow's ByteTrack (`trackers.ByteTrackTracker`, PyPI `trackers`, on `supervision`),
and scores both with `trackers.eval` (a clean-room TrackEval: MOTA and ID switches from CLEAR,
IDF1 from Identity, HOTA). Before it scores anything, the judge must reproduce, within 0.005,
the scores py-motmetrics states for the real tracker output it ships on TUD-Campus and
TUD-Stadtmitte. py-motmetrics 1.4.0 calls `np.asfarray`, which NumPy 2 removed, so
the TrackEval-parity evaluator of `trackers` is the judge here. Frames per second count the
tracking alone (vigil reports its own; Roboflow's loop is timed here).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker
from trackers.eval.evaluate import evaluate_mot_sequence

LEVELS = {
    "low": {"noise_px": 1.5, "miss_rate": 0.02, "false_positives": 0.05},
    "medium": {"noise_px": 4.0, "miss_rate": 0.10, "false_positives": 0.5},
    "high": {"noise_px": 8.0, "miss_rate": 0.25, "false_positives": 2.0},
}


def load_det(path):
    frames = {}
    for line in open(path):
        f = line.strip().split(",")
        if len(f) < 7:
            continue
        frames.setdefault(int(float(f[0])), []).append([float(v) for v in f[2:7]])
    return frames


def roboflow(det_path, out_path, n_frames, fps):
    dets = load_det(det_path)
    tracker = ByteTrackTracker(frame_rate=fps)
    rows = []
    elapsed = 0.0
    for frame in range(1, n_frames + 1):
        boxes = np.array(dets.get(frame, []), dtype=np.float32).reshape(-1, 5)
        xyxy = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1)
        d = sv.Detections(xyxy=xyxy, confidence=boxes[:, 4], class_id=np.zeros(len(boxes), dtype=int))
        t = time.perf_counter()
        out = tracker.update(d)
        elapsed += time.perf_counter() - t
        for (x1, y1, x2, y2), tid, conf in zip(out.xyxy, out.tracker_id, out.confidence if out.confidence is not None else [1.0] * len(out)):
            if tid is None or tid < 0:
                continue
            rows.append(f"{frame},{tid + 1},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{conf:.3f},-1,-1,-1")
    with open(out_path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return n_frames / max(elapsed, 1e-9)


# What py-motmetrics 1.4.0 states for the real tracker output it ships (`data/TUD-*/test.txt`
# against `gt.txt`, IoU threshold 0.5): `motmetrics/tests/test_metrics.py::test_motchallenge_files`.
MOTMETRICS_STATED = {
    "TUD-Campus": {"MOTA": 0.526462, "IDF1": 0.557659},
    "TUD-Stadtmitte": {"MOTA": 0.564014, "IDF1": 0.644619},
}


def check_scorer(work):
    """Scores motmetrics' TUD files with our judge before it judges anything else; returns the
    scores, and fails if any is more than 0.005 from what motmetrics states. motmetrics is
    installed without its dependencies: only its data is read (its code needs NumPy < 2)."""
    import importlib.util

    spec = importlib.util.find_spec("motmetrics")
    if spec is None:
        sys.exit("motmetrics==1.4.0 is not installed (scripts/test installs it): it holds the TUD ground truth")
    data = os.path.join(spec.submodule_search_locations[0], "data")
    out = {}
    for name, stated in MOTMETRICS_STATED.items():
        # MOTChallenge gt: column 7 is "consider", 8 the class, 9 the visibility; motmetrics'
        # files leave class and visibility at -1, which TrackEval's pedestrian filter drops.
        gt = os.path.join(work, f"{name}-gt.txt")
        with open(os.path.join(data, name, "gt.txt")) as src, open(gt, "w") as dst:
            for line in src:
                f = line.strip().split(",")
                if len(f) >= 6:
                    dst.write(",".join(f[:6] + ["1", "1", "1"]) + "\n")
        r = evaluate_mot_sequence(gt, os.path.join(data, name, "test.txt"), metrics=["CLEAR", "Identity"])
        got = {"MOTA": float(r.CLEAR.MOTA), "IDF1": float(r.Identity.IDF1)}
        for metric, want in stated.items():
            if abs(got[metric] - want) > 0.005:
                sys.exit(f"the scorer gives {name} {metric} {got[metric]:.4f}; motmetrics states {want:.4f}")
        out[name] = {"scored": got, "motmetrics": stated}
        print(f"scorer check {name}: MOTA {got['MOTA']:.4f} (motmetrics {stated['MOTA']:.4f}), "
              f"IDF1 {got['IDF1']:.4f} (motmetrics {stated['IDF1']:.4f})")
    return out


def score(gt, tracks):
    r = evaluate_mot_sequence(gt, tracks, metrics=["CLEAR", "HOTA", "Identity"])
    return {"MOTA": float(r.CLEAR.MOTA), "IDF1": float(r.Identity.IDF1), "IDSW": int(r.CLEAR.IDSW), "HOTA": float(r.HOTA.HOTA)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vigil", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--people", type=int, default=15)
    p.add_argument("--json")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    results = {"scorer_check": check_scorer(a.work)}
    for level, knobs in LEVELS.items():
        seq = os.path.join(a.work, level)
        args = [a.vigil, "mot-sim", "--out", seq, "--frames", str(a.frames), "--people", str(a.people)]
        for k, v in knobs.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        subprocess.run(args, check=True, capture_output=True)
        det, gt = os.path.join(seq, "det", "det.txt"), os.path.join(seq, "gt", "gt.txt")
        ours = os.path.join(seq, "vigil.txt")
        run = subprocess.run([a.vigil, "track", "--mot-det", det, "--out", ours], check=True, capture_output=True, text=True)
        m = re.search(r"tracking ([0-9.]+) frames/s", run.stderr)
        vigil_fps = float(m.group(1)) if m else float("nan")
        theirs = os.path.join(seq, "roboflow.txt")
        rf_fps = roboflow(det, theirs, a.frames, 10.0)
        results[level] = {
            "vigil": {**score(gt, ours), "fps": vigil_fps},
            "roboflow_bytetrack": {**score(gt, theirs), "fps": rf_fps},
        }
    print(f"{'noise':8} {'tracker':20} {'MOTA':>7} {'IDF1':>7} {'HOTA':>7} {'IDSW':>6} {'frames/s':>10}")
    for level, r in results.items():
        if level == "scorer_check":
            continue
        for name, s in r.items():
            print(f"{level:8} {name:20} {s['MOTA']:7.3f} {s['IDF1']:7.3f} {s['HOTA']:7.3f} {s['IDSW']:6d} {s['fps']:10.0f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
