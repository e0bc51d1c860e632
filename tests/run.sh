#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start real
# redis-server and etcd processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for bin in redis-server etcd protoc python3; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} — run 'sudo bash .ci/run' once, or apt-get install redis-server etcd-server protobuf-compiler" >&2
  exit 1
fi

# Integration tests run the real binaries: build them first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
