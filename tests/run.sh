#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests that start real
# redis-server and etcd processes on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for bin in redis-server etcd protoc python3 node; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
[ -d tests/browser/node_modules/playwright-core ] || missing+=("playwright-core (npm ci --prefix tests/browser)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} — run 'sudo bash .ci/run' once, or apt-get install redis-server etcd-server protobuf-compiler chromium nodejs npm" >&2
  exit 1
fi

# The web UI's browser test (tests/tests/it/ui_browser.rs) leaves its
# screenshots here; say where, whatever the outcome.
screenshots="${CARGO_TARGET_DIR:-target}/ui-screenshots"
case "$screenshots" in /*) ;; *) screenshots="$PWD/$screenshots" ;; esac
rm -rf "$screenshots"
report_screenshots() {
  if [ -d "$screenshots" ]; then
    echo "web UI screenshots (browser test): $screenshots"
    ls -1 "$screenshots" | sed 's/^/  /'
  fi
}
trap report_screenshots EXIT

# Integration tests run the real binaries: build them first, together with
# the test targets, so that both share one feature resolution (a bins-only
# build resolves features without dev-dependencies and compiles tokio and
# everything above it twice).
cargo build --workspace --all-targets
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
