"""Summarise a generated partition: files, sizes, rows and distinct counts.

    verify_data.py SOURCE_ROOT

Reads the CSVs back with DuckDB, independently of the generator.
"""

import glob
import os
import sys

import duckdb


def main():
    root = sys.argv[1]
    files = sorted(glob.glob(os.path.join(root, "**", "*.csv"), recursive=True))
    if not files:
        sys.exit(f"no CSV files under {root}")
    total = 0
    for f in files:
        size = os.path.getsize(f)
        total += size
        print(f"  {os.path.relpath(f, root)}  {size / 1e6:8.1f} MB")
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET enable_progress_bar = false")
    (rows, ids, names, values, t_min, t_max, top_user, top_events) = con.execute(
        """
        WITH src AS (SELECT * FROM read_csv(?, header = true)),
             per_user AS (SELECT id, count(*) AS n FROM src GROUP BY id)
        SELECT (SELECT count(*) FROM src),
               (SELECT count(*) FROM per_user),
               (SELECT count(DISTINCT name) FROM src),
               (SELECT count(DISTINCT value) FROM src),
               (SELECT CAST(to_timestamp(min("timestamp")) AS VARCHAR) FROM src),
               (SELECT CAST(to_timestamp(max("timestamp")) AS VARCHAR) FROM src),
               (SELECT arg_max(id, n) FROM per_user),
               (SELECT max(n) FROM per_user)
        """,
        [files],
    ).fetchone()
    print(f"  total {total / 1e6:.1f} MB in {len(files)} files, {rows} rows")
    print(f"  distinct ids {ids}, names {names}, values {values}; busiest user {top_user}"
          f" has {top_events} events")
    print(f"  timestamps {t_min} .. {t_max}")


if __name__ == "__main__":
    main()
