"""An independent reader of a Delta Lake table in a local directory, the integration tests' oracle.

    delta_read.py TABLE_DIR [--version N] [--rows]
    delta_read.py TABLE_DIR --poll-until STOP_FILE

Prints one JSON object: the version read, the protocol, the partition columns, the live files, the
row count in all and by partition (`year=2026/month=01/day=02[/hour=05]`), and with --rows the rows.
With --poll-until it reads the latest version again and again, as a dashboard querying the table
while it is written would, printing a JSON line per read (its version and rows by partition), until
STOP_FILE exists; a commit still being written is read again, a missing file ends it with code 2.

eventpipe writes its tables with delta-rs, so reading them back with delta-rs (or the `deltalake`
package built on it) would share its bugs. This script shares no code with it: it replays the
transaction log itself (the last checkpoint, then the JSON commits after it) and reads the data files
with pyarrow.

Exit codes: 1 the table cannot be read as asked, 2 a live file is missing, 3 a commit file is not
whole JSON (it may be being written: the caller retries).
"""

import argparse
import json
import sys
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

# Digits of each partition column in a partition's key, as in the writer's Hive-style paths.
KEY_WIDTHS = {"year": 4, "month": 2, "day": 2, "hour": 2}


class Failed(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def new_state():
    return {"protocol": None, "partitionColumns": [], "files": {}}


def apply(state, action):
    """Applies one log action (an add, remove, metaData or protocol; others change no file)."""
    if action.get("add"):
        add = action["add"]
        state["files"][unquote(add["path"])] = dict(add.get("partitionValues") or {})
    elif action.get("remove"):
        state["files"].pop(unquote(action["remove"]["path"]), None)
    elif action.get("metaData"):
        state["partitionColumns"] = list(action["metaData"]["partitionColumns"])
    elif action.get("protocol"):
        protocol = action["protocol"]
        state["protocol"] = [protocol["minReaderVersion"], protocol["minWriterVersion"]]


def read_commit(log, version):
    text = (log / f"{version:020d}.json").read_text()
    try:
        actions = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise Failed(3, f"commit {version} is not whole JSON ({error}); is it being written?")
    if not actions:
        raise Failed(3, f"commit {version} is empty; is it being written?")
    return actions


def read_checkpoint(log, checkpoint):
    """The state the checkpoint `_last_checkpoint` names holds."""
    version, parts = checkpoint["version"], checkpoint.get("parts")
    if parts:
        names = [f"{version:020d}.checkpoint.{i:010d}.{parts:010d}.parquet" for i in range(1, parts + 1)]
    else:
        names = [f"{version:020d}.checkpoint.parquet"]
    state = new_state()
    for name in names:
        schema = pq.read_schema(log / name)
        columns = [c for c in ("protocol", "metaData", "add") if c in schema.names]
        for row in pq.read_table(log / name, columns=columns).to_pylist():
            if row.get("add"):
                # Parquet maps come back as lists of (key, value) pairs.
                row["add"]["partitionValues"] = dict(row["add"]["partitionValues"] or [])
            apply(state, row)
    return state


def replay(table_dir, wanted):
    """The table's state at version `wanted` (None: the latest), and that version."""
    log = table_dir / "_delta_log"
    if not log.is_dir():
        raise Failed(1, f"{table_dir} is not a Delta table: no _delta_log")
    # Read before listing the commits, so that every commit up to the checkpoint is listed.
    last = log / "_last_checkpoint"
    checkpoint = json.loads(last.read_text()) if last.exists() else None
    versions = {int(p.stem) for p in log.glob("*.json") if p.stem.isdigit()}
    latest = max(versions | ({checkpoint["version"]} if checkpoint else set()), default=None)
    if latest is None:
        raise Failed(1, f"{log} holds no commit")
    version = latest if wanted is None else wanted
    if version > latest:
        raise Failed(1, f"version {version} is past the latest, {latest}")
    if checkpoint and checkpoint["version"] <= version:
        state, first = read_checkpoint(log, checkpoint), checkpoint["version"] + 1
    elif 0 in versions:
        state, first = new_state(), 0
    else:
        raise Failed(1, f"version {version} precedes the checkpoint and the commits before it are gone")
    for v in range(first, version + 1):
        if v not in versions:
            raise Failed(1, f"commit {v} is missing from {log}")
        for action in read_commit(log, v):
            apply(state, action)
    return state, version


def partition_key(columns, values):
    return "/".join(f"{c}={int(values[c]):0{KEY_WIDTHS.get(c, 0)}d}" for c in columns)


def read_file(table_dir, path, columns, values):
    """A live file's rows, with its partition values as int64 columns."""
    file = table_dir / path
    if not file.exists():
        raise Failed(2, f"live file {path} is missing")
    data = pq.read_table(file)
    for column in columns:
        if column in data.column_names:
            data = data.drop_columns([column])
        value = values.get(column)
        data = data.append_column(column, pa.array([None if value is None else int(value)] * data.num_rows, pa.int64()))
    return data


def plain(value):
    """A JSON form for the values json cannot write itself (timestamps, dates, decimals, bytes)."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def read(table_dir, wanted, with_rows):
    state, version = replay(table_dir, wanted)
    columns = state["partitionColumns"]
    by_partition, rows = {}, []
    for path, values in sorted(state["files"].items()):
        data = read_file(table_dir, path, columns, values)
        key = partition_key(columns, values)
        by_partition[key] = by_partition.get(key, 0) + data.num_rows
        if with_rows:
            rows.extend(json.dumps(row, sort_keys=True, default=plain) for row in data.to_pylist())
    result = {
        "version": version,
        "protocol": state["protocol"],
        "partitionColumns": columns,
        "files": sorted(state["files"]),
        "rows": sum(by_partition.values()),
        "rowsByPartition": by_partition,
    }
    if with_rows:
        result["data"] = [json.loads(row) for row in sorted(rows)]
    return result


def poll(table_dir, stop_file):
    while not stop_file.exists():
        try:
            result = read(table_dir, None, False)
        except Failed as failure:
            if failure.code == 3:
                print(f"delta_read: {failure}; reading again", file=sys.stderr)
                continue
            raise
        print(json.dumps({"version": result["version"], "rowsByPartition": result["rowsByPartition"]}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table_dir", type=Path)
    parser.add_argument("--version", type=int, help="the version to read (default: the latest)")
    parser.add_argument("--rows", action="store_true", help="also print the rows")
    parser.add_argument("--poll-until", type=Path, metavar="STOP_FILE", help="read the latest version until this file exists")
    args = parser.parse_args()
    try:
        if args.poll_until:
            poll(args.table_dir, args.poll_until)
            return
        result = read(args.table_dir, args.version, args.rows)
    except Failed as failure:
        print(f"delta_read: {failure}", file=sys.stderr)
        sys.exit(failure.code)
    json.dump(result, sys.stdout, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
