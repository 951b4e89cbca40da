#!/usr/bin/env bash
# The SQS-compatible server the notification tests use: moto's server (Python), which answers the
# SQS query and JSON protocols (long polling, batches, visibility timeouts) with any credentials.
#
#   scripts/sqs-server.sh install   create its virtualenv once in the cache
#   scripts/sqs-server.sh run       start it on a free port of 127.0.0.1, print
#                                   `ready http://127.0.0.1:PORT` once it answers, and stop it
#                                   when stdin reaches end-of-file
set -euo pipefail

SELF="${BASH_SOURCE[0]}"
LOG_NAME=sqs-server
CACHE=${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}
# shellcheck source=lib/common.sh
source "$(dirname "$SELF")/lib/common.sh"
REQUIREMENTS="$(cd "$(dirname "$SELF")/.." && pwd)/tests/sqs-requirements.txt"

python_bin() { "$(dirname "$SELF")/python-venv.sh" "$REQUIREMENTS"; }

cmd_run() {
  local python port url pid start
  start="$(now)"
  python="$(python_bin)"
  read -r port <<<"$(free_ports 1)"
  url="http://127.0.0.1:$port"
  new_tmpdir eventpipe-sqs
  trap 'kill "${pid:-}" 2>/dev/null || true; cleanup_tmp' EXIT
  "$python" -m moto.server -H 127.0.0.1 -p "$port" >"$NEW_TMPDIR/moto.log" 2>&1 </dev/null &
  pid=$!
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$url/moto-api/" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { tail -n 15 "$NEW_TMPDIR/moto.log" >&2; die "moto exited during start-up"; }
    ((SECONDS < deadline)) || die "moto not ready after 60 s"
    sleep 0.2
  done
  log "ready in $(elapsed "$start") s: $url"
  serve_until_stdin_closes "$url" "$pid" || {
    tail -n 15 "$NEW_TMPDIR/moto.log" >&2
    die "moto exited"
  }
}

case "${1:-}" in
  install) with_install_lock python_bin >/dev/null && log "installed: $(python_bin)" ;;
  run) cmd_run ;;
  *)
    usage >&2
    exit 2
    ;;
esac
