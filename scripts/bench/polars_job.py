"""Polars version of the two benchmark jobs (threads: POLARS_MAX_THREADS)."""

import polars as pl

from common import COLUMNS, parse_args

DTYPES = {"int64": pl.Int64, "string": pl.String}


def scan(files):
    return pl.scan_csv(files, schema={c: DTYPES[t] for c, t in COLUMNS.items()})


def convert(lf):
    ts = pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC")
    return lf.with_columns(ts)


def aggregate(lf):
    # Structs compare field by field: the latest timestamp, then the greatest value.
    latest = lf.group_by("id", "name").agg(
        pl.col("value").max_by(pl.struct("timestamp", "value"))
    )
    return latest.group_by("id").agg(
        settings=pl.struct(key="name", value="value")
    )


def main():
    job, files, out = parse_args("polars")
    query = {"convert": convert, "aggregate": aggregate}[job](scan(files))
    query.sink_parquet(out, compression="zstd", maintain_order=False)


if __name__ == "__main__":
    main()
