#!/usr/bin/env bash
# The whole test suite. Installs what the tests need into a cache outside the clone (first run
# only: an S3-compatible server, a Kubernetes API server and etcd, a Python venv with DuckDB),
# then runs every Rust test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/s3-server.sh install
scripts/testenv.sh install
EVENTPIPE_PYTHON=$(scripts/python-venv.sh tests/requirements.txt)
export EVENTPIPE_PYTHON

cargo test --workspace --locked "$@"
