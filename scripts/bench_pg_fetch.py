#!/usr/bin/env python3
"""Fetches 200,000 rows of `detections` with psycopg, as a data team's script would: the driver
side of the PostgreSQL-protocol comparison in benches/README.md ("psql, COPY and drivers").

    bench_pg_fetch.py PORT USER DBNAME binary|text      (the password in PGPASSWORD)
"""
import os
import sys

import psycopg

port, user, db, fmt = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with psycopg.connect(host="127.0.0.1", port=port, user=user, password=os.environ["PGPASSWORD"],
                     dbname=db, autocommit=True) as conn:
    rows = conn.cursor(binary=fmt == "binary").execute("SELECT * FROM detections LIMIT 200000").fetchall()
    # Every row came, and the timestamp as a timezone-aware datetime.
    assert len(rows) == 200000 and rows[0][1].tzinfo is not None, (len(rows), rows[:1])
