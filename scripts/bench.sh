#!/usr/bin/env bash
# Benchmark eventpipe against Polars and DuckDB on a synthetic day partition
# (8 CSV files, 10M rows, ~285 MB of id,name,value,timestamp events).
#
# Usage: scripts/bench.sh [--no-build]
#
# Environment:
#   BENCH_ROWS     rows to generate (default 10000000; e.g. 200000 for a smoke run)
#   BENCH_RUNS     runs per job and engine; the median wall time is reported (default 3)
#   BENCH_ENGINES  comma list of eventpipe,polars,duckdb (default: all three)
#   BENCH_JOBS     comma list of convert,convert-delta,convert-event-time,aggregate (default:
#                  all four; convert-delta is the conversion into a Delta table,
#                  convert-event-time the conversion by event day, both eventpipe only)
#   BENCH_SEED     generator seed (default 42)
#   EVENTPIPE_BIN  binary to time (default target/release/eventpipe, built if missing)
#   EVENTPIPE_CACHE  cache root for the venv, the data and raw results
#                    (default ~/.cache/eventpipe)
#
# Each run is a separate process timed by GNU time (wall and CPU seconds, peak RSS) and
# writes to a fresh temporary directory. Exits non-zero only if a job failed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELPERS=$REPO/scripts/bench
CACHE=$(realpath -m "${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}")
ROWS=${BENCH_ROWS:-10000000}
FILES=8
SEED=${BENCH_SEED:-42}
RUNS=${BENCH_RUNS:-3}
ENGINES=${BENCH_ENGINES:-eventpipe,polars,duckdb}
JOBS=${BENCH_JOBS:-convert,convert-delta,convert-event-time,aggregate}
DEFAULT_BIN=$REPO/target/release/eventpipe
EVENTPIPE_BIN=$(realpath -m "${EVENTPIPE_BIN:-$DEFAULT_BIN}")
THREADS=2
BUILD=1
FAILED=0

declare -A PIPELINE=(
  [convert]=examples/user-events-parquet.yaml
  [convert-delta]=examples/user-events-delta.yaml
  [convert-event-time]=examples/user-events-event-time.yaml
  [aggregate]=examples/user-settings.yaml
)

export PYTHONDONTWRITEBYTECODE=1

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }

parse_args() {
  local arg
  for arg in "$@"; do
    case $arg in
      --no-build) BUILD=0 ;;
      -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
      *) die "unknown argument: $arg (try --help)" ;;
    esac
  done
  [[ $ROWS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS must be a positive integer"
  [[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
  IFS=, read -ra ENGINE_LIST <<<"$ENGINES"
  IFS=, read -ra JOB_LIST <<<"$JOBS"
  local e j
  for e in "${ENGINE_LIST[@]}"; do
    [[ $e =~ ^(eventpipe|polars|duckdb)$ ]] || die "unknown engine in BENCH_ENGINES: $e"
  done
  for j in "${JOB_LIST[@]}"; do
    [[ -n ${PIPELINE[$j]:-} ]] || die "unknown job in BENCH_JOBS: $j"
  done
}

uses_engine() { [[ ,$ENGINES, == *,$1,* ]]; }

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

ensure_gnu_time() {
  [[ -x /usr/bin/time ]] && return
  log "installing GNU time"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
}

ensure_venv() {
  PY=$("$REPO/scripts/python-venv.sh" "$HELPERS/requirements.txt")
}

# Sets SOURCE (the --source root), INPUT_BYTES; generates and verifies once per key.
ensure_data() {
  local data
  data=$CACHE/bench-data/rows$ROWS-files$FILES-seed$SEED-$(hash_of "$HELPERS/gen_data.py")
  SOURCE=$data/source
  if [[ ! -f $data/summary.txt ]]; then
    rm -rf "$data"
    mkdir -p "$data"
    log "generating $ROWS rows into $SOURCE"
    "$PY" "$HELPERS/gen_data.py" --rows "$ROWS" --files "$FILES" --seed "$SEED" "$data/tmp"
    mv "$data/tmp" "$SOURCE"
    "$PY" "$HELPERS/verify_data.py" "$SOURCE" >"$data/summary.tmp"
    mv "$data/summary.tmp" "$data/summary.txt"
  fi
  log "input $SOURCE:"
  cat "$data/summary.txt" >&2
  INPUT_BYTES=$(find "$SOURCE" -name '*.csv' -printf '%s\n' | awk '{s += $1} END {print s}')
}

ensure_eventpipe() {
  uses_engine eventpipe || return 0
  local job
  for job in "${JOB_LIST[@]}"; do
    [[ -f ${PIPELINE[$job]} ]] || die "missing pipeline ${PIPELINE[$job]}"
  done
  [[ -x $EVENTPIPE_BIN ]] && return
  [[ $BUILD == 1 && $EVENTPIPE_BIN == "$DEFAULT_BIN" ]] ||
    die "$EVENTPIPE_BIN not found (build it, or drop --no-build)"
  log "building eventpipe (release; a cold build takes ~45 min on 2 cores)"
  cargo build --release --bin eventpipe
}

# Sets CMD to the command line of one job.
job_command() {
  local engine=$1 job=$2 out=$3
  case $engine in
    eventpipe) CMD=("$EVENTPIPE_BIN" run -f "${PIPELINE[$job]}" --source "$SOURCE" --sink "$out" --output json) ;;
    polars) CMD=(env "POLARS_MAX_THREADS=$THREADS" "$PY" "$HELPERS/polars_job.py" "$job" "$SOURCE" "$out") ;;
    duckdb) CMD=("$PY" "$HELPERS/duckdb_job.py" "$job" "$SOURCE" "$out") ;;
  esac
}

warn_if_busy() {
  local load
  read -r load _ </proc/loadavg
  if awk -v l="$load" 'BEGIN {exit !(l > 0.5)}'; then
    log "warning: 1-min load average is $load before timing; other processes skew the numbers"
  fi
}

# Appends one line to $RESULTS: job engine run status wall_s cpu_s rss_kib out_bytes out_rows.
run_once() {
  local engine=$1 job=$2 run=$3 out status=ok wall user sys rss out_bytes out_rows json=()
  out=$(mktemp -d "$WORK/out.XXXXXX")
  job_command "$engine" "$job" "$out"
  if ! /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "${CMD[@]}" >"$WORK/stdout" 2>"$WORK/stderr"; then
    status=failed
    FAILED=1
    log "$job/$engine run $run failed: ${CMD[*]}"
    tail -n 20 "$WORK/stderr" >&2
  fi
  read -r wall user sys rss < <(tail -n 1 "$WORK/time")
  if [[ $status == ok ]]; then
    if [[ $engine == eventpipe ]]; then json=("$WORK/stdout"); fi
    read -r out_bytes out_rows < <("$PY" "$HELPERS/outstat.py" "$out" "${json[@]}")
  else
    out_bytes=0 out_rows='?'
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$engine" "$run" "$status" \
    "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')" "$rss" "$out_bytes" "$out_rows" >>"$RESULTS"
  log "$job/$engine run $run: $status, $wall s (cpu $user+$sys s), $((rss / 1024)) MiB," \
    "$out_rows rows, $out_bytes bytes"
  rm -rf "$out"
}

# Runs interleave engines and jobs so that drifting background load hits all alike.
run_all() {
  local run job engine
  find "$SOURCE" -name '*.csv' -exec cat {} + >/dev/null # warm the page cache
  for run in $(seq "$RUNS"); do
    warn_if_busy
    for job in "${JOB_LIST[@]}"; do
      for engine in "${ENGINE_LIST[@]}"; do
        # Polars and DuckDB have no Delta writer here, nor event-time partitions: those jobs are
        # eventpipe's against its own conversion.
        [[ $job =~ ^convert-(delta|event-time)$ && $engine != eventpipe ]] && continue
        run_once "$engine" "$job" "$run"
      done
    done
  done
}

report() {
  local versions keep
  versions=$("$PY" -c 'import duckdb, polars; print(f"polars {polars.__version__}, duckdb {duckdb.__version__}")')
  printf '\n%s rows, %.1f MB in %s files; %s threads; %s runs (median wall and CPU, max RSS); %s\n\n' \
    "$ROWS" "$(awk -v b="$INPUT_BYTES" 'BEGIN {print b / 1e6}')" "$FILES" "$THREADS" "$RUNS" "$versions"
  "$PY" "$HELPERS/report.py" "$RESULTS" "$ROWS" "$INPUT_BYTES"
  keep=$CACHE/bench-results/$(date -u +%Y%m%dT%H%M%SZ).tsv
  mkdir -p "${keep%/*}"
  cp "$RESULTS" "$keep"
  log "raw results: $keep"
}

main() {
  parse_args "$@"
  cd "$REPO"
  ensure_gnu_time
  ensure_venv
  ensure_eventpipe
  ensure_data
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/eventpipe-bench.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  RESULTS=$WORK/results.tsv
  : >"$RESULTS"
  run_all
  report
  exit "$FAILED"
}

main "$@"
