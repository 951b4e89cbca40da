#!/usr/bin/env bash
# Memory benchmark: peak RSS of `eventpipe run` on a 2 GiB day partition (16 objects of 128 MiB,
# Firehose's largest buffer) whose first object has an unterminated quote near its start. The
# quoted field would run to the end of the object; the decoder gives up on it at
# source.csv.maxRowBytes, rejects its first line and reads on. Both the strict read and the read
# that sets the bad row apart must stay inside the query's memory limit plus 256 MiB.
#
# Usage: scripts/bench-stray-quote.sh [--no-build]
#
# Environment:
#   MEMORY_LIMIT_MIB  the run's --memory-limit-mib (default 512)
#   EVENTPIPE_BIN     binary to time (default target/release/eventpipe, built if missing)
#   EVENTPIPE_CACHE   cache root for the generated data (default ~/.cache/eventpipe)
#
# Prints the wall time, peak RSS, the bound, the rows read and rejected, and the size of the
# quarantined record; exits non-zero when the run fails or the peak exceeds the bound.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=$(realpath -m "${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}")
LIMIT=${MEMORY_LIMIT_MIB:-512}
DEFAULT_BIN=$REPO/target/release/eventpipe
EVENTPIPE_BIN=$(realpath -m "${EVENTPIPE_BIN:-$DEFAULT_BIN}")
OBJECTS=16
OBJECT_MIB=128

log() { printf '[stray-quote] %s\n' "$*" >&2; }

if [[ ! -x $EVENTPIPE_BIN ]]; then
  [[ ${1:-} != --no-build && $EVENTPIPE_BIN == "$DEFAULT_BIN" ]] || { log "$EVENTPIPE_BIN not found"; exit 2; }
  (cd "$REPO" && cargo build --release --locked -p eventpipe -p eventpipe-transformer --bins --examples)
  EVENTPIPE_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/eventpipe
fi
[[ -x /usr/bin/time ]] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }

data=$CACHE/bench-data/stray-quote-${OBJECTS}x${OBJECT_MIB}
day=$data/year=2026/month=11/day=24
if [[ ! -f $day/.complete ]]; then
  log "generating $OBJECTS objects of $OBJECT_MIB MiB in $day"
  mkdir -p "$day"
  python3 - "$day" "$OBJECTS" "$OBJECT_MIB" <<'EOF'
import shutil, sys
day, objects, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = ["theme", "locale", "font_size", "notifications", "autoplay", "data_saver", "timezone"]
lines, size, row = ["id,name,value,timestamp\n"], 0, 0
while size < mib << 20:
    line = f"{row % 1_000_003},{names[row % 7]},value-{row % 9973},{1_795_478_400 + row % 86_400}\n"
    lines.append(line)
    size += len(line)
    row += 1
clean = "".join(lines)
# Line 11 opens a quote that never closes.
broken = clean.replace("\n10,", '\n10,"', 1)
with open(f"{day}/part-00.csv", "w") as f:
    f.write(broken)
with open(f"{day}/part-01.csv", "w") as f:
    f.write(clean)
for i in range(2, objects):
    shutil.copyfile(f"{day}/part-01.csv", f"{day}/part-{i:02d}.csv")
EOF
  touch "$day/.complete"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed 's/policy: skip/policy: quarantine/' "$REPO/examples/user-events-parquet.yaml" >"$work/pipeline.yaml"
log "running $EVENTPIPE_BIN with --memory-limit-mib $LIMIT"
status=0
/usr/bin/time -f '%e %M' -o "$work/time" "$EVENTPIPE_BIN" run -f "$work/pipeline.yaml" --source "$data" \
  --sink "$work/out" --memory-limit-mib "$LIMIT" --output json >"$work/summary.json" 2>"$work/stderr" || status=$?
read -r wall rss_kib < <(tail -n 1 "$work/time")
peak=$((rss_kib / 1024))
bound=$((LIMIT + 256))
summary=$(python3 - "$work" <<'EOF'
import glob, json, os, sys
work = sys.argv[1]
try:
    part = json.load(open(f"{work}/summary.json"))["partitions"][0]
except Exception:
    print("no summary")
    sys.exit()
text = max((len(json.loads(l)["text"]) for f in glob.glob(f"{work}/out-rejected/**/*.jsonl", recursive=True) for l in open(f)), default=0)
print(f"rows read {part.get('rowsRead')}, rejected {part.get('rowsRejected')}, written {part.get('rowsWritten')}, "
      f"largest quarantined text {text} bytes{', error: ' + part['error'] if 'error' in part else ''}")
EOF
)
echo "stray quote, $OBJECTS x $OBJECT_MIB MiB: wall ${wall} s, peak RSS ${peak} MiB, bound ${bound} MiB (memory limit ${LIMIT} + 256); $summary"
if ((status != 0)); then
  log "the run failed (exit $status):"; tail -n 5 "$work/stderr" >&2; exit 1
fi
((peak <= bound)) || { log "peak RSS ${peak} MiB exceeds ${bound} MiB"; exit 1; }
