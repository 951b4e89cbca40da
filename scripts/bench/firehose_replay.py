"""Replay a Kinesis Data Firehose day into one partition and run `eventpipe run` after each arrival.

    firehose_replay.py EVENTPIPE_BIN [--objects N] [--rows-per-object N] [--buffer-seconds S] [--full] [--work DIR]

Firehose writes a new object into today's partition every buffer interval (default 300 s: 288
objects a day). For both examples the replay writes the objects one by one, each at its arrival
time, and after each one runs `eventpipe run --now <arrival time>`; after the last, one more run
at the day's close. It prints, per example, the rows all runs read together against the day's
rows, the runs that read anything, and the seconds per run; and what re-reading the whole
partition after every arrival would have read. `--full` runs `eventpipe run --full`, which
processes the whole partition after every arrival, for comparison.

The conversion runs twice: into Parquet and into a Delta table, whose increments the run at the
day's close compacts; for it the files the closed partition holds are printed too.

Without `--full`, exits non-zero when a conversion (append mode) did not read each row exactly
once, the aggregation (full mode) did not read the day exactly once, at its close, or the closed
Delta partition holds more than 2 files.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAY = datetime(2026, 11, 24, tzinfo=timezone.utc)
PARTITION = "year=2026/month=11/day=24"
EXAMPLES = {
    "conversion": REPO / "examples" / "user-events-parquet.yaml",
    "conversion-delta": REPO / "examples" / "user-events-delta.yaml",
    "aggregation": REPO / "examples" / "user-settings.yaml",
}
NAMES = ["theme", "locale", "font_size", "notifications", "autoplay", "data_saver", "timezone"]


def object_body(index, rows, buffer_seconds):
    lines = ["id,name,value,timestamp"]
    start = int(DAY.timestamp()) + index * buffer_seconds
    for row in range(rows):
        n = index * rows + row
        lines.append(f"{n % 997},{NAMES[n % len(NAMES)]},value-{n % 13},{start + row * buffer_seconds // rows}")
    return "\n".join(lines) + "\n"


def run(binary, manifest, source, sink, now, full):
    command = [str(binary), "run", "-f", str(manifest), "--source", str(source), "--sink", str(sink),
               "--output", "json", "--now", now.isoformat().replace("+00:00", "Z")] + (["--full"] if full else [])
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    (partition,) = json.loads(result.stdout)["partitions"]
    return partition


def replay(binary, example, objects, rows, buffer_seconds, full, work):
    source, sink = work / example / "source", work / example / "sink"
    directory = source / PARTITION
    directory.mkdir(parents=True)
    runs = []
    for index in range(objects):
        arrival = DAY + timedelta(seconds=(index + 1) * buffer_seconds)
        (directory / f"firehose-{index:04d}.csv").write_text(object_body(index, rows, buffer_seconds))
        now = min(arrival, DAY + timedelta(days=1) - timedelta(seconds=1))
        runs.append(run(binary, EXAMPLES[example], source, sink, now, full))
    # The schedule's default grace period is 120 s; a minute later the day is closed.
    runs.append(run(binary, EXAMPLES[example], source, sink, DAY + timedelta(days=1, minutes=3), full))
    read = [r.get("byRun", {}).get("read", 0) for r in runs]
    seconds = [r["seconds"] for r in runs if r.get("byRun", {}).get("read", 0)]
    return {
        "day_rows": objects * rows,
        "rows_read": sum(read),
        "runs_reading": sum(1 for n in read if n),
        "committed_rows": runs[-1].get("rowsRead"),
        "increments": runs[-1].get("increments"),
        "closed_files": len((runs[-1].get("compacted") or runs[-1]).get("files", [])),
        "median_s": statistics.median(seconds) if seconds else 0.0,
        "max_s": max(seconds) if seconds else 0.0,
        "total_s": sum(seconds),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eventpipe", type=Path)
    parser.add_argument("--objects", type=int, default=288)
    parser.add_argument("--rows-per-object", type=int, default=1000)
    parser.add_argument("--buffer-seconds", type=int, default=300)
    parser.add_argument("--full", action="store_true", help="process the whole partition after every arrival")
    parser.add_argument("--work", type=Path, help="kept; default: a temporary directory")
    args = parser.parse_args()
    if args.objects * args.buffer_seconds > 86400:
        sys.exit("the objects must arrive within the day: objects x buffer-seconds <= 86400")
    work = args.work or Path(tempfile.mkdtemp(prefix="eventpipe-replay-"))
    try:
        results = {example: replay(args.eventpipe, example, args.objects, args.rows_per_object, args.buffer_seconds,
                                   args.full, work)
                   for example in EXAMPLES}
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    day_rows = args.objects * args.rows_per_object
    every_arrival = args.rows_per_object * args.objects * (args.objects + 1) // 2
    print(f"{args.objects} objects of {args.rows_per_object} rows, one every {args.buffer_seconds} s: {day_rows} rows")
    print(f"re-reading the whole partition after every arrival would read {every_arrival} rows "
          f"({every_arrival / day_rows:.1f}x the day)")
    for example, r in results.items():
        print(f"{example}: rows read {r['rows_read']} ({r['rows_read'] / day_rows:.2f}x the day) in "
              f"{r['runs_reading']} runs; committed {r['committed_rows']} rows in {r['increments']} increments; "
              f"median {r['median_s']:.3f} s per run, max {r['max_s']:.3f} s, {r['total_s']:.1f} s in all; "
              f"{r['closed_files']} files after the close")
    if args.full:
        return
    failures = []
    for example in ("conversion", "conversion-delta"):
        conversion = results[example]
        if conversion["rows_read"] != day_rows or conversion["runs_reading"] != args.objects:
            failures.append(f"the {example} did not read each row once, one increment per object")
        if conversion["committed_rows"] != day_rows or conversion["increments"] != args.objects:
            failures.append(f"the {example}'s committed output does not hold the day in one increment per object")
    if results["conversion-delta"]["closed_files"] > 2:
        failures.append("the closed Delta partition's increments were not compacted into at most 2 files")
    aggregation = results["aggregation"]
    if aggregation["rows_read"] != day_rows or aggregation["runs_reading"] != 1:
        failures.append("the aggregation did not read the day exactly once")
    for failure in failures:
        print(f"FAIL: {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
