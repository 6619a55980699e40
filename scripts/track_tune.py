#!/usr/bin/env python3
"""Chooses vigil's tracker defaults on the tuning split of scripts/track_eval.py, and only there.

    python scripts/track_tune.py --vigil target/release/vigil --work DIR [--json OUT]

The tuning split is walkers seeds 101-106, `vigil mot-sim` seeds 7-9 and TUD-Campus at the three
noise levels (TUD-Stadtmitte and the test seeds are never read). Each candidate setting is scored with MOTA and IDF1
(trackers.eval) in every cell; the chosen setting maximises the worst cell's margin over the
best of Roboflow's ByteTrack, OC-SORT and SORT on the same detections (margins within 0.005 of
the best count as equal), then the mean margin.
Prints the ranking; the winner becomes TrackerConfig::default() by hand, with this run cited.
"""
import argparse
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import track_eval as te  # noqa: E402
from trackers.eval.evaluate import evaluate_mot_sequence  # noqa: E402

# Each dimension holds the current default (TrackerConfig::default()) and its neighbours, so a
# run of the whole grid re-checks the defaults against what is around them.
GRID = {
    "high-score": [0.1, 0.5],  # 0.1 = low-score: one association stage
    "birth-score": [0.4, 0.5],
    "match-iou": [0.1, 0.15, 0.2],
    "match-buffer": [0.1, 0.2],
    "max-lost-s": [1.5, 3.0],
    "confirm-frames": [2, 3],
    "adapt-noise": [0.0, 0.01],  # the default; 0.005 to 0.05 tie (benches/README.md)
    "lost-decay-s": [0.0, 4.0],  # off and the default; 8 ties (benches/README.md)
    "motion-gate": [0.0, 16.27],  # off and the default; 13.8 and 20 tie, 12 falls (benches/README.md)
}


TIE = 0.005


def quick(gt, tracks):
    r = evaluate_mot_sequence(gt, tracks, metrics=["CLEAR", "Identity"])
    return float(r.CLEAR.MOTA), float(r.Identity.IDF1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vigil", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--json")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--grid", help="JSON object replacing GRID (for a narrower search)")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    runs = []  # (cell, gt, det, frames, fps, boxes)
    for source, name, gt_path, frames, fps, size in te.sequences("tune", ["tud", "walkers", "mot-sim"], a.work, a.vigil, False):
        gt = te.load_gt(gt_path)
        for li, level in enumerate(te.LEVELS):
            det = os.path.join(a.work, f"{name}-{level}-det.txt")
            with open(det, "w") as f:
                f.write("\n".join(te.degrade(gt, frames, size, level, (te.hash_name(name) * 31 + li) % 2**32)) + "\n")
            runs.append((f"{source}/{level}", gt_path, det, frames, fps, len(gt)))

    def cells(score_run):
        by = {}
        for cell, gt, det, frames, fps, n in runs:
            m, i = score_run(gt, det, frames, fps)
            by.setdefault(cell, []).append((n, m, i))
        return {c: (sum(n * m for n, m, _ in v) / sum(n for n, _, _ in v),
                    sum(n * i for n, _, i in v) / sum(n for n, _, _ in v)) for c, v in by.items()}

    # The baselines depend only on the detections: cached per detector model.
    key = json.dumps([te.LEVELS, te.SPLITS["tune"], te.DETECTOR_MODEL], sort_keys=True)
    cache = os.path.join(a.work, f"baselines-{te.hash_name(key)}.json")
    if os.path.exists(cache):
        baselines = {k: {c: tuple(v) for c, v in b.items()} for k, b in json.load(open(cache)).items()}
    else:
        baselines = {}
        for kind in ("bytetrack", "ocsort", "sort"):
            def run_py(gt, det, frames, fps, kind=kind):
                out = det.replace("-det.txt", f"-{kind}.txt")
                te.python_tracker(kind, det, out, frames, fps)
                return quick(gt, out)
            baselines[kind] = cells(run_py)
        json.dump(baselines, open(cache, "w"))
    best = {c: (max(b[c][0] for b in baselines.values()), max(b[c][1] for b in baselines.values()))
            for c in baselines["sort"]}
    ranking = []
    grid = json.loads(a.grid) if a.grid else GRID
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        args = [f"--{k}={v}" for k, v in zip(keys, values)]

        def run_vigil(gt, det, frames, fps, args=args):
            out = det.replace("-det.txt", "-vigil.txt")
            te.vigil_tracker(a.vigil, args, det, out, fps)
            return quick(gt, out)
        got = cells(run_vigil)
        margins = [got[c][k] - best[c][k] for c in got for k in (0, 1)]
        ranking.append((min(margins), sum(margins) / len(margins), args, got))
        print(f"{min(margins):+.4f} {sum(margins) / len(margins):+.4f} {' '.join(args)}", flush=True)
    # Worst-cell margins within TIE of the best are a tie (five tuning sequences cannot tell
    # them apart), and the mean margin decides. A new setting that moves neither by more than
    # TIE over what it would replace is not adopted (read by hand from the ranking).
    top = max(r[0] for r in ranking)
    ranking.sort(key=lambda r: (r[0] >= top - TIE, r[1], r[0]), reverse=True)
    print("\nbest of ByteTrack, OC-SORT, SORT per cell (MOTA, IDF1):")
    for c, (m, i) in best.items():
        print(f"  {c:16} {m:.3f} {i:.3f}")
    print(f"\ntop {a.top} (worst-cell margin, mean margin, settings):")
    for worst, mean, args, got in ranking[: a.top]:
        print(f"  {worst:+.4f} {mean:+.4f} {' '.join(args)}")
        print("     " + "  ".join(f"{c} {m:.3f}/{i:.3f}" for c, (m, i) in got.items()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"best_baseline": best, "ranking": [
                {"worst": w, "mean": m, "args": ar, "cells": g} for w, m, ar, g in ranking]}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
