#!/usr/bin/env bash
# Static checks of the Helm chart in charts/eventpipe, for several value sets: `helm lint
# --strict`, `helm template` validated by kubernetes-validate --strict against the Kubernetes
# $KUBE_VERSION schemas, and assertions on the rendered objects (tests/chart/checks.py). Prints one
# line per check, then `chart checks: N passed, M failed`; exits non-zero when any failed.
# Installs Helm (scripts/helm.sh) and a Python venv (tests/chart-requirements.txt) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION=1.33.0
RELEASE_NAMESPACE=eventpipe-system
chart=charts/eventpipe
helm=$(scripts/helm.sh)
py=$(scripts/python-venv.sh tests/chart-requirements.txt)
work=$(mktemp -d "${TMPDIR:-/tmp}/eventpipe-chart.XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# check NAME COMMAND...: runs COMMAND, prints "ok" or "FAIL" and, on failure, its output.
check() {
  local name=$1
  shift
  if "$@" >"$work/output" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/       /' "$work/output"
  fi
}

crd_copy() {
  cmp crds/eventpipe.dev_eventpipelines.yaml "$chart/files/crds/eventpipe.dev_eventpipelines.yaml" ||
    { echo "the chart's CRD differs from crds/; run: cp crds/eventpipe.dev_eventpipelines.yaml $chart/files/crds/"; return 1; }
}

# render OUT HELM_ARGS...
render() {
  local out=$1
  shift
  "$helm" template eventpipe "$chart" --namespace "$RELEASE_NAMESPACE" --kube-version "$KUBE_VERSION" \
    --include-crds "$@" >"$out"
}

# Every object of a built-in kind (the CRD too) must match its schema, without unknown fields;
# custom resources (the ServiceMonitor) are left to checks.py. --quiet prints only failures and
# "no schema" warnings, so any output fails the check as well.
validate() {
  local report status=0
  "$py" tests/chart/checks.py builtin "$1" >"$work/builtin.yaml" || return 1
  report=$("$py" -m kubernetes_validate --strict --quiet -k "$KUBE_VERSION" "$work/builtin.yaml") || status=$?
  echo "$report"
  [[ $status == 0 && -z $report ]]
}

# value_set NAME EXPECTATIONS HELM_ARGS...: EXPECTATIONS are checks.py options stating what the
# value set must render (watch namespace, leader election, ServiceMonitor, transformer image).
value_set() {
  local name=$1 out=$work/$1.yaml expected check_name
  read -ra expected <<<"--release-namespace $RELEASE_NAMESPACE $2"
  shift 2
  check "$name: helm lint --strict" "$helm" lint --strict --quiet --kube-version "$KUBE_VERSION" \
    --namespace "$RELEASE_NAMESPACE" "$chart" "$@"
  check "$name: helm template" render "$out" "$@"
  check "$name: kubernetes-validate --strict (Kubernetes $KUBE_VERSION)" validate "$out"
  for check_name in rbac leader-election deployment service-monitor crd availability; do
    check "$name: $check_name" "$py" tests/chart/checks.py "$check_name" "$out" "${expected[@]}"
  done
}

check "chart CRD is a copy of crds/eventpipe.dev_eventpipelines.yaml" crd_copy
check "chart README documents every value" "$py" tests/chart/checks.py documented "$chart"
value_set default ""
value_set namespaced "--watch-namespace eventpipe-demo" -f examples/cluster/namespace-install.yaml
value_set two-namespaces "--watch-namespace team-a,team-b" --set "watchNamespaces={team-a,team-b}"
value_set namespace-of-earlier-charts "--watch-namespace legacy" --set watchNamespace=legacy
value_set leader-election "--leader on" --set replicaCount=2
value_set leader-election-forced "--leader on" --set leaderElection.enabled=true
value_set service-monitor "--service-monitor on" --set serviceMonitor.enabled=true
value_set crd-not-kept "--crd on" --set crds.keep=false
value_set crd-managed-elsewhere "--crd off" --set crds.enabled=false
full_transformer=registry.example.com/data/eventpipe-transformer@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
value_set full "--watch-namespace data --leader on --service-monitor on --transformer-image $full_transformer --job-service-account eventpipe-jobs" \
  -f tests/chart/values-full.yaml

echo "chart checks: $passed passed, $failed failed"
((failed == 0))
