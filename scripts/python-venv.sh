#!/usr/bin/env bash
# Creates (once) a virtualenv holding a requirements file's packages and prints its python.
# Venvs live outside the clone, keyed by the file's content, so they are reused across runs.
#
#   scripts/python-venv.sh REQUIREMENTS_FILE
set -euo pipefail

requirements=${1:?requirements file}
cache=${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}
python_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
key=py$python_version-$(sha256sum "$requirements" | cut -c1-12)
venv=$cache/venv-$key

if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv.tmp" >/dev/null 2>&1; then
    rm -rf "$venv.tmp"
    # Debian splits venv support into its own package.
    (apt-get update -qq && apt-get install -y -qq python3-venv) >&2
    python3 -m venv "$venv.tmp"
  fi
  "$venv.tmp/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  rm -rf "$venv"
  mv "$venv.tmp" "$venv"
  # The venv's scripts name the temporary path; the interpreter itself does not care.
fi
echo "$venv/bin/python"
