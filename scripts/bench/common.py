"""What the competitor job scripts share: command line, input files, output path."""

import argparse
import glob
import os

JOBS = ("convert", "aggregate")
# Column order and types of the input CSVs (all files have a header row).
COLUMNS = {"id": "int64", "name": "string", "value": "string", "timestamp": "int64"}


def parse_args(engine):
    ap = argparse.ArgumentParser(description=f"{engine} benchmark job")
    ap.add_argument("job", choices=JOBS)
    ap.add_argument("source_root", help="directory holding year=/month=/day=/*.csv")
    ap.add_argument("out_dir", help="existing directory that receives part-0.parquet")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.source_root, "**", "*.csv"), recursive=True))
    if not files:
        ap.error(f"no CSV files under {args.source_root}")
    return args.job, files, os.path.join(args.out_dir, "part-0.parquet")
