#!/usr/bin/env bash
# What per-request recording (stats = true: per-command counters and latency
# histograms, per-slot ops, the slowlog) costs the proxy: bench/run.sh run
# PAIRS times with `--stats false` and `--stats true`, alternating (off, on,
# off, on, ...), so slow phases of a shared machine hit both alike; then the
# medians of the proxy's CPU time per request and of its requests/s per test.
#
# Environment (defaults in brackets), besides everything bench/run.sh takes:
#   PAIRS [5]          off/on pairs of bench/run.sh runs (ROUNDS=1 each)
#   TESTS [set_p16 get_p16 get_p1 mget10]
#   N_P16 [1000000], N_P1 [100000], N_MULTI [100000]: enough requests per run
#                      for the CPU ticks (1/100 s) to be well within 1%
#   OUT [bench/results/stats-overhead-<timestamp>]
# Prints a markdown table; exit status 1 when a test's CPU per request with
# recording on is more than 5% above recording off.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)

PAIRS=${PAIRS:-5}
export TESTS=${TESTS:-set_p16 get_p16 get_p1 mget10}
export N_P16=${N_P16:-1000000}
export N_P1=${N_P1:-100000}
export N_MULTI=${N_MULTI:-100000}
export ROUNDS=1
OUT=${OUT:-$BENCH_DIR/results/stats-overhead-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

# One release build for every run.
if [ -z "${SHARDIS_PROXY_BIN:-}" ]; then
    (cd "$ROOT_DIR" && cargo build --release -p shardis-proxy) >&2
    export SHARDIS_PROXY_BIN=${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/shardis-proxy
fi
extra=${PROXY_ARGS:-}

for pair in $(seq 1 "$PAIRS"); do
    for mode in off on; do
        flag=false
        [ "$mode" = on ] && flag=true
        echo "[stats-overhead] pair $pair/$PAIRS, recording $mode" >&2
        # bench/run.sh exits 1 when a twemproxy target is missed: that is
        # not what is measured here.
        PROXY_ARGS="$extra --stats $flag" RESULTS_DIR="$OUT/$pair-$mode" \
            "$BENCH_DIR/run.sh" >"$OUT/$pair-$mode.log" 2>&1 || true
        [ -s "$OUT/$pair-$mode/raw.csv" ] || {
            tail -n 30 "$OUT/$pair-$mode.log" >&2
            echo "[stats-overhead] run $pair-$mode produced no results" >&2
            exit 1
        }
    done
done

python3 - "$OUT" "$(getconf CLK_TCK)" <<'EOF' | tee "$OUT/summary.md"
import csv, glob, os, statistics, sys

out, clk = sys.argv[1], int(sys.argv[2])
cpu = {}   # (test, mode) -> [µs/req]
rps = {}
for path in sorted(glob.glob(os.path.join(out, "*-o*/raw.csv"))):
    mode = os.path.basename(os.path.dirname(path)).split("-")[1]
    for r in csv.DictReader(open(path)):
        if r["target"] != "proxy" or r["proxy_ticks"] == "":
            continue
        key = (r["test"], mode)
        cpu.setdefault(key, []).append(float(r["proxy_ticks"]) / clk / int(r["requests"]) * 1e6)
        rps.setdefault(key, []).append(float(r["rps"]))
tests = sorted({t for t, _ in cpu}, key=lambda t: ["set_p1", "get_p1", "set_p16", "get_p16", "mset10", "mget10"].index(t)
               if t in ["set_p1", "get_p1", "set_p16", "get_p16", "mset10", "mget10"] else 99)
print(f"Proxy CPU µs per request and requests/s, medians of {min(len(v) for v in cpu.values())} "
      "alternating bench/run.sh runs per mode (min–max in brackets).\n")
print("| test | CPU µs/req off | CPU µs/req on | on/off | rps off | rps on |")
print("|---|---|---|---|---|---|")
worst = 0.0
for t in tests:
    off, on = cpu.get((t, "off"), []), cpu.get((t, "on"), [])
    if not off or not on:
        continue
    ratio = statistics.median(on) / statistics.median(off)
    worst = max(worst, ratio)
    ro, rn = rps[(t, "off")], rps[(t, "on")]
    print(f"| {t} | {statistics.median(off):.2f} ({min(off):.2f}–{max(off):.2f}) "
          f"| {statistics.median(on):.2f} ({min(on):.2f}–{max(on):.2f}) | {ratio:.3f} "
          f"| {statistics.median(ro):,.0f} | {statistics.median(rn):,.0f} |")
print()
print(f"Worst on/off: {worst:.3f} (target: at most 1.05): {'PASS' if worst <= 1.05 else 'FAIL'}")
sys.exit(0 if worst <= 1.05 else 1)
EOF
