#!/usr/bin/env bash
# Where a benchmark job spends its time: records `eventpipe run` with perf (199 Hz, call graphs
# unwound from DWARF, since release builds keep no frame pointers) on a source directory that
# scripts/bench.sh generated, and prints the hottest symbols by self time and by time including
# what they call (which operator, reader or encoder the time belongs to). When
# inferno (`cargo install inferno`) is on PATH it also writes a flame graph.
#
# Usage: scripts/bench/profile.sh convert|aggregate SOURCE_DIR [OUT_DIR]
#
# SOURCE_DIR is the `source` directory of a data set in ~/.cache/eventpipe/bench-data/. Needs a
# release build that keeps its symbols (`CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build
# --release`; target/release/eventpipe, or EVENTPIPE_BIN) and perf.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
job=${1:?convert or aggregate}
source=${2:?the source directory of a generated data set}
out=${3:-$(mktemp -d "${TMPDIR:-/tmp}/eventpipe-profile.XXXXXX")}
bin=${EVENTPIPE_BIN:-$REPO/target/release/eventpipe}
case $job in
  convert) pipeline=$REPO/examples/user-events-parquet.yaml ;;
  aggregate) pipeline=$REPO/examples/user-settings.yaml ;;
  *) echo "unknown job $job: convert or aggregate" >&2; exit 2 ;;
esac
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 2; }
[[ -x $bin ]] || { echo "$bin not found: build it with cargo build --release" >&2; exit 2; }

mkdir -p "$out"
perf record -F 199 --call-graph dwarf,16384 -o "$out/perf.data" -- \
  "$bin" run -f "$pipeline" --source "$source" --sink "$out/sink" --force --output json >"$out/summary.json" 2>"$out/perf.log"
echo "hottest symbols of $job (self time, share of samples):"
perf report -i "$out/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
  awk '/^ +[0-9.]+%/ { sub(/ +-.*$/, ""); print }' | head -n 25
echo "hottest symbols of $job including their callees (share of samples):"
perf report -i "$out/perf.data" --children --sort symbol --stdio 2>/dev/null |
  awk '/^ +[0-9.]+% +[0-9.]+%/ && !/\[k\]/ { print }' | head -n 60
if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
  perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$out/flamegraph.svg"
  echo "flame graph: $out/flamegraph.svg"
fi
echo "perf data: $out/perf.data"
