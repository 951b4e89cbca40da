#!/usr/bin/env bash
# The whole test suite. Installs what the tests need into a cache outside the clone (first run
# only: an S3-compatible server, a Kubernetes API server and etcd, a Python venv with DuckDB),
# then runs every Rust test and ends with one line counting them all. Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

scripts/s3-server.sh install
scripts/testenv.sh install
EVENTPIPE_PYTHON=$(scripts/python-venv.sh tests/requirements.txt)
export EVENTPIPE_PYTHON

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"

echo "test suite took $(( $(date +%s) - started ))s"
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
