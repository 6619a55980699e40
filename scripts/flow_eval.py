#!/usr/bin/env python3
"""Gate counts on real pedestrians: vigil's tracker and flow logic against Roboflow's recipe
(ByteTrack + supervision's LineZone), scored on the people the ground truth says crossed.

    python scripts/flow_eval.py --vigil target/debug/vigil --work DIR [--split test|tune]
        [--sources tud,walkers,mot-sim] [--levels low,medium,high] [--margins 0.25] [--json OUT]

The sequences and detector models are scripts/track_eval.py's (TUD's real pedestrians, the
walkers generator and `vigil mot-sim`, each at three noise levels). Each sequence gets two
gate lines across the whole frame: upright through its middle and level at 60% of its height.

- Truth: the ground-truth people's foot points (the middle of each box's bottom edge). A person
  crosses a line when their foot point changes side between two of their annotated frames and
  the change happens within the line's length. Written here, apart from vigil's code.
- vigil: `vigil track` on the detections, then `vigil count` (the flow operator's logic: a
  foot point must be `--margin` metres clear of the line on either side for a change of side to
  count, as the live operator counts on the ground; here each box's pixels across the line are
  converted to metres at its own scale, a person being 1.7 m tall).
- Roboflow: `trackers` 2.6.1's ByteTrack on the same detections, counted by supervision's
  `LineZone` with its default anchors (all four corners must cross) and with the foot point
  (`BOTTOM_CENTER`), as a user of those libraries would count.

A cell's error is |in − true in| + |out − true out| summed over its lines and sequences; the
table also gives it as a share of the true crossings. The margin is chosen on `--split tune`
(the rule of track_tune.py: the worst cell's error over the best peer's, then the mean error)
and reported on `--split test`.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import supervision as sv

sys.path.insert(0, os.path.dirname(__file__))
import track_eval as te  # noqa: E402


def lines_for(size):
    w, h = size
    return [(w / 2, 0.0, w / 2, float(h)), (0.0, 0.6 * h, float(w), 0.6 * h)]


def true_counts(gt, line):
    """(in, out) crossings of the ground truth's people over `line`."""
    x1, y1, x2, y2 = line
    d = np.array([x2 - x1, y2 - y1])
    length = np.hypot(*d)
    # `in` is the left of the line drawn from its first point to its second, as seen on the
    # image (y downwards): the side of (mid + (dy, -dx)).
    in_sign = np.sign(d[0] * (-d[0]) - d[1] * d[1])
    n_in = n_out = 0
    rows = gt[gt[:, 6] != 0] if gt.shape[1] > 6 else gt
    for pid in np.unique(rows[:, 1]):
        r = rows[rows[:, 1] == pid]
        r = r[np.argsort(r[:, 0])]
        fx, fy = r[:, 2] + r[:, 4] / 2, r[:, 3] + r[:, 5]
        cross = d[0] * (fy - y1) - d[1] * (fx - x1)
        along = (d[0] * (fx - x1) + d[1] * (fy - y1)) / length
        side = np.sign(cross)
        last = 0.0
        for i in range(len(r)):
            if side[i] == 0:
                continue
            if last != 0 and side[i] != last:
                # Where the foot point's path meets the line, along it.
                j = i - 1
                while side[j] == 0:
                    j -= 1
                t = abs(cross[j]) / (abs(cross[j]) + abs(cross[i]))
                at = along[j] + t * (along[i] - along[j])
                if 0 <= at <= length:
                    if side[i] == in_sign:
                        n_in += 1
                    else:
                        n_out += 1
            last = side[i]
    return n_in, n_out


def vigil_counts(vigil, tracks_path, lines, margin, fps):
    args = [vigil, "count", "--mot-tracks", tracks_path, "--margin", str(margin), "--fps", str(fps)]
    for ln in lines:
        args += ["--line", ",".join(f"{v:.2f}" for v in ln)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip().splitlines()[1:]
    return [tuple(int(v) for v in row.split("\t")[1:]) for row in out]


def linezone_counts(tracks_path, frames, lines, anchors):
    zones = [sv.LineZone(start=sv.Point(a, b), end=sv.Point(c, d), **anchors) for a, b, c, d in lines]
    by_frame = {}
    for row in open(tracks_path):
        f = row.strip().split(",")
        if len(f) >= 6:
            by_frame.setdefault(int(float(f[0])), []).append([float(v) for v in f[1:6]])
    for frame in range(1, frames + 1):
        b = np.array(by_frame.get(frame, []), dtype=float).reshape(-1, 5)
        xyxy = np.stack([b[:, 1], b[:, 2], b[:, 1] + b[:, 3], b[:, 2] + b[:, 4]], axis=1)
        det = sv.Detections(xyxy=xyxy, tracker_id=b[:, 0].astype(int), class_id=np.zeros(len(b), dtype=int))
        for z in zones:
            z.trigger(det)
    return [(z.in_count, z.out_count) for z in zones]


def error(est, truth):
    return sum(abs(e[0] - t[0]) + abs(e[1] - t[1]) for e, t in zip(est, truth))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vigil", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--split", choices=te.SPLITS, default="test")
    p.add_argument("--sources", default="tud,walkers,mot-sim")
    p.add_argument("--levels", default="low,medium,high")
    p.add_argument("--margins", default="0.25", help="vigil's margins to score, metres, comma-separated")
    p.add_argument("--json")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    margins = [float(m) for m in a.margins.split(",")]
    levels = a.levels.split(",")
    peers = {"linezone": {}, "linezone-foot": {"triggering_anchors": [sv.Position.BOTTOM_CENTER]}}
    cells = {}  # (source, level) -> {"truth": n, method: error}
    seqs = te.sequences(a.split, a.sources.split(","), a.work, a.vigil, False)
    for source, name, gt_path, frames, fps, size in seqs:
        gt = te.load_gt(gt_path)
        lines = lines_for(size)
        truth = [true_counts(gt, ln) for ln in lines]
        for li, level in enumerate(levels):
            seed = (te.hash_name(name) * 31 + li) % (2**32)  # track_eval.py's detections
            det = os.path.join(a.work, f"{name}-{level}-det.txt")
            with open(det, "w") as f:
                f.write("\n".join(te.degrade(gt, frames, size, level, seed)) + "\n")
            cell = cells.setdefault((source, level), {"truth": 0})
            cell["truth"] += sum(i + o for i, o in truth)
            vt = os.path.join(a.work, f"{name}-{level}-vigil.txt")
            te.vigil_tracker(a.vigil, [], det, vt, fps)
            for m in margins:
                key = f"vigil m={m:g}"
                cell[key] = cell.get(key, 0) + error(vigil_counts(a.vigil, vt, lines, m, fps), truth)
            bt = os.path.join(a.work, f"{name}-{level}-bytetrack.txt")
            te.python_tracker("bytetrack", det, bt, frames, fps)
            for peer, anchors in peers.items():
                cell[peer] = cell.get(peer, 0) + error(linezone_counts(bt, frames, lines, anchors), truth)
        print(f"{name}: true crossings {truth}", file=sys.stderr)
    methods = [f"vigil m={m:g}" for m in margins] + list(peers)
    print("| source / noise | true crossings | " + " | ".join(methods) + " |")
    print("|---" * (2 + len(methods)) + "|")
    for (source, level), c in cells.items():
        t = max(c["truth"], 1)
        print(f"| {source}/{level} | {c['truth']} | "
              + " | ".join(f"{c[k]} ({c[k] / t:.0%})" for k in methods) + " |")
    worst = {k: max(c[k] / max(c["truth"], 1) - min(c[p] for p in peers) / max(c["truth"], 1) for c in cells.values())
             for k in methods if k.startswith("vigil")}
    mean = {k: float(np.mean([c[k] / max(c["truth"], 1) for c in cells.values()])) for k in methods}
    for k in worst:
        print(f"{k}: worst cell's error minus the best peer's {worst[k]:+.3f}; mean error {mean[k]:.3f}")
    for k in peers:
        print(f"{k}: mean error {mean[k]:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{s}/{lv}": c for (s, lv), c in cells.items()}, f, indent=1)


if __name__ == "__main__":
    main()
