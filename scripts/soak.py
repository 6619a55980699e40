#!/usr/bin/env python3
"""Memory over a long run: RSS of `vigil demo --duration 0 --fast` sampled per simulated minute.

    scripts/soak.py --vigil target/release/vigil --hours 3 [--out DIR] [--every-min 10]

The demo city runs until stopped; the script reads the simulated time from the newest
`detections` partition, samples the process's resident memory (VmRSS) as simulated time passes,
stops it with SIGTERM once `--hours` have been simulated, and prints RSS per simulated time with
the spread after warm-up (the first simulated hour: retention's in-memory horizon and the
allocator settle). Retention is set to one hour so that deletion runs throughout.

`--serve` also opens psql and HTTP (ports 6877 and 8087) as a control room would: a page's
server-sent events stay open throughout, and at every sample psql runs an analyst's query over
the retained window and the board is read over HTTP (the answers' sizes are printed), and
`/metrics` gives the allocator's live and resident bytes and the events kept in memory.
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
    # Files sit in Hive partitions (date=…/hour=…/), and compaction merges closed hours.
    stamps = [
        m.group(1)
        for _, _, names in os.walk(d)
        for n in names
        if (m := re.match(r"detections-(\d{8}T\d{6}Z)-", n))
    ]
    if not stamps:
        return 0
    newest = datetime.datetime.strptime(max(stamps), "%Y%m%dT%H%M%SZ")
    return int((newest - START).total_seconds() // 60)


class Clients:
    """A control room's clients: the page's event stream held open, psql and the board polled."""

    def __init__(self, out, env):
        self.env, self.jar = env, os.path.join(out, "cookies")
        self.events = None
        self.sse_log = open(os.path.join(out, "board-events.txt"), "wb")

    def _login(self):
        body = '{"user": "vigil", "password": "%s"}' % self.env["VIGIL_PG_PASSWORD"]
        r = subprocess.run(["curl", "-sf", "-c", self.jar, "-X", "POST", "127.0.0.1:8087/api/v1/login", "-d", body],
                           capture_output=True)
        return r.returncode == 0

    def sample(self):
        if self.events is None or self.events.poll() is not None:
            if not self._login():
                return "  (HTTP not up yet)"
            self.events = subprocess.Popen(["curl", "-sN", "-b", self.jar, "127.0.0.1:8087/api/v1/board/events"],
                                           stdout=self.sse_log, stderr=subprocess.DEVNULL)
        q = "SELECT zone, count(*), avg(density) FROM zone_density GROUP BY zone ORDER BY zone"
        psql = subprocess.run(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", "6877", "-U", "vigil", "-d", "vigil",
                               "-c", q], capture_output=True, env=self.env, timeout=60)
        board = subprocess.run(["curl", "-sf", "-b", self.jar, "127.0.0.1:8087/api/v1/board"], capture_output=True,
                               timeout=60)
        rows = len(psql.stdout.splitlines()) if psql.returncode == 0 else f"error {psql.stderr[:80]!r}"
        said = f"  psql rows {rows}, board {len(board.stdout)} B, events {self.sse_log.tell()} B"
        metrics = subprocess.run(["curl", "-sf", "-b", self.jar, "127.0.0.1:8087/metrics"], capture_output=True,
                                 timeout=60)
        gauges = dict(line.split(" ", 1) for line in metrics.stdout.decode().splitlines()
                      if line.startswith(("vigil_heap_", "vigil_memory_retained_bytes")))
        # The allocator's live bytes against what it keeps resident: growth in the first is a
        # structure that grows; in the second alone, the allocator's.
        for name, short in [("vigil_heap_allocated_bytes", "heap"), ("vigil_heap_resident_bytes", "jemalloc rss"),
                            ("vigil_memory_retained_bytes", "kept events")]:
            if name in gauges:
                said += f", {short} {int(gauges[name]) / 2**20:.1f} MB"
        return said

    def close(self):
        if self.events and self.events.poll() is None:
            self.events.terminate()
            self.events.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vigil", default="target/release/vigil")
    p.add_argument("--hours", type=float, default=3.0)
    p.add_argument("--every-min", type=int, default=10)
    p.add_argument("--out")
    p.add_argument("--serve", action="store_true", help="psql and HTTP clients while it runs")
    p.add_argument("--set", action="append", default=[], metavar="TOML",
                   help="a line put in the configuration's [hits] table, such as 'lookback = \"10m\"'")
    a = p.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="vigil-soak-")
    cfg = os.path.join(out, "soak.toml")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "pipelines", "src", "default_city.toml")) as f:
        city = f.read()
    city = re.sub(r"(?m)^days = 7.*$", "hours = 1", city)
    # The simulator's truth is one file per run, which retention does not trim: a day of it is GBs.
    city = re.sub(r"(?m)^ground_truth = true", "ground_truth = false", city)
    if a.set:
        city += "\n[hits]\n" + "\n".join(a.set) + "\n"
    os.makedirs(out, exist_ok=True)
    with open(cfg, "w") as f:
        f.write(city)
    log = open(os.path.join(out, "vigil.log"), "w")
    args = [a.vigil, "run", "--config", cfg, "--fast", "--quiet", "--out", os.path.join(out, "city")]
    env = dict(os.environ)
    if a.serve:
        args += ["--pg-listen", "127.0.0.1:6877", "--http-listen", "127.0.0.1:8087"]
        env["VIGIL_PG_PASSWORD"] = env["PGPASSWORD"] = "soak-password-1"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
    clients = Clients(out, env) if a.serve else None
    samples = []
    next_at = 0
    t0 = time.time()
    try:
        while proc.poll() is None:
            m = sim_minutes(os.path.join(out, "city"))
            if m >= next_at:
                r = rss_mb(proc.pid)
                samples.append((m, r, time.time() - t0))
                said = clients.sample() if clients else ""
                print(f"sim {m:4d} min  rss {r:8.1f} MB  wall {time.time() - t0:7.1f} s{said}", flush=True)
                next_at = m + a.every_min
            if m >= a.hours * 60:
                break
            time.sleep(1)
    finally:
        if clients:
            clients.close()
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
