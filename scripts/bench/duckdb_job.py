"""DuckDB version of the two benchmark jobs (SET threads=2)."""

import duckdb

from common import COLUMNS, parse_args

TYPES = {"int64": "BIGINT", "string": "VARCHAR"}

CONVERT = """
    SELECT id, name, value, to_timestamp("timestamp") AS "timestamp" FROM src
"""

# Latest value per (id, name); ties on timestamp go to the greatest value.
AGGREGATE = """
    SELECT id, map(list(name), list(value)) AS settings
    FROM (
        SELECT id, name, arg_max(value, ("timestamp", value)) AS value
        FROM src
        GROUP BY id, name
    )
    GROUP BY id
"""


def main():
    job, files, out = parse_args("duckdb")
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET enable_progress_bar = false")
    # Row order is irrelevant here; keeping it doubles the conversion's memory.
    con.execute("SET preserve_insertion_order = false")
    columns = {c: TYPES[t] for c, t in COLUMNS.items()}
    con.read_csv(files, header=True, columns=columns).create_view("src")
    query = {"convert": CONVERT, "aggregate": AGGREGATE}[job]
    target = out.replace("'", "''")
    con.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION zstd)")


if __name__ == "__main__":
    main()
