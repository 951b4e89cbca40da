#!/usr/bin/env bash
# The S3-compatible server the tests use: s3s-fs, an S3 API over a plain directory that checks
# SigV4 signatures, conditional writes and multipart uploads.
#
#   scripts/s3-server.sh install        build it once into the cache (about 4 minutes)
#   scripts/s3-server.sh path           print the binary's path
#   scripts/s3-server.sh start DIR PORT run it in the foreground on 127.0.0.1:PORT with data in DIR
#                                       (access key "eventpipe", secret "eventpipe-secret")
set -euo pipefail

version=0.14.1
cache=${EVENTPIPE_CACHE:-$HOME/.cache/eventpipe}
root=$cache/s3s-fs-$version
binary=$root/bin/s3s-fs

case ${1:-} in
  install)
    if [ -x "$binary" ]; then
      echo "s3s-fs $version: $binary"
      exit 0
    fi
    started=$(date +%s)
    cargo install "s3s-fs@$version" --features binary --locked --root "$root" --quiet
    echo "s3s-fs $version built in $(( $(date +%s) - started ))s: $binary"
    ;;
  path)
    echo "$binary"
    ;;
  start)
    dir=${2:?data directory}
    port=${3:?port}
    mkdir -p "$dir"
    exec "$binary" --host 127.0.0.1 --port "$port" \
      --access-key eventpipe --secret-key eventpipe-secret "$dir"
    ;;
  *)
    echo "usage: $0 install | path | start DIR PORT" >&2
    exit 2
    ;;
esac
