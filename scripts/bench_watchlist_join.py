#!/usr/bin/env python3
"""The baseline of benches/benches/watchlist_join.rs: the exact watchlist join in DuckDB.

Loads the watchlist and the reads (CSV, one plate per line; loading is not timed), then times
the equi-join of every read against the watchlist, best of three. Prints reads per second and
the number of matches.
"""
import sys
import time

import duckdb

watchlist, reads = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(f"CREATE TABLE watch AS SELECT * FROM read_csv('{watchlist}', header = true, columns = {{'plate': 'VARCHAR'}})")
con.execute(f"CREATE TABLE reads AS SELECT * FROM read_csv('{reads}', header = true, columns = {{'plate': 'VARCHAR'}})")
n = con.execute("SELECT count(*) FROM reads").fetchone()[0]
best, hits = float("inf"), 0
for _ in range(3):
    t = time.perf_counter()
    hits = con.execute("SELECT count(*) FROM reads JOIN watch USING (plate)").fetchone()[0]
    best = min(best, time.perf_counter() - t)
print(n / best, hits)
