"""Replay a Kinesis Data Firehose day into one partition and run `eventpipe run` after each arrival.

    firehose_replay.py EVENTPIPE_BIN [--objects N] [--rows-per-object N] [--buffer-seconds S] [--full] [--work DIR]
    firehose_replay.py EVENTPIPE_BIN --midnight [--events N] [--max-delay-seconds S] [--lateness L] [--work DIR]

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

`--midnight` replays the hours around midnight instead: events from 22:00 on the 24th to 02:00
on the 25th, each reaching Firehose a random delay after it happened (up to
`--max-delay-seconds`, seeded), Firehose flushing its buffer every `--buffer-seconds` into the
directory of the flush time, the object modified then. The conversion runs once by arrival
directory and once with `source.eventTime` (`--lateness`), after both days closed; it prints
what each output day holds, and exits non-zero unless, with event time, each day holds exactly
the events of that day its lateness admits and every other event is rejected as late.
"""

import argparse
import json
import os
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
BY_EVENT_DAY = REPO / "examples" / "user-events-event-time.yaml"
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


def midnight(binary, events, max_delay, buffer_seconds, lateness, work):
    import random
    rng = random.Random(2026)
    start = DAY + timedelta(hours=22)
    late_by = {"m": 60, "h": 3600, "d": 86400}[lateness[-1]] * int(lateness[:-1])
    flushes = {}
    for n in range(events):
        happened = start + timedelta(seconds=n * 4 * 3600 // events)
        arrived = happened + timedelta(seconds=rng.randint(0, max_delay))
        flushed = DAY + timedelta(seconds=-(-int((arrived - DAY).total_seconds()) // buffer_seconds) * buffer_seconds)
        flushes.setdefault(flushed, []).append((n, happened))
    source = work / "midnight" / "source"
    expected = {}
    for flushed, rows in sorted(flushes.items()):
        directory = source / flushed.strftime("year=%Y/month=%m/day=%d")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"firehose-{flushed:%H%M%S}.csv"
        path.write_text("id,name,value,timestamp\n" + "".join(
            f"{n},{NAMES[n % len(NAMES)]},v,{int(happened.timestamp())}\n" for n, happened in rows))
        os.utime(path, (flushed.timestamp(), flushed.timestamp()))
        for n, happened in rows:
            own, filed = happened.date(), flushed.date()
            in_time = own == filed or flushed <= datetime.combine(own + timedelta(days=1), datetime.min.time(), timezone.utc) + timedelta(seconds=late_by)
            expected[n] = str(own) if in_time else "late"
    by_event = work / "midnight" / "user-events-event-time.yaml"
    by_event.write_text(BY_EVENT_DAY.read_text().replace("lateness: 2h", f"lateness: {lateness}"))
    closed = DAY + timedelta(days=3)
    found = {}
    for name, manifest in (("by arrival", EXAMPLES["conversion"]), (f"by event time (lateness {lateness})", by_event)):
        sink, rejected = work / "midnight" / name.split(" (")[0].replace(" ", "-"), work / "midnight" / "rejected"
        shutil.rmtree(rejected, ignore_errors=True)
        command = [str(binary), "run", "-f", str(manifest), "--source", str(source), "--sink", str(sink),
                   "--rejected", str(rejected), "--output", "json", "--now", closed.isoformat().replace("+00:00", "Z")]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
        held = {}
        for partition in json.loads(result.stdout)["partitions"]:
            day = "{}-{}-{}".format(*(part.split("=")[1] for part in partition["partition"].split("/")))
            files = [str(sink / name) for name in partition.get("files", []) if name.endswith(".parquet")]
            ids = duckdb_ids(files)
            held[day] = ids
            routed = partition.get("rowsRouted", 0)
            others = sum(1 for n in ids if expected[n] != day)
            print(f"{name}: {day} holds {len(ids)} events, {others} of them of another day; "
                  f"{routed} read and routed to another day")
        late = [json.loads(line)["row"]["id"] for path in rejected.rglob("rejected-*.jsonl")
                for line in path.read_text().splitlines() if '"row"' in line]
        print(f"{name}: {len(late)} events rejected as late")
        found[name] = (held, sorted(late))
    want = {}
    for n, day in expected.items():
        want.setdefault(day, set()).add(n)
    held, late = found[f"by event time (lateness {lateness})"]
    failures = [f"{day} holds other events than its own" for day, ids in held.items() if ids != want.get(day, set())]
    failures += [f"{day}'s events are missing" for day in want if day != "late" and day not in held]
    if late != sorted(want.get("late", set())):
        failures.append("the late events rejected are not the events that arrived after the lateness")
    for failure in failures:
        print(f"FAIL: {failure}")
    return not failures


def duckdb_ids(files):
    if not files:
        return set()
    import duckdb
    return {row[0] for row in duckdb.sql(f"SELECT id FROM read_parquet({files!r})").fetchall()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eventpipe", type=Path)
    parser.add_argument("--objects", type=int, default=288)
    parser.add_argument("--rows-per-object", type=int, default=1000)
    parser.add_argument("--buffer-seconds", type=int, default=300)
    parser.add_argument("--full", action="store_true", help="process the whole partition after every arrival")
    parser.add_argument("--work", type=Path, help="kept; default: a temporary directory")
    parser.add_argument("--midnight", action="store_true", help="replay the hours around midnight, by arrival and by event time")
    parser.add_argument("--events", type=int, default=2000, help="with --midnight: events from 22:00 to 02:00")
    parser.add_argument("--max-delay-seconds", type=int, default=10800, help="with --midnight: the longest delay to arrival")
    parser.add_argument("--lateness", default="2h", help="with --midnight: source.eventTime.lateness")
    args = parser.parse_args()
    if args.midnight:
        work = args.work or Path(tempfile.mkdtemp(prefix="eventpipe-midnight-"))
        try:
            ok = midnight(args.eventpipe, args.events, args.max_delay_seconds, args.buffer_seconds, args.lateness, work)
        finally:
            if not args.work:
                shutil.rmtree(work, ignore_errors=True)
        sys.exit(0 if ok else 1)
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
