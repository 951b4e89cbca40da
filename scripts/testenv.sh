#!/usr/bin/env bash
# A throwaway Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager) on
# 127.0.0.1 for the operator's integration tests -- the same idea as controller-runtime's envtest,
# plus the controllers that turn Jobs and Deployments into Pods, collect garbage and delete
# namespaces (see CONTROLLERS). No kubelet and no scheduler: Pods stay Pending unless a test runs
# them.
#
#   scripts/testenv.sh install        build/download the binaries into the cache (first run only)
#   scripts/testenv.sh env            print the binaries' paths (EVENTPIPE_KUBE_APISERVER=... lines)
#   scripts/testenv.sh start [DIR]    start a control plane in the background, print its kubeconfig
#   scripts/testenv.sh stop [DIR]     stop it (no process is left behind)
#   scripts/testenv.sh status [DIR]   is it running?
#   scripts/testenv.sh run DIR        foreground mode used by the Rust harness (see below)
#
# kube-apiserver and kube-controller-manager are built (in one `go build`) from the Go module
# k8s.io/kubernetes at $KUBE_VERSION through a throwaway module whose `replace` directives point
# every k8s.io/* staging module at the matching published v0.x.y; etcd is Debian's etcd-server
# package, unpacked with dpkg-deb (nothing is installed system-wide). All are cached under
#   ${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}/{kube-apiserver,kube-controller-manager,etcd}/<version>/
#
# Environment:
#   EVENTPIPE_CACHE                     cache root (default ~/.cache/eventpipe)
#   EVENTPIPE_KUBE_APISERVER            use this kube-apiserver binary instead of the cached one
#   EVENTPIPE_KUBE_CONTROLLER_MANAGER   the same for kube-controller-manager
#   EVENTPIPE_ETCD                      use this etcd binary instead of the cached one
#   EVENTPIPE_TESTENV_STATE             state directory of `start`/`stop` (default $CACHE/testenv)
#   EVENTPIPE_GOCACHE                   keep Go's build cache here (default: a temporary one, deleted)
#
# `run DIR [--cleanup]` (used by tests/testkit/src/kube_env.rs): starts the control plane with its
# state in DIR, prints `ready <kubeconfig>` on stdout, then runs until its stdin reaches EOF (the
# test process holds the write end, so the kernel closes it when the test binary exits, however it
# exits), a component dies, or it gets SIGTERM/SIGINT. It then stops all three servers and, with
# --cleanup, removes DIR. They are started with a parent-death signal (setpriv --pdeathsig KILL),
# so they die even if this script is killed with SIGKILL.
set -euo pipefail

# Newest Kubernetes release that builds with the local Go toolchain (1.37 needs go >= 1.26.0).
KUBE_VERSION="v1.37.2"
# Debian bookworm's etcd-server. kube-apiserver 1.37 runs fine against etcd 3.4 for tests; it only
# notes that etcd lacks RequestWatchProgress (consistent reads from cache fall back to etcd).
ETCD_DEB_PACKAGE="etcd-server"
ETCD_DEB_VERSION="3.4.23-4+b4"

CACHE="${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}"
ETCD_CACHED="$CACHE/etcd/$ETCD_DEB_VERSION/etcd"
DEFAULT_STATE="${EVENTPIPE_TESTENV_STATE:-$CACHE/testenv}"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

LOG_NAME=testenv
# shellcheck source=lib/common.sh
source "$(dirname "$SELF")/lib/common.sh"

kube_cached() { printf '%s\n' "$CACHE/$1/$KUBE_VERSION/$1"; } # COMPONENT
apiserver_bin() { printf '%s\n' "${EVENTPIPE_KUBE_APISERVER:-$(kube_cached kube-apiserver)}"; }
controller_manager_bin() {
  printf '%s\n' "${EVENTPIPE_KUBE_CONTROLLER_MANAGER:-$(kube_cached kube-controller-manager)}"
}
etcd_bin() { printf '%s\n' "${EVENTPIPE_ETCD:-$ETCD_CACHED}"; }

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------


# The components built from k8s.io/kubernetes, each cached as
# $CACHE/<component>/<version>/<component>.
KUBE_COMPONENTS=(kube-apiserver kube-controller-manager)

# Builds the components of KUBE_COMPONENTS that are not cached yet, all in one `go build`: they
# share most of k8s.io/kubernetes, so the second one costs little once the first is compiled.
install_kube() {
  local component cached
  local -a uncached=()
  for component in "${KUBE_COMPONENTS[@]}"; do
    cached="$(kube_cached "$component")"
    if [[ -x "$cached" ]]; then
      log "$component $KUBE_VERSION: cached ($cached)"
    else
      uncached+=("$component")
    fi
  done
  ((${#uncached[@]} == 0)) || build_kube "${uncached[@]}"
}

# Builds cmd/<component> of k8s.io/kubernetes at KUBE_VERSION for each COMPONENT into the cache.
build_kube() { # COMPONENT...
  command -v go >/dev/null || die "Go is needed to build $* (https://go.dev/dl/)"
  local start work component cached
  local -a packages=() queries=()
  start="$(now)"
  new_tmpdir eventpipe-kube-build
  work="$NEW_TMPDIR"
  log "building $* $KUBE_VERSION from k8s.io/kubernetes (cold: several minutes)"
  for component in "$@"; do
    packages+=("k8s.io/kubernetes/cmd/$component")
    queries+=("k8s.io/kubernetes/cmd/$component@$KUBE_VERSION")
  done

  # A private build cache (several GB) that goes away with $work; only the binaries are kept.
  export GOCACHE="${EVENTPIPE_GOCACHE:-$work/gocache}"
  export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS="-buildvcs=false"
  cd "$work"
  write_kube_module
  export GOFLAGS="-trimpath -buildvcs=false -mod=mod"
  go get "${queries[@]}" >/dev/null 2>"$work/get.log" ||
    { cat "$work/get.log" >&2; die "go get ${queries[*]} failed"; }
  go build -ldflags "$(kube_ldflags)" -o "$work/bin/" "${packages[@]}"
  cd - >/dev/null
  for component in "$@"; do
    cached="$(kube_cached "$component")"
    mkdir -p "$(dirname "$cached")"
    mv -f "$work/bin/$component" "$cached.tmp"
    mv -f "$cached.tmp" "$cached"
    log "$component $KUBE_VERSION ($(du -h "$cached" | cut -f1)): $cached"
  done
  log "built $* in $(elapsed "$start") s"
}

# Writes go.mod of a throwaway module requiring k8s.io/kubernetes at KUBE_VERSION into the current
# directory. k8s.io/kubernetes replaces its staging modules with ./staging/src/..., which a module
# that depends on it cannot see, so every one of them is replaced here by its published version;
# the few never published (sample-*) get an empty local stub.
write_kube_module() {
  local modfile mod state staging_version="v0.${KUBE_VERSION#v1.}"
  modfile="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$modfile" ]] || die "could not download k8s.io/kubernetes@$KUBE_VERSION"
  local -a staging=()
  mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$modfile")
  ((${#staging[@]} > 0)) || die "no staging modules found in $modfile"
  local -a queries=()
  for mod in "${staging[@]}"; do queries+=("$mod@$staging_version"); done
  {
    printf 'module eventpipe.dev/testenv-kube\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
    go list -m -e -f '{{.Path}} {{if .Error}}missing{{else}}ok{{end}}' "${queries[@]}" |
      while read -r mod state; do
        if [[ "$state" == ok ]]; then
          printf '\t%s => %s %s\n' "$mod" "$mod" "$staging_version"
        else
          mkdir -p "stub/$mod"
          printf 'module %s\n' "$mod" >"stub/$mod/go.mod"
          printf '\t%s => ./stub/%s\n' "$mod" "$mod"
        fi
      done
    printf ')\n'
  } >go.mod.tmp
  mv go.mod.tmp go.mod
}

# The version information a release build stamps in, so `--version` and the /version endpoint
# report KUBE_VERSION.
kube_ldflags() {
  local pkg=k8s.io/component-base/version ldflags="-s -w"
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitTreeState=clean"
  ldflags+=" -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(cut -d. -f2 <<<"$KUBE_VERSION")"
  ldflags+=" -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '%s\n' "$ldflags"
}

install_etcd() {
  if [[ -x "$ETCD_CACHED" ]]; then
    log "etcd $ETCD_DEB_VERSION: cached ($ETCD_CACHED)"
    return
  fi
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    die "etcd comes from Debian's $ETCD_DEB_PACKAGE package: apt-get and dpkg-deb are needed (or set EVENTPIPE_ETCD)"
  fi
  local start work dir deb
  start="$(now)"
  dir="$(dirname "$ETCD_CACHED")"
  new_tmpdir eventpipe-etcd
  work="$NEW_TMPDIR"
  chmod 0777 "$work" # apt downloads as its unprivileged _apt user
  if ! apt-cache show "$ETCD_DEB_PACKAGE=$ETCD_DEB_VERSION" >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]]; then apt-get update -qq >&2; else die "run 'apt-get update' (as root) first"; fi
  fi
  if ! apt-cache show "$ETCD_DEB_PACKAGE=$ETCD_DEB_VERSION" >/dev/null 2>&1; then
    die "Debian no longer offers $ETCD_DEB_PACKAGE=$ETCD_DEB_VERSION (candidate: $(apt-cache policy "$ETCD_DEB_PACKAGE" 2>/dev/null | sed -n 's/^ *Candidate: //p')); update ETCD_DEB_VERSION in $SELF, or set EVENTPIPE_ETCD"
  fi
  (cd "$work" && apt-get download -qq "$ETCD_DEB_PACKAGE=$ETCD_DEB_VERSION" >&2)
  deb="$(ls "$work"/*.deb)"
  dpkg-deb -x "$deb" "$work/root"
  mkdir -p "$dir"
  install -m 0755 "$work/root/usr/bin/etcd" "$dir/etcd.tmp"
  mv -f "$dir/etcd.tmp" "$ETCD_CACHED"
  log "etcd $ETCD_DEB_VERSION unpacked in $(elapsed "$start") s: $ETCD_CACHED"
}

cmd_install() {
  trap cleanup_tmp EXIT
  with_install_lock install_etcd
  with_install_lock install_kube
  cmd_env
}

cmd_env() {
  local a c e missing=0
  a="$(apiserver_bin)"
  c="$(controller_manager_bin)"
  e="$(etcd_bin)"
  [[ -x "$a" ]] || { log "kube-apiserver not found at $a"; missing=1; }
  [[ -x "$c" ]] || { log "kube-controller-manager not found at $c"; missing=1; }
  [[ -x "$e" ]] || { log "etcd not found at $e"; missing=1; }
  ((missing == 0)) || die "run 'scripts/testenv.sh install'"
  printf 'EVENTPIPE_KUBE_APISERVER=%s\nEVENTPIPE_KUBE_CONTROLLER_MANAGER=%s\nEVENTPIPE_ETCD=%s\nEVENTPIPE_KUBE_VERSION=%s\n' \
    "$a" "$c" "$e" "$KUBE_VERSION"
}

# ---------------------------------------------------------------------------------------------
# run / start / stop
# ---------------------------------------------------------------------------------------------


gen_pki() { # DIR
  local d="$1" ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -noenc)
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=eventpipe-testenv-ca" 2>/dev/null
    issue() { # NAME SUBJECT EXTENSIONS
      openssl req -new "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%b' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    issue apiserver "/CN=kube-apiserver" \
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
    issue kube-controller-manager "/CN=kube-controller-manager" \
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n"
    issue admin "/O=system:masters/CN=eventpipe-admin" \
      "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() { # PKI_DIR URL OUT
  local b64=(base64 -w0)
  cat >"$3.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: eventpipe-testenv
  cluster:
    server: $2
    certificate-authority-data: $("${b64[@]}" "$1/ca.crt")
users:
- name: eventpipe-admin
  user:
    client-certificate-data: $("${b64[@]}" "$1/admin.crt")
    client-key-data: $("${b64[@]}" "$1/admin.key")
contexts:
- name: eventpipe-testenv
  context:
    cluster: eventpipe-testenv
    user: eventpipe-admin
current-context: eventpipe-testenv
EOF
  mv -f "$3.tmp" "$3"
}

# Stop the servers the supervisor started, newest first. kube-controller-manager and kube-apiserver
# hold no state of their own (the apiserver takes seconds to drain on SIGTERM), so they get
# SIGKILL; etcd gets SIGTERM and up to STOP_GRACE tenths of a second. The harness sets STOP_GRACE=0
# (SIGKILL at once) when the test process is gone: all data is throwaway then.
SUPERVISED_PIDS=()
STOP_GRACE=30
stop_children() {
  local i j pid
  for ((i = ${#SUPERVISED_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${SUPERVISED_PIDS[i]}"
    if ((STOP_GRACE > 0 && i == 0)); then
      kill -TERM "$pid" 2>/dev/null || true
      for ((j = 0; j < STOP_GRACE; j++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SUPERVISED_PIDS=()
}

# Start a process that gets SIGKILL when this (single-threaded) shell dies.
spawn() { # LOGFILE CMD...
  local logfile="$1"
  shift
  if command -v setpriv >/dev/null; then
    setpriv --pdeathsig KILL -- "$@" >"$logfile" 2>&1 </dev/null &
  else
    "$@" >"$logfile" 2>&1 </dev/null &
  fi
  SUPERVISED_PIDS+=("$!")
}

wait_until() { # TIMEOUT_S PID DESCRIPTION LOG CMD...
  local deadline=$((SECONDS + $1)) pid="$2" what="$3" logfile="$4"
  shift 4
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$what exited during start-up; last lines of $logfile:"
      tail -n 15 "$logfile" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$what not ready after $1 s; last lines of $logfile:"
      tail -n 15 "$logfile" >&2 || true
      return 1
    fi
    sleep 0.1
  done
}

# Start etcd, kube-apiserver and kube-controller-manager with their state in DIR; on success sets
# SERVE_KUBECONFIG.
start_servers() { # DIR
  local dir="$1" apiserver etcd etcd_port peer_port api_port kcm_port
  apiserver="$(apiserver_bin)"
  etcd="$(etcd_bin)"
  [[ -x "$apiserver" && -x "$etcd" && -x "$(controller_manager_bin)" ]] || cmd_env >/dev/null
  rm -rf "$dir/pki" "$dir/etcd" "$dir/logs" "$dir/kubeconfig" "$dir/ready"
  mkdir -p "$dir/logs"
  gen_pki "$dir/pki"
  read -r etcd_port peer_port api_port kcm_port <<<"$(free_ports 4)"

  spawn "$dir/logs/etcd.log" "$etcd" \
    --name testenv --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "testenv=http://127.0.0.1:$peer_port" --initial-cluster-state new \
    --logger zap --log-level warn
  local etcd_pid="${SUPERVISED_PIDS[-1]}"
  echo "$etcd_pid" >"$dir/etcd.pid"
  wait_until 30 "$etcd_pid" etcd "$dir/logs/etcd.log" \
    curl -fsS "http://127.0.0.1:$etcd_port/health" || return 1

  local pki="$dir/pki" url="https://127.0.0.1:$api_port"
  spawn "$dir/logs/kube-apiserver.log" "$apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode RBAC \
    --service-account-issuer "$url" \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --allow-privileged=true \
    --profiling=false \
    --v=0
  local api_pid="${SUPERVISED_PIDS[-1]}"
  echo "$api_pid" >"$dir/kube-apiserver.pid"
  wait_until 90 "$api_pid" kube-apiserver "$dir/logs/kube-apiserver.log" \
    curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$url/readyz" || return 1

  write_kubeconfig "$pki" "$url" "$dir/kubeconfig"
  start_controller_manager "$dir" "$kcm_port" || return 1
  SERVE_KUBECONFIG="$dir/kubeconfig"
}

# The controllers tests rely on: Jobs and their clean-up, Deployments, disruption budgets,
# owner-reference garbage collection, pod garbage collection, namespace deletion, ResourceQuota
# usage (admission enforces a quota only once this controller has counted it), and in each
# namespace the `default` ServiceAccount (without it admission refuses Pods) and the
# kube-root-ca.crt ConfigMap (a Pod's projected ServiceAccount token volume reads it); Secrets of
# type service-account-token get their token. Not the node-lifecycle controller: tests register
# fake Nodes without heartbeats, which it would taint and evict Pods from.
CONTROLLERS="job-controller,ttl-after-finished-controller,deployment-controller,replicaset-controller"
CONTROLLERS+=",disruption-controller,garbage-collector-controller,pod-garbage-collector-controller"
CONTROLLERS+=",namespace-controller,serviceaccount-controller,serviceaccount-token-controller"
CONTROLLERS+=",root-ca-certificate-publisher-controller,resourcequota-controller"

# Start kube-controller-manager against the running apiserver, as its admin: one identity for all
# controllers, since their RBAC is not what the tests examine.
# - It gets the client CA instead of looking it up in the cluster, where it would also look for a
#   request-header CA that this apiserver lacks and log an error about it again and again.
# - Tests create Jobs in bursts (a pipeline launches one per partition): more Job workers and a
#   higher client rate limit than the defaults (5 workers, 20 requests/s per controller) keep them
#   from queueing.
# - Terminated Pods are kept (podgc's threshold stays at its default of 12500): tests and the
#   operator read their status.
start_controller_manager() { # DIR PORT
  local dir="$1" port="$2" pki="$1/pki" kubeconfig="$1/kubeconfig"
  spawn "$dir/logs/kube-controller-manager.log" "$(controller_manager_bin)" \
    --kubeconfig "$kubeconfig" \
    --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
    --client-ca-file "$pki/ca.crt" --authentication-skip-lookup \
    --bind-address 127.0.0.1 --secure-port "$port" \
    --tls-cert-file "$pki/kube-controller-manager.crt" \
    --tls-private-key-file "$pki/kube-controller-manager.key" \
    --leader-elect=false \
    --use-service-account-credentials=false \
    --controllers "$CONTROLLERS" \
    --concurrent-job-syncs 20 \
    --kube-api-qps 100 --kube-api-burst 200 \
    --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" \
    --profiling=false \
    --v=0
  local kcm_pid="${SUPERVISED_PIDS[-1]}"
  echo "$kcm_pid" >"$dir/kube-controller-manager.pid"
  wait_until 60 "$kcm_pid" kube-controller-manager "$dir/logs/kube-controller-manager.log" \
    curl -fsS --cacert "$pki/ca.crt" "https://127.0.0.1:$port/healthz"
}

# The supervisor: start (retrying once, in case a free port was taken meanwhile), report, then wait.
serve() { # DIR MODE(stdin|daemon) CLEANUP(0|1)
  local dir="$1" mode="$2" cleanup="$3" start attempt
  start="$(now)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  echo "$$" >"$dir/supervisor.pid"
  # shellcheck disable=SC2064
  trap "stop_children; rm -f '$dir/ready' '$dir/supervisor.pid'; if ((${cleanup})); then rm -rf '$dir'; fi" EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP
  for attempt in 1 2; do
    if start_servers "$dir"; then break; fi
    stop_children
    ((attempt < 2)) || die "the control plane did not start (logs: $dir/logs)"
    log "retrying start-up"
  done
  touch "$dir/ready"
  log "control plane ready in $(elapsed "$start") s: $(grep -m1 'server:' "$SERVE_KUBECONFIG" | awk '{print $2}')"
  if [[ "$mode" == stdin ]]; then
    if serve_until_stdin_closes "$SERVE_KUBECONFIG" "${SUPERVISED_PIDS[@]}"; then
      STOP_GRACE=0 # stdin closed: the test process is gone, nobody needs a graceful shutdown
    else
      log "a component exited; shutting down"
    fi
  else
    wait -n "${SUPERVISED_PIDS[@]}" || true
    log "a component exited; shutting down"
  fi
}

supervisor_running() { # DIR
  local pid
  [[ -f "$1/supervisor.pid" ]] || return 1
  pid="$(cat "$1/supervisor.pid")"
  kill -0 "$pid" 2>/dev/null
}

cmd_start() {
  local dir="${1:-$DEFAULT_STATE}" start
  start="$(now)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if supervisor_running "$dir"; then
    log "already running (state: $dir)"
  else
    cmd_env >/dev/null
    rm -f "$dir/ready"
    setsid "$SELF" __serve "$dir" daemon 0 >"$dir/testenv.log" 2>&1 </dev/null &
    local pid=$! deadline=$((SECONDS + 120))
    until [[ -f "$dir/ready" ]]; do
      if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
        cat "$dir/testenv.log" >&2
        die "the control plane did not start"
      fi
      sleep 0.1
    done
    log "started in $(elapsed "$start") s"
  fi
  printf 'export EVENTPIPE_TEST_KUBECONFIG=%s\nexport KUBECONFIG=%s\n' "$dir/kubeconfig" "$dir/kubeconfig"
}

cmd_stop() {
  local dir="${1:-$DEFAULT_STATE}" pid f i
  if supervisor_running "$dir"; then
    pid="$(cat "$dir/supervisor.pid")"
    kill -TERM "$pid"
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # Belt and braces: nothing recorded in the state dir may survive.
  for f in "$dir"/{kube-controller-manager,kube-apiserver,etcd,supervisor}.pid; do
    [[ -f "$f" ]] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
      log "killing leftover pid $pid ($(basename "$f" .pid))"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  rm -rf "$dir/etcd" "$dir/ready"
  log "stopped"
}

cmd_status() {
  local dir="${1:-$DEFAULT_STATE}"
  if supervisor_running "$dir" && [[ -f "$dir/ready" ]]; then
    printf 'running: KUBECONFIG=%s\n' "$dir/kubeconfig"
  else
    printf 'not running\n'
    return 1
  fi
}

cmd_run() {
  local dir="" cleanup=0 arg
  for arg in "$@"; do
    case "$arg" in
      --cleanup) cleanup=1 ;;
      *) dir="$arg" ;;
    esac
  done
  [[ -n "$dir" ]] || die "usage: testenv.sh run DIR [--cleanup]"
  serve "$dir" stdin "$cleanup"
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
    install) cmd_install ;;
    env) cmd_env ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    run) cmd_run "$@" ;;
    __serve) serve "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
