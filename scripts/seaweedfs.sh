#!/usr/bin/env bash
# A SeaweedFS S3 server with IAM policies and STS AssumeRoleWithWebIdentity, for the tests that
# check what each identity may touch: the operator's own static credentials, and per-team roles
# that a Job assumes with its ServiceAccount token -- the test kube-apiserver's token issuer is
# trusted as an OIDC provider, the way AWS IAM trusts an EKS cluster's OIDC issuer.
#
#   scripts/seaweedfs.sh install                       build `weed` into the cache (first run only)
#   scripts/seaweedfs.sh bin                           print the binary's path
#   scripts/seaweedfs.sh run DIR S3_CONFIG IAM_CONFIG  run in the foreground (see below)
#
# Environment:
#   EVENTPIPE_CACHE              cache root (default ~/.cache/eventpipe); the binary is cached as
#                                $EVENTPIPE_CACHE/seaweedfs/<version>/weed
#   EVENTPIPE_SEAWEEDFS          use this `weed` binary instead of the cached one
#   EVENTPIPE_SEAWEEDFS_PORT     S3 port for `run` (default: a free one)
#   EVENTPIPE_GOCACHE            keep Go's build cache here (default: a temporary one, deleted;
#                                a cold build takes ~5 min on 2 CPUs and ~1.8 GB of build cache,
#                                a warm one 10 s)
#
# `run DIR S3_CONFIG IAM_CONFIG` starts `weed mini` (master, volume server, filer, S3 gateway and
# an admin server with its maintenance worker, in one process, on 127.0.0.1 only, on 10 free
# ports) with its data in DIR/data (emptied first) and its log in DIR/logs/weed.log, prints
# `ready http://127.0.0.1:<s3 port>` on stdout once S3 requests can succeed (~4.7 s), then runs
# until its stdin reaches EOF, the server exits, or it gets SIGTERM/SIGINT. It then kills the server
# with SIGKILL (its graceful shutdown takes over 5 s, and the data is throwaway). The server has a
# parent-death signal (setpriv --pdeathsig KILL), so it dies even if this script is killed with
# SIGKILL. DIR/ports lists the ports; DIR itself is kept.
#
# S3_CONFIG (-s3.config) holds the static identities:
#   {"identities": [{"name": "admin", "credentials": [{"accessKey": "...", "secretKey": "..."}],
#                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
#                   {"name": "operator", "credentials": [...], "actions": []}]}
# IAM_CONFIG (-s3.iam.config) switches on the "advanced IAM" mode (policy engine + STS):
#   {"sts": {"tokenDuration": "1h", "maxSessionLength": "12h", "issuer": "seaweedfs-sts",
#            "signingKey": "<base64 of 32 random bytes: a []byte in Go; at least 16>"},
#    "providers": [{"name": "kube", "type": "oidc", "enabled": true, "config": {
#        "issuer": "https://127.0.0.1:<apiserver port>",       (exactly the tokens' `iss`)
#        "clientIds": ["sts.amazonaws.com"],                    (accepted `aud` values)
#        "jwksUri": "https://127.0.0.1:<port>/openid/v1/jwks",  (optional: found by discovery)
#        "tlsCaCert": "/absolute/path/pki/ca.crt"}}],           (must be an absolute path)
#    "policy": {"defaultEffect": "Deny", "storeType": "memory"},
#    "roles": [{"roleName": "team-a", "roleArn": "arn:aws:iam::111122223333:role/team-a",
#               "attachedPolicies": ["team-a-buckets"],
#               "trustPolicy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
#                   "Principal": {"Federated": "kube"},          (provider name or issuer URL)
#                   "Action": ["sts:AssumeRoleWithWebIdentity"],
#                   "Condition": {"StringEquals": {
#                       "oidc:sub": "system:serviceaccount:team-a:eventpipe-jobs"}}}]}}],
#    "policies": [{"name": "team-a-buckets", "document": {"Version": "2012-10-17", "Statement": [
#        {"Effect": "Allow", "Action": ["s3:*"],
#         "Resource": ["arn:aws:s3:::team-a-*", "arn:aws:s3:::team-a-*/*"]}]}}]}
# The kube-apiserver must serve its JWKS anonymously (by default only ServiceAccounts may read
# it; anonymous gets 403): bind the ClusterRole system:service-account-issuer-discovery to the
# Group system:unauthenticated. SeaweedFS fetches the JWKS on the first AssumeRoleWithWebIdentity
# and caches it for an hour (`jwksCacheTTLSeconds`), refetching at once for an unknown `kid`.
# Without `tlsCaCert` the fetch fails ("x509: certificate signed by unknown authority").
#
# STS is served on the S3 port itself: POST / with a form body (or query string)
#   Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=...&RoleSessionName=...
#   &WebIdentityToken=<jwt>[&DurationSeconds=900..43200]
# unsigned, as AWS SDKs send it (point the STS client's endpoint at the S3 URL, any region). The
# answer is AWS's XML: AccessKeyId (ASIA...), SecretAccessKey, SessionToken (a JWT signed with
# sts.signingKey), Expiration; errors are AWS STS <ErrorResponse>s.
#
# Verified (weed 4.53 at SEAWEEDFS_VERSION below, boto3 1.44, kube-apiserver v1.37, ES256 keys):
# - STS checks the web identity token's signature against the issuer's JWKS (a token signed by
#   another key, with an unknown kid, with alg "none", or with a modified payload is refused),
#   `exp` (required: a token without one is refused; expired -> ExpiredTokenException 400),
#   `nbf`, `iss` (picks the provider; an issuer without one -> AccessDenied), `aud` (one of
#   clientIds, else InvalidParameterValue 400), then the role's trust policy (`oidc:sub` is the
#   token's sub, other claims are `oidc:<claim>`; a team-a token for role team-b -> AccessDenied
#   403). An unknown role -> AccessDenied 403.
# - S3 requests signed with the session credentials (SigV4 + X-Amz-Security-Token, as boto3 and
#   object_store send them) may do exactly what the role's policies allow: team-a gets ListObjectsV2
#   (prefix, delimiter, start-after, continuation), GET (If-Match: 412 when stale; If-None-Match:
#   304; Range), HEAD, PUT (If-None-Match: * -> 412 when the key exists; If-Match -> 412 when
#   stale), DELETE, DeleteObjects, CopyObject, multipart create/upload/complete/abort and
#   CreateBucket on team-a-*, and AccessDenied (403) on team-b-* (also as a CopyObject source);
#   ListBuckets lists only team-a-*. The session key without its token, with another session's
#   token, or with a wrong secret -> 403. Once the session expires -> InvalidAccessKeyId 403.
# - A static identity with "actions": [] gets AccessDenied (403) on every bucket and an empty
#   ListBuckets; anonymous requests get AccessDenied. Static identities keep their "actions".
# - Not verified: whether anything ends a session early (e.g. deleting the ServiceAccount); AWS's
#   `<issuer-host>:sub`/`:aud` condition keys do not exist here -- use `oidc:sub`; `oidc:aud` is
#   only set when `aud` is a string, and Kubernetes sends a list.
#
# Request log: `-vmodule=stats=2` logs every S3 and STS request (weed/s3api/stats.go) in
# DIR/logs/weed.log as
#   I1205 02:40:23.796987 stats.go:42 "admin" PUT "/team-a-raw/in/seed.txt" 200 205.194312ms
#   I1205 02:36:36.265538 stats.go:42 "-" POST "/" 200 3.161168ms           (an STS call)
#   I1205 02:36:36.311308 stats.go:42 "30992fc6c6aa0c8f8aa65de1ab1bd82a" GET "/team-b-raw" 403 4.8ms
# (the static identity's name; an opaque per-session id for session credentials; "-" when
# unauthenticated), so a test can assert that no request reached the server. mini itself sends
# one `"-" GET "/" 403` while starting, before `ready`; nothing else follows unprompted.
#
# Pitfalls handled here:
# - `weed server` (master + volume + filer + S3 without the admin) would do too, but is ready only
#   after 8-10 s: its filer waits for other filers before it registers, and S3 object writes need
#   the filer's lock ring (until then a PUT hangs for seconds and may fail). mini skips that wait.
#   `ready` is printed only once the S3 gateway has logged the lock ring, for the same reason.
# - Each bucket is a volume collection; mini sizes its volume slots from the free disk space (15
#   here), so the 16th bucket with an object would fail with InternalError: -volume.max 500
#   (volumes are not preallocated). (`weed server` defaults to 8 slots and 7 volumes per bucket.)
# - Telemetry to telemetry.seaweedfs.com is on by default: -master.telemetry=false. WebDAV, the
#   admin UI, the Iceberg (8181) and Lance (9101) ports and the admin's fixed legacy port (23646)
#   are off; gRPC ports default to HTTP port + 10000, so all ports are given explicitly (mini
#   exits when a port given on the command line is taken; the start is then retried once).
# - It creates /tmp/seaweedfs-{master,volume,filer,s3,admin}-grpc-<port>.sock and
#   /tmp/seaweedfs-{filer,s3}-<port>.sock (paths fixed in the code), removed here on exit (not
#   when this script is SIGKILLed).
# - It reads security.toml/master.toml/filer.toml from the working directory (DIR here),
#   ~/.seaweedfs, /usr/local/etc/seaweedfs and /etc/seaweedfs, and WEED_* environment variables;
#   mini writes DIR/data/mini.options and dev SSE-S3 keys into DIR/data.
# - Resources: ~160 MB RSS idle, ~230 MB after a few MB of traffic; ~1% CPU idle; an empty data
#   dir is ~450 KB.
#
# Why SeaweedFS: it implements per-identity IAM policies and AssumeRoleWithWebIdentity against an
# arbitrary OIDC issuer (s3s-fs, used by scripts/s3-server.sh, has one static key and no policies).
# Only this pseudo-version is served by the local Go proxy; `go install` refuses it because its
# go.mod has replace directives, so it is built through a throwaway module that repeats the one
# that matters (github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39).
set -euo pipefail

SEAWEEDFS_MODULE="github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION="v0.0.0-20261109003541-7506e5f91cd6"

CACHE="${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}"
CACHED="$CACHE/seaweedfs/$SEAWEEDFS_VERSION/weed"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

LOG_NAME=seaweedfs
# shellcheck source=lib/common.sh
source "$(dirname "$SELF")/lib/common.sh"
weed_bin() { printf '%s\n' "${EVENTPIPE_SEAWEEDFS:-$CACHED}"; }

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------


install_weed() {
  if [[ -x "$CACHED" ]]; then
    log "weed $SEAWEEDFS_VERSION: cached ($CACHED)"
    return
  fi
  command -v go >/dev/null || die "Go is needed to build SeaweedFS (https://go.dev/dl/)"
  local start work
  start="$(now)"
  new_tmpdir eventpipe-seaweedfs-build
  work="$NEW_TMPDIR"
  log "building weed from $SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION (cold: ~5 minutes)"
  # A private build cache (~1.8 GB) that goes away with $work unless EVENTPIPE_GOCACHE is set.
  # CGO is left at Go's default, so a build cache filled by a plain `go build` is reused.
  export GOCACHE="${EVENTPIPE_GOCACHE:-$work/gocache}"
  export GOTOOLCHAIN=local GOWORK=off GOFLAGS="-buildvcs=false -mod=mod"
  (
    cd "$work"
    # SeaweedFS's go.mod replaces github.com/tyler-smith/go-bip39 (whose upstream repository is
    # gone) by cosmos/go-bip39; replace directives of dependencies are ignored, so repeat it.
    printf 'module eventpipe.local/seaweedfs-build\n\ngo 1.26\n\nreplace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0\n' >go.mod
    go get "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" >get.log 2>&1 ||
      { cat get.log >&2; exit 1; }
    go build -ldflags "-s -w" -o "$work/weed" "$SEAWEEDFS_MODULE/weed"
  ) || die "building weed failed"
  mkdir -p "$(dirname "$CACHED")"
  mv -f "$work/weed" "$CACHED.tmp"
  mv -f "$CACHED.tmp" "$CACHED"
  log "weed $SEAWEEDFS_VERSION ($(du -h "$CACHED" | cut -f1)) built in $(elapsed "$start") s: $CACHED"
}

cmd_install() {
  trap cleanup_tmp EXIT
  with_install_lock install_weed
}

# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


WEED_PID=""
SOCKETS=()
stop_server() {
  if [[ -n "$WEED_PID" ]]; then
    kill -KILL "$WEED_PID" 2>/dev/null || true
    wait "$WEED_PID" 2>/dev/null || true
    WEED_PID=""
  fi
  ((${#SOCKETS[@]} == 0)) || rm -f "${SOCKETS[@]}"
  SOCKETS=()
}

# Start `weed mini` with its state in DIR; on success sets S3_URL.
start_server() { # DIR S3_CONFIG IAM_CONFIG
  local dir="$1" s3_config="$2" iam_config="$3" weed mp mg vp vg fp fg sp sg ap ag
  weed="$(weed_bin)"
  [[ -x "$weed" ]] || die "weed not found at $weed; run 'scripts/seaweedfs.sh install'"
  read -r mp mg vp vg fp fg sp sg ap ag <<<"$(free_ports 10)"
  sp="${EVENTPIPE_SEAWEEDFS_PORT:-$sp}"
  rm -rf "$dir/data"
  mkdir -p "$dir/data" "$dir/logs"
  : >"$dir/logs/weed.log"
  SOCKETS=(/tmp/seaweedfs-master-grpc-"$mg".sock /tmp/seaweedfs-volume-grpc-"$vg".sock
    /tmp/seaweedfs-filer-grpc-"$fg".sock /tmp/seaweedfs-s3-grpc-"$sg".sock
    /tmp/seaweedfs-admin-grpc-"$ag".sock /tmp/seaweedfs-filer-"$fp".sock /tmp/seaweedfs-s3-"$sp".sock)
  # -logtostderr: the log goes to DIR/logs/weed.log (else glog writes files in $TMPDIR).
  # -vmodule=stats=2: one line per S3/STS request (weed/s3api/stats.go), nothing else verbose.
  # -volume.max 500: mini sizes the volume slots from the free disk space (15 here), and every
  # bucket that holds an object takes one; volumes are not preallocated.
  # -admin.port.legacy 0: no fixed port (23646) beside the admin's own.
  local -a cmd=("$weed" -logtostderr -vmodule=stats=2 mini
    -ip 127.0.0.1 -ip.bind 127.0.0.1 -dir "$dir/data"
    -master.port "$mp" -master.port.grpc "$mg" -master.telemetry=false
    -master.volumeSizeLimitMB 1024
    -volume.port "$vp" -volume.port.grpc "$vg" -volume.max 500
    -filer.port "$fp" -filer.port.grpc "$fg"
    -s3.port "$sp" -s3.port.grpc "$sg" -s3.port.iceberg 0 -s3.port.lance 0
    -s3.config "$s3_config" -s3.iam.config "$iam_config"
    -webdav=false -admin.ui=false -admin.port "$ap" -admin.port.grpc "$ag" -admin.port.legacy 0)
  (
    cd "$dir"
    if command -v setpriv >/dev/null; then
      exec setpriv --pdeathsig KILL -- "${cmd[@]}" >>"$dir/logs/weed.log" 2>&1 </dev/null
    else
      exec "${cmd[@]}" >>"$dir/logs/weed.log" 2>&1 </dev/null
    fi
  ) &
  WEED_PID=$!
  echo "$WEED_PID" >"$dir/weed.pid"
  # Ready = the S3 port answers, the volume server has registered with the master, and the S3
  # gateway has received the filer lock ring: object writes take a per-key lock on the filer, and
  # until the filer has registered with the master there is no lock server (a PUT then hangs for
  # seconds and may fail). Nothing but this log line shows the ring.
  local deadline=$((SECONDS + 60)) url="http://127.0.0.1:$sp"
  until curl -fsS -o /dev/null "$url/status" 2>/dev/null &&
    curl -fsS "http://127.0.0.1:$mp/dir/status" 2>/dev/null | grep -q '"Max":[1-9]' &&
    grep -q "LockRing: s3@127.0.0.1:$sg received ring update" "$dir/logs/weed.log"; do
    if ! kill -0 "$WEED_PID" 2>/dev/null; then
      # E.g. a port taken between free_ports and the bind: mini exits when a port given on the
      # command line is taken (it only moves ports it chose itself).
      log "weed exited during start-up; last lines of $dir/logs/weed.log:"
      tail -n 15 "$dir/logs/weed.log" >&2 || true
      ! grep -q '^F.*fail to load config file' "$dir/logs/weed.log" || die "bad S3 config $s3_config"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "weed not ready after 60 s; last lines of $dir/logs/weed.log:"
      tail -n 15 "$dir/logs/weed.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  # SeaweedFS only logs the parts of IAM_CONFIG it rejects and runs on without them (without STS
  # at all when the file does not parse). The IAM config is loaded before the S3 port opens.
  # (A bad S3_CONFIG is fatal: weed exits.)
  local rejected
  rejected="$(grep -E 'Failed to (load IAM configuration|create provider|register provider|create policy|load role|create role)|Skipping provider|Validation failed for provider' "$dir/logs/weed.log" || true)"
  if [[ -n "$rejected" ]]; then
    printf '%s\n' "$rejected" >&2
    die "SeaweedFS rejected (part of) $iam_config (see above)"
  fi
  printf 's3=%s master=%s volume=%s filer=%s admin=%s grpc=%s,%s,%s,%s,%s\n' \
    "$sp" "$mp" "$vp" "$fp" "$ap" "$mg" "$vg" "$fg" "$sg" "$ag" >"$dir/ports"
  S3_URL="$url"
}

cmd_run() { # DIR S3_CONFIG IAM_CONFIG
  (($# == 3)) || die "usage: seaweedfs.sh run DIR S3_CONFIG IAM_CONFIG"
  local dir="$1" s3_config iam_config start attempt
  [[ -f "$2" ]] || die "S3 config $2 not found"
  [[ -f "$3" ]] || die "IAM config $3 not found"
  s3_config="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
  iam_config="$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"
  start="$(now)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  # shellcheck disable=SC2064
  trap "stop_server; rm -f '$dir/weed.pid'" EXIT
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP
  for attempt in 1 2; do
    if start_server "$dir" "$s3_config" "$iam_config"; then break; fi
    stop_server
    # A fixed EVENTPIPE_SEAWEEDFS_PORT that is taken will not free itself.
    ((attempt < 2)) && [[ -z "${EVENTPIPE_SEAWEEDFS_PORT:-}" ]] ||
      die "SeaweedFS did not start (log: $dir/logs/weed.log)"
    log "retrying start-up"
  done
  log "ready in $(elapsed "$start") s: $S3_URL ($(cat "$dir/ports"); log: $dir/logs/weed.log)"
  serve_until_stdin_closes "$S3_URL" "$WEED_PID" || {
    log "weed exited; last lines of $dir/logs/weed.log:"
    tail -n 15 "$dir/logs/weed.log" >&2 || true
    exit 1
  }
}

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "$cmd" in
    install) cmd_install ;;
    bin) weed_bin ;;
    run) cmd_run "$@" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
