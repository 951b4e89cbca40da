"""Print "<bytes> <rows>" for the Parquet output under OUT_DIR.

    outstat.py OUT_DIR [EVENTPIPE_JSON]

With EVENTPIPE_JSON (the stdout of `eventpipe run --output json`), warn on
stderr when it reports rejected rows or a row count other than the files hold.
"""

import json
import os
import sys

import polars as pl


def output_size(out_dir):
    return sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out_dir) for f in fs
    )


def parquet_rows(out_dir):
    pattern = os.path.join(out_dir, "**", "*.parquet")
    return pl.scan_parquet(pattern, hive_partitioning=False).select(pl.len()).collect().item()


def check_eventpipe_report(path, rows):
    try:
        with open(path) as f:
            parts = json.load(f)["partitions"]
    except (OSError, ValueError, KeyError) as e:
        print(f"[bench] warning: cannot read eventpipe JSON report {path}: {e}", file=sys.stderr)
        return
    rejected = sum(p.get("rowsRejected", 0) for p in parts)
    written = sum(p.get("rowsWritten", 0) for p in parts)
    if rejected:
        print(f"[bench] warning: eventpipe rejected {rejected} rows", file=sys.stderr)
    if written != rows:
        print(f"[bench] warning: eventpipe reports {written} rows written, files hold {rows}",
              file=sys.stderr)


def main():
    out_dir = sys.argv[1]
    try:
        rows = parquet_rows(out_dir)
    except Exception as e:  # noqa: BLE001 - report, don't abort the benchmark
        print(f"[bench] warning: cannot count rows under {out_dir}: {e}", file=sys.stderr)
        rows = "?"
    if len(sys.argv) > 2 and rows != "?":
        check_eventpipe_report(sys.argv[2], rows)
    print(output_size(out_dir), rows)


if __name__ == "__main__":
    main()
