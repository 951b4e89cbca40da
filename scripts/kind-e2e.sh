#!/usr/bin/env bash
# End to end on a local kind cluster, for machines with Docker. Builds both images and loads them
# into kind, runs LocalStack in the cluster as the S3 service (examples/cluster/localstack.yaml in
# namespace eventpipe-demo), creates the buckets, installs the chart, applies
# examples/cluster/user-settings-localstack.yaml, uploads the sample CSV files of one day, waits for
# the pipeline to become Ready and its Parquet output to be committed, checks the row counts in
# status.partitions against the sample, and reads the Parquet back with DuckDB.
#
#   scripts/kind-e2e.sh [--name CLUSTER]
#
# Needs docker, kind, kubectl, the AWS CLI (v2), curl and Python 3; Helm comes from
# scripts/helm.sh, DuckDB from scripts/python-venv.sh.
#
# Environment:
#   KIND_CLUSTER          cluster name when --name is not given (default eventpipe-e2e); an
#                         existing cluster is reused
#   KIND_NODE_IMAGE       node image of a new cluster (default below: the Kubernetes version the
#                         operator is built for)
#   EVENTPIPE_E2E_KEEP    1: keep a cluster this script created (default: delete it at the end)
#   EVENTPIPE_E2E_VALUES  an extra values file for the chart, e.g. examples/cluster/namespace-install.yaml
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-eventpipe-e2e}
while (($#)); do
  case $1 in
    --name) CLUSTER=${2:?--name needs a cluster name}; shift 2 ;;
    --name=*) CLUSTER=${1#--name=}; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) printf 'unknown argument: %s (try --help)\n' "$1" >&2; exit 2 ;;
  esac
done
NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
TAG=e2e
DEMO=eventpipe-demo
SYSTEM=eventpipe-system
ENDPOINT=http://localhost:4566
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_PAGER=""

log() { printf '[kind-e2e] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
k() { kubectl --context "kind-$CLUSTER" "$@"; }
s3() { aws --endpoint-url "$ENDPOINT" s3 "$@"; }

for tool in docker kind kubectl aws curl python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
helm=$(scripts/helm.sh)
py=$(scripts/python-venv.sh tests/requirements.txt)
# The demo pipeline's S3 is LocalStack's endpoint, which the installation must allow.
values=(--set image.tag="$TAG" --set transformerImage.tag="$TAG"
  --set-json 's3Allowances={"*":{"endpoints":["http://localstack.eventpipe-demo.svc:4566"]}}')
if [[ -n ${EVENTPIPE_E2E_VALUES:-} ]]; then values+=(-f "$EVENTPIPE_E2E_VALUES"); fi

created=0
port_forward=
output=$(mktemp -d)
cleanup() {
  local status=$?
  rm -rf "$output"
  if [[ -n $port_forward ]]; then kill "$port_forward" 2>/dev/null || true; fi
  if ((status != 0)) && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "failed; the pipeline, its Jobs and the operator's log:"
    k -n "$DEMO" describe evp user-settings >&2 || true
    k -n "$DEMO" get jobs,pods >&2 || true
    k -n "$SYSTEM" logs deployment/eventpipe --tail 50 >&2 || true
  fi
  if ((created)) && [[ ${EVENTPIPE_E2E_KEEP:-0} != 1 ]]; then
    kind delete cluster --name "$CLUSTER"
  fi
}
trap cleanup EXIT

if ! kind get clusters | grep -qx "$CLUSTER"; then
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --wait 2m
  created=1
fi

log "building the images (the first, cold build compiles the workspace in release mode)"
docker build --target operator -t "eventpipe:$TAG" .
docker build --target transformer -t "eventpipe-transformer:$TAG" .
kind load docker-image --name "$CLUSTER" "eventpipe:$TAG" "eventpipe-transformer:$TAG"

log "starting LocalStack in namespace $DEMO"
k create namespace "$DEMO" --dry-run=client -o yaml | k apply -f -
k -n "$DEMO" apply -f examples/cluster/localstack.yaml
k -n "$DEMO" rollout status deployment/localstack --timeout 5m
k -n "$DEMO" port-forward service/localstack 4566:4566 >/dev/null &
port_forward=$!
for _ in $(seq 50); do
  curl -fsS "$ENDPOINT/_localstack/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$ENDPOINT/_localstack/health" >/dev/null || die "no LocalStack at $ENDPOINT (is port 4566 taken?)"
for bucket in user-events user-parquet; do
  aws --endpoint-url "$ENDPOINT" s3api head-bucket --bucket "$bucket" 2>/dev/null || s3 mb "s3://$bucket"
done

log "installing the chart into $SYSTEM"
# The chart installs and upgrades the CRD (crds.enabled), so a reused cluster stays current.
"$helm" upgrade --install eventpipe charts/eventpipe --kube-context "kind-$CLUSTER" \
  --namespace "$SYSTEM" --create-namespace "${values[@]}" --wait --timeout 5m

log "applying the pipeline and uploading one day of events"
k -n "$DEMO" apply -f examples/cluster/s3-credentials-secret.yaml \
  -f examples/cluster/user-settings-localstack.yaml
# Yesterday (UTC): a complete day, inside the pipeline's lookbackDays.
partition=$(date -u -d '1 day ago' +year=%Y/month=%m/day=%d 2>/dev/null || date -u -v-1d +year=%Y/month=%m/day=%d)
s3 cp --recursive examples/data/year=2026/month=11/day=24/ "s3://user-events/$partition/"

k -n "$DEMO" wait --for=condition=Ready evp/user-settings --timeout=5m
log "waiting for s3://user-parquet/user-settings/$partition/_manifest.json"
deadline=$((SECONDS + 300))
until s3 ls "s3://user-parquet/user-settings/$partition/_manifest.json" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || die "no output committed for $partition after 5 minutes"
  sleep 5
done
k -n "$DEMO" get evp user-settings
s3 ls --recursive s3://user-parquet/user-settings/

sample=examples/data/year=2026/month=11/day=24
rows=$(for file in "$sample"/*.csv; do tail -n +2 "$file"; done | grep -c .)
users=$(for file in "$sample"/*.csv; do tail -n +2 "$file"; done | cut -d, -f1 | sort -u | grep -c .)
status() { k -n "$DEMO" get evp user-settings -o jsonpath="{.status.partitions[?(@.partition==\"$partition\")].$1}"; }
counts="$(status rowsRead) $(status rowsRejected) $(status rowsWritten)"
[[ $counts == "$rows 0 $users" ]] ||
  die "status.partitions for $partition says read/rejected/written $counts; the sample has $rows rows of $users users"

s3 cp --recursive --exclude '*' --include 'part-*.parquet' "s3://user-parquet/user-settings/$partition/" "$output/" >/dev/null
read -r parquet_users parquet_settings < <("$py" - "$output" <<'EOF'
import sys, duckdb
users, settings = duckdb.sql(
    f"SELECT count(*), sum(cardinality(settings)) FROM read_parquet('{sys.argv[1]}/*.parquet')"
).fetchall()[0]
print(users, settings)
EOF
)
((parquet_users == users)) || die "the Parquet holds $parquet_users users; the sample has $users"
((parquet_settings > 0)) || die "the Parquet's settings maps are empty"
log "passed: $rows rows read, $users users with $parquet_settings settings written and read back"
