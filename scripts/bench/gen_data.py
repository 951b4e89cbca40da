"""Generate a synthetic day partition of user-setting events as CSV.

    gen_data.py --rows N --files K --seed S OUT_ROOT

writes OUT_ROOT/year=2026/month=11/day=24/part-{0..K-1}.csv with header
id,name,value,timestamp. Users follow a power law (a few users produce tens of
thousands of events, most produce a handful); timestamps are unix seconds spread
uniformly over 2026-11-24 UTC, and each file holds a contiguous slice of the day,
as a log shipper would write it.
"""

import argparse
import os
import sys
import time

import numpy as np
import polars as pl

DAY_START = 1_795_478_400  # 2026-11-24T00:00:00Z
DAY_SECONDS = 86_400
PARTITION = ("year=2026", "month=11", "day=24")

USERS = 1_000_000
ZIPF_EXPONENT = 0.7  # event weight of the user of rank r is r**-0.7

# Settings and values with their relative frequencies (popular ones first).
NAMES = {
    "theme": 12, "dark_mode": 10, "zoom": 10, "units": 9,
    "sound": 8, "volume": 8, "beta": 6, "language": 6,
    "tz": 6, "region": 5, "layout": 5, "font_size": 5,
    "autoplay": 3, "currency": 3, "privacy": 3, "notifications": 2,
}
VALUES = {
    "on": 24, "off": 20, "0": 8, "1": 8, "12": 6, "14": 5,
    "16": 4, "auto": 6, "dark": 6, "light": 5, "en-US": 5, "de-DE": 3,
}


def power_law_ranks(rng, rows, users, exponent):
    """User ranks in [0, users) with P(rank r) ~ (r+1)**-exponent, by inverse CDF."""
    a = 1.0 - exponent
    hi = (users + 1.0) ** a - 1.0
    x = (1.0 + rng.random(rows) * hi) ** (1.0 / a)
    return np.minimum(x.astype(np.int64) - 1, users - 1)


def weighted_choice(rng, rows, weights):
    p = np.fromiter(weights.values(), dtype=np.float64)
    return rng.choice(len(p), size=rows, p=p / p.sum()).astype(np.uint32)


def labels(choices, vocabulary):
    return pl.Series(list(vocabulary)).gather(pl.Series(choices))


def generate(rows, seed):
    rng = np.random.default_rng(seed)
    # Scatter the ranks over the id space so heavy users are not all small ids.
    user_ids = rng.permutation(USERS).astype(np.int64) + 1
    ids = user_ids[power_law_ranks(rng, rows, USERS, ZIPF_EXPONENT)]
    timestamps = np.sort(DAY_START + rng.integers(0, DAY_SECONDS, size=rows))
    return pl.DataFrame({
        "id": ids,
        "name": labels(weighted_choice(rng, rows, NAMES), NAMES),
        "value": labels(weighted_choice(rng, rows, VALUES), VALUES),
        "timestamp": timestamps,
    })


def write_parts(df, files, out_root):
    part_dir = os.path.join(out_root, *PARTITION)
    os.makedirs(part_dir, exist_ok=True)
    bounds = np.linspace(0, df.height, files + 1).astype(int)
    for k in range(files):
        chunk = df.slice(bounds[k], bounds[k + 1] - bounds[k])
        chunk.write_csv(os.path.join(part_dir, f"part-{k}.csv"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("out_root")
    args = ap.parse_args()

    started = time.perf_counter()
    df = generate(args.rows, args.seed)
    write_parts(df, args.files, args.out_root)
    print(f"generated {args.rows} rows in {args.files} files in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
