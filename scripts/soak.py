#!/usr/bin/env python3
"""Memory over a long run: RSS of `vigil demo --duration 0 --fast` sampled per simulated minute.

    scripts/soak.py --vigil target/release/vigil --hours 3 [--out DIR] [--every-min 10]

The demo city runs until stopped; the script reads the simulated time from the newest
`detections` partition, samples the process's resident memory (VmRSS) as simulated time passes,
stops it with SIGTERM once `--hours` have been simulated, and prints RSS per simulated time with
the spread after warm-up (the first simulated hour: retention's in-memory horizon and the
allocator settle). Retention is set to one hour so that deletion runs throughout.
"""

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


START = datetime.datetime(2026, 6, 14, 20, 0, 0)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def sim_minutes(out):
    """Simulated minutes reached: the newest detections partition's start, from the clock's start."""
    d = os.path.join(out, "detections")
    if not os.path.isdir(d):
        return 0
    stamps = [m.group(1) for n in os.listdir(d) if (m := re.match(r"detections-(\d{8}T\d{6}Z)-", n))]
    if not stamps:
        return 0
    newest = datetime.datetime.strptime(max(stamps), "%Y%m%dT%H%M%SZ")
    return int((newest - START).total_seconds() // 60)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vigil", default="target/release/vigil")
    p.add_argument("--hours", type=float, default=3.0)
    p.add_argument("--every-min", type=int, default=10)
    p.add_argument("--out")
    a = p.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="vigil-soak-")
    cfg = os.path.join(out, "soak.toml")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "pipelines", "src", "default_city.toml")) as f:
        city = f.read()
    city = re.sub(r"(?m)^days = 7.*$", "hours = 1", city)
    os.makedirs(out, exist_ok=True)
    with open(cfg, "w") as f:
        f.write(city)
    log = open(os.path.join(out, "vigil.log"), "w")
    proc = subprocess.Popen(
        [a.vigil, "run", "--config", cfg, "--fast", "--quiet", "--out", os.path.join(out, "city")],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    samples = []
    next_at = 0
    t0 = time.time()
    try:
        while proc.poll() is None:
            m = sim_minutes(os.path.join(out, "city"))
            if m >= next_at:
                r = rss_mb(proc.pid)
                samples.append((m, r, time.time() - t0))
                print(f"sim {m:4d} min  rss {r:8.1f} MB  wall {time.time() - t0:7.1f} s", flush=True)
                next_at = m + a.every_min
            if m >= a.hours * 60:
                break
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait()
    after = [r for m, r, _ in samples if m >= 60]
    if after:
        lo, hi = min(after), max(after)
        print(f"after warm-up (>= 60 simulated min): min {lo:.1f} MB, max {hi:.1f} MB, spread {100 * (hi - lo) / lo:.1f}%")
    deletions = sum(1 for line in open(os.path.join(out, "vigil.log")) if "vigil::retention" in line and "deleted" in line)
    print(f"exit code {code}; retention deleted {deletions} files while running; output in {out}")
    sys.exit(0 if code == 0 else 1)


if __name__ == "__main__":
    main()
