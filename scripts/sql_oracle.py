#!/usr/bin/env python3
"""The batch oracle for vigil's SQL rules: DuckDB over the same Parquet events.

Usage: sql_oracle.py CORPUS.toml EVENTS_DIR REPLAY_OUT_DIR

For each rule of the corpus, runs the rule's `duckdb` query over the recorded events (without
the rows `vigil replay` found late) and compares the result with `REPLAY_OUT_DIR/<rule>.parquet`
as a multiset of rows, column by column in order. Timestamps compare as epoch milliseconds and
numbers with a relative tolerance of 1e-6. On a mismatch it prints the rule and the first
differing rows from both sides; it exits 1 if any rule differs or if a rule's result is empty
on both sides (an empty result proves nothing), 0 otherwise.
"""

import datetime
import decimal
import math
import os
import sys
import tomllib

import duckdb
import pyarrow.parquet as pq

TOLERANCE = 1e-6


def norm(v):
    """A comparable form: ('n', float) for numbers and times (ms), ('s', str), ('z',) for null."""
    if v is None:
        return ("z",)
    if isinstance(v, bool):
        return ("n", float(v))
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return ("n", round(v.timestamp() * 1000.0, 3))
    if isinstance(v, (int, float, decimal.Decimal)):
        return ("n", float(v))
    return ("s", str(v))


def coarse(t):
    if t[0] == "n" and t[1] != 0 and math.isfinite(t[1]):
        return ("n", float("%.4g" % t[1]))
    return t


def key(row):
    return tuple(coarse(v) for v in row), row


def same(a, b):
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x[0] != y[0]:
            return False
        if x[0] == "n":
            if not math.isclose(x[1], y[1], rel_tol=TOLERANCE, abs_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


def show(row):
    return "(" + ", ".join("NULL" if v[0] == "z" else repr(v[1]) for v in row) + ")"


def main():
    corpus_path, events, out = sys.argv[1:4]
    with open(corpus_path, "rb") as f:
        corpus = tomllib.load(f)["rule"]
    con = duckdb.connect()
    late = os.path.join(out, "late_events.parquet")
    con.execute(f"CREATE VIEW late AS SELECT stream, event_id FROM read_parquet('{late}')")
    for stream in ["detections", "plate_reads", "zone_density"]:
        files = os.path.join(events, stream, "**", "*.parquet")
        con.execute(
            f"CREATE VIEW {stream} AS SELECT * FROM read_parquet('{files}') "
            f"WHERE event_id NOT IN (SELECT event_id FROM late WHERE stream = '{stream}')"
        )
    for table, extra in [("watchlist", ""), ("zones", " EXCLUDE (valid_from)")]:
        # One file per run (epoch) that wrote into the directory. The watchlist's valid_from and
        # expires_at are its own columns; zones get valid_from from the writer.
        path = os.path.join(events, "reference", f"{table}-e*.parquet")
        con.execute(f"CREATE VIEW {table} AS SELECT *{extra} FROM read_parquet('{path}')")

    failures = 0
    for rule in corpus:
        name = rule["name"]
        expected = [tuple(norm(v) for v in r) for r in con.execute(rule["duckdb"]).fetchall()]
        table = pq.read_table(os.path.join(out, f"{name}.parquet"))
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        actual = [tuple(norm(c[i]) for c in columns) for i in range(table.num_rows)]
        expected.sort(key=key)
        actual.sort(key=key)
        ok = len(expected) == len(actual) and all(same(a, b) for a, b in zip(actual, expected))
        if ok and not expected:
            print(f"EMPTY {name}: both sides returned no rows; the rule tests nothing on this data")
            failures += 1
            continue
        if ok:
            print(f"ok    {name}: {len(actual)} rows")
            continue
        failures += 1
        first = next(
            (i for i, (a, b) in enumerate(zip(actual, expected)) if not same(a, b)),
            min(len(actual), len(expected)),
        )
        print(f"FAIL  {name}: vigil {len(actual)} rows, DuckDB {len(expected)} rows")
        print(f"  rule:   {' '.join(rule['vigil'].split())}")
        print(f"  duckdb: {' '.join(rule['duckdb'].split())}")
        print(f"  first difference at sorted row {first}:")
        for label, rows in (("vigil ", actual), ("duckdb", expected)):
            for r in rows[first : first + 3]:
                print(f"    {label} {show(r)}")
    print(f"{len(corpus) - failures} of {len(corpus)} rules agree with DuckDB")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
