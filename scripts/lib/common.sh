# Helpers shared by the scripts that install and run test servers (testenv.sh, seaweedfs.sh,
# sqs-server.sh).
# Source it after setting LOG_NAME (the prefix of messages) and CACHE (the cache root).

# The script's header comment (SELF: the script's path).
usage() {
  sed -n '2,/^set -euo/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//'
}

log() { printf '%s: %s\n' "$LOG_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Temporary directories removed when the script exits (`trap cleanup_tmp EXIT`).
TMP_DIRS=()
cleanup_tmp() { ((${#TMP_DIRS[@]} == 0)) || rm -rf "${TMP_DIRS[@]}"; }
new_tmpdir() { # PREFIX -> sets NEW_TMPDIR to a new directory, removed when the script exits
  NEW_TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
  TMP_DIRS+=("$NEW_TMPDIR")
}

# Serialise concurrent installs (two CI jobs, or a test run racing a manual install).
with_install_lock() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.install.lock"
  flock 9
  "$@"
  flock -u 9
}

free_ports() { # N -> N distinct free TCP ports on 127.0.0.1, space separated
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Says `ready URL` on stdout, then serves until stdin closes (the test process that started the
# server is gone: returns 0) or one of the PIDs exits (returns 1).
serve_until_stdin_closes() { # URL PID...
  printf 'ready %s\n' "$1"
  shift
  # Explicit redirect: a background job's stdin would otherwise be /dev/null.
  cat <&0 >/dev/null &
  local watcher=$!
  wait -n "$watcher" "$@" || true
  kill -0 "$watcher" 2>/dev/null || return 0
  kill "$watcher" 2>/dev/null || true
  return 1
}
