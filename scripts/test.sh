#!/usr/bin/env bash
# The whole test suite. Installs what the tests need into a cache outside the clone (first run
# only: Helm, two S3-compatible servers -- s3s-fs, and SeaweedFS with IAM policies and STS --, an
# SQS-compatible server (moto's), kube-apiserver, kube-controller-manager and etcd, Python venvs), runs the Helm chart's checks,
# then every Rust test, and ends with one line counting them all. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
chart_log=$(mktemp)
log=$(mktemp)
trap 'rm -f "$chart_log" "$log"' EXIT

scripts/chart-test.sh | tee "$chart_log"

scripts/s3-server.sh install
scripts/seaweedfs.sh install
scripts/sqs-server.sh install
scripts/testenv.sh install
EVENTPIPE_PYTHON=$(scripts/python-venv.sh tests/requirements.txt)
export EVENTPIPE_PYTHON

cargo test --workspace --locked "$@" 2>&1 | tee "$log"
# The README's operator scale measurement, small: built by `cargo test` above, so it stays runnable.
"${CARGO_TARGET_DIR:-target}/debug/examples/scale" 5 3 2

echo "test suite took $(( $(date +%s) - started ))s"
# The end-to-end scenarios on the real Job controller are the slowest binary: say how slow.
awk '/Running tests\/lifecycle\.rs/ { lifecycle = 1 }
     lifecycle && /^test result:/ { sub(/.*finished in /, ""); print "lifecycle suite took " $0; exit }' "$log"
awk '/^test result:/ { passed += $4; failed += $6 }
     /^chart checks:/ { passed += $3; failed += $5 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$chart_log" "$log"
