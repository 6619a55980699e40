#!/usr/bin/env python3
"""A pedestrian-scene generator written apart from vigil's simulator, for tracker evaluation.

    python scripts/walkers.py --out DIR --seed N [--frames 600] [--fps 10]

writes DIR/gt/gt.txt (MOTChallenge: frame, id, left, top, width, height, 1, 1, visibility) and
DIR/seqinfo.ini. It shares no code or motion model with `vigil mot-sim`: people come in and go
out at every edge of the image, walk at their own pace under a perspective camera (people
further away are smaller and slower in pixels), turn, stop to talk or wait, walk in groups side
by side, and cross each other's paths in both directions. Visibility is the share of a person's
box not covered by the boxes of people nearer the camera (lower feet), so detector models can
miss and down-score occluded people as real detectors do.
"""
import argparse
import math
import os

import numpy as np

W, H = 1280, 720


def height_at(y):
    """Person height in pixels for a foot point at image row y (perspective: 60 px at the top
    of the walkable area, 260 px at the bottom)."""
    return 60.0 + 200.0 * max(0.0, min(1.0, (y - 150.0) / (H - 150.0)))


class Person:
    def __init__(self, pid, x, y, heading, speed, rng):
        self.id, self.x, self.y, self.heading, self.speed = pid, x, y, heading, speed
        self.rng = rng
        self.stop_left = 0.0
        self.turn_in = rng.exponential(6.0)
        self.stop_in = rng.exponential(15.0)
        self.group = None
        self.offset = (0.0, 0.0)

    def box(self):
        h = height_at(self.y)
        w = 0.41 * h
        return [self.x - w / 2, self.y - h, w, h]


def simulate(seed, frames, fps):
    rng = np.random.default_rng(seed)
    dt = 1.0 / fps
    people, next_id, rows = [], 1, []
    arrivals_per_s = 0.9
    for f in range(1, frames + 1):
        # Arrivals at the edges: alone, or a group of 2 to 4 side by side.
        for _ in range(rng.poisson(arrivals_per_s * dt)):
            edge = rng.integers(4)
            if edge == 0:
                x, y, heading = 0.0, rng.uniform(200, H), rng.uniform(-0.6, 0.6)
            elif edge == 1:
                x, y, heading = float(W), rng.uniform(200, H), math.pi + rng.uniform(-0.6, 0.6)
            elif edge == 2:
                x, y, heading = rng.uniform(0, W), 160.0, math.pi / 2 + rng.uniform(-0.7, 0.7)
            else:
                x, y, heading = rng.uniform(0, W), float(H) + 40, -math.pi / 2 + rng.uniform(-0.7, 0.7)
            speed = rng.normal(1.3, 0.25)  # metres per second
            n = 1 if rng.random() < 0.65 else int(rng.integers(2, 5))
            leader = None
            for k in range(n):
                p = Person(next_id, x, y, heading, max(0.5, speed), rng)
                next_id += 1
                if leader is None:
                    leader = p
                else:
                    p.group = leader
                    side = (k + 1) // 2 * (1 if k % 2 else -1)
                    p.offset = (0.55 * side, rng.normal(0, 0.15))  # metres beside and behind
                people.append(p)
        for p in people:
            if p.group is not None and p.group in people:
                # Group members keep their place beside the leader (in metres, scaled by depth).
                g = p.group
                m = height_at(g.y) / 1.7  # pixels per metre at the leader's depth
                nx = g.x - math.sin(g.heading) * p.offset[0] * m + math.cos(g.heading) * p.offset[1] * m
                ny = g.y + math.cos(g.heading) * p.offset[0] * m * 0.5 + math.sin(g.heading) * p.offset[1] * m * 0.5
                p.x += (nx - p.x) * 0.5
                p.y += (ny - p.y) * 0.5
                p.heading = g.heading
                continue
            p.group = None
            if p.stop_left > 0:
                p.stop_left -= dt
                continue
            p.stop_in -= dt
            if p.stop_in <= 0:
                p.stop_left = rng.uniform(1.0, 6.0)
                p.stop_in = rng.exponential(15.0)
                continue
            p.turn_in -= dt
            if p.turn_in <= 0:
                p.heading += rng.choice([-1, 1]) * rng.uniform(0.5, 1.6)
                p.turn_in = rng.exponential(6.0)
            m = height_at(p.y) / 1.7
            p.x += math.cos(p.heading) * p.speed * m * dt
            # Depth foreshortens vertical motion on the ground.
            p.y += math.sin(p.heading) * p.speed * m * dt * 0.5
        people = [p for p in people if -80 < p.x < W + 80 and 140 < p.y < H + 300]
        boxes = [(p, p.box()) for p in people]
        for p, b in boxes:
            vis = visibility(b, [q for q, _ in boxes if q.y > p.y], boxes)
            x0, y0 = max(0.0, b[0]), max(0.0, b[1])
            x1, y1 = min(float(W), b[0] + b[2]), min(float(H), b[1] + b[3])
            # Only people mostly inside the image are ground truth.
            if (x1 - x0) * (y1 - y0) < 0.6 * b[2] * b[3]:
                continue
            rows.append(f"{f},{p.id},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},1,1,{vis:.3f}")
    return rows


def visibility(b, nearer, boxes):
    """Share of box b not covered by the boxes of nearer people (sampled on a 10 × 10 grid)."""
    if not nearer:
        return 1.0
    nb = [q.box() for q in nearer]
    xs = b[0] + (np.arange(10) + 0.5) / 10 * b[2]
    ys = b[1] + (np.arange(10) + 0.5) / 10 * b[3]
    gx, gy = np.meshgrid(xs, ys)
    covered = np.zeros_like(gx, dtype=bool)
    for o in nb:
        covered |= (gx >= o[0]) & (gx <= o[0] + o[2]) & (gy >= o[1]) & (gy <= o[1] + o[3])
    return float(1.0 - covered.mean())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--fps", type=float, default=10.0)
    a = p.parse_args()
    rows = simulate(a.seed, a.frames, a.fps)
    os.makedirs(os.path.join(a.out, "gt"), exist_ok=True)
    with open(os.path.join(a.out, "gt", "gt.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")
    with open(os.path.join(a.out, "seqinfo.ini"), "w") as f:
        f.write(f"[Sequence]\nname=walkers-{a.seed}\nframeRate={a.fps:g}\nseqLength={a.frames}\n"
                f"imWidth={W}\nimHeight={H}\n")


if __name__ == "__main__":
    main()
