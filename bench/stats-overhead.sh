#!/usr/bin/env bash
# What per-request recording (stats = true: per-command counters and latency
# histograms, per-slot ops, the slowlog) costs the proxy's CPU per request.
#
# Two proxies over the same two Redis groups, both pinned to SERVER_CPU like
# bench/run.sh's: one started with `--stats false`, one with `--stats true`.
# Each round runs every test once against each (the order flips every round:
# off-on, on-off, ...), so a slow phase of the machine hits both alike; the
# proxy being measured is the only one with work. CPU time is the proxy's
# own on-CPU time in nanoseconds (/proc/<pid>/task/*/schedstat), divided by
# the requests of that run. Reported: the medians per test and mode, and
# on/off.
#
# Environment (defaults in brackets), besides lib.sh's:
#   ROUNDS [10]        runs per test and mode
#   TESTS [set_p1 get_p1 set_p16 get_p16 mset10 mget10]
#   N_P1 [100000], N_P16 [1000000], N_MULTI [100000]: requests per run
#   CLIENTS [50], KEYSPACE [100000]: redis-benchmark -c / -r
#   LIMIT [1.05]       on/off above this fails the run (exit status 1)
#   SHARDIS_PROXY_BIN  use this binary instead of cargo build --release
#   OUT [bench/results/stats-overhead-<timestamp>]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-10}
TESTS=${TESTS:-set_p1 get_p1 set_p16 get_p16 mset10 mget10}
N_P1=${N_P1:-100000}
N_P16=${N_P16:-1000000}
N_MULTI=${N_MULTI:-100000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
LIMIT=${LIMIT:-1.05}
OUT=${OUT:-$BENCH_DIR/results/stats-overhead-$(date +%Y%m%d-%H%M%S)}

need redis-benchmark redis-cli taskset python3 curl
mkdir -p "$OUT"
RAW=$OUT/raw.csv

for t in $TESTS; do test_pipeline "$t" >/dev/null; done

# On-CPU nanoseconds of every thread of a process.
cpu_ns() {
    cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f\n", s}'
}

# ---------------------------------------------------------------- setup
build_proxy
start_etcd
start_redis redis1
R1_PORT=$REDIS_PORT
start_redis redis2
R2_PORT=$REDIS_PORT
put_topology "127.0.0.1:$R1_PORT" "127.0.0.1:$R2_PORT"
PROXY_LOG_NAME=proxy-off.log start_proxy --threads 1 --stats false
OFF_PORT=$PROXY_PORT OFF_PID=$PROXY_PID
PROXY_LOG_NAME=proxy-on.log start_proxy --threads 1 --stats true
ON_PORT=$PROXY_PORT ON_PID=$PROXY_PID
{
    echo "date: $(date -Is)"
    echo "git: $(git -C "$ROOT_DIR" rev-parse HEAD 2>/dev/null || echo none) $(git -C "$ROOT_DIR" status --porcelain 2>/dev/null | wc -l) changed files"
    echo "proxy: $PROXY_BIN"
    echo "rounds=$ROUNDS clients=$CLIENTS keyspace=$KEYSPACE n_p1=$N_P1 n_p16=$N_P16 n_multi=$N_MULTI"
    echo "tests: $TESTS; client cpu $CLIENT_CPU, server cpu $SERVER_CPU"
} >"$OUT/env.txt"
log "prefill: $(python3 "$BENCH_DIR/prefill.py" "$OFF_PORT" "$KEYSPACE")"

bench_once() { # mode test [requests] -> "requests rps cpu_ns"
    local mode=$1 test=$2 port pid pipeline n out c0 c1
    if [ "$mode" = on ]; then port=$ON_PORT pid=$ON_PID; else port=$OFF_PORT pid=$OFF_PID; fi
    pipeline=$(test_pipeline "$test")
    n=${3:-$(test_requests "$test")}
    local -a cmd
    mapfile -t cmd < <(test_command "$test")
    check_alive "$pid" "shardis-proxy ($mode)" "$WORK_DIR/proxy-$mode.log"
    c0=$(cpu_ns "$pid")
    out=$(taskset -c "$CLIENT_CPU" redis-benchmark -h 127.0.0.1 -p "$port" \
        -c "$CLIENTS" -r "$KEYSPACE" -n "$n" -P "$pipeline" --csv "${cmd[@]}" 2>&1) ||
        die "redis-benchmark failed against the proxy ($mode): $out"
    c1=$(cpu_ns "$pid")
    out=$(printf '%s\n' "$out" | grep '^"' | grep -v '^"test"' | tail -n 1)
    [ -n "$out" ] || die "no result from redis-benchmark ($mode, $test)"
    IFS=, read -r _name rps _rest <<<"$(printf '%s' "$out" | tr -d '"')"
    echo "$n $rps $((c1 - c0))"
}

log "warm-up"
for mode in off on; do
    bench_once "$mode" get_p1 20000 >/dev/null
    bench_once "$mode" mget10 5000 >/dev/null
done

echo "round,test,mode,requests,rps,cpu_ns" >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    order="off on"
    [ $((round % 2)) -eq 0 ] && order="on off"
    for t in $TESTS; do
        for mode in $order; do
            read -r n rps ns <<<"$(bench_once "$mode" "$t")"
            echo "$round,$t,$mode,$n,$rps,$ns" >>"$RAW"
            log "round $round/$ROUNDS $t recording $mode: $rps rps, $(python3 -c "print('%.2f' % ($ns / 1000 / $n))") µs CPU/req"
        done
    done
done

set +e
python3 - "$RAW" "$LIMIT" <<'EOF' | tee "$OUT/summary.md"
import csv, statistics, sys

raw, limit = sys.argv[1], float(sys.argv[2])
cpu, rps = {}, {}
for r in csv.DictReader(open(raw)):
    key = (r["test"], r["mode"])
    cpu.setdefault(key, []).append(int(r["cpu_ns"]) / 1000 / int(r["requests"]))
    rps.setdefault(key, []).append(float(r["rps"]))
tests = list(dict.fromkeys(t for t, _ in cpu))
n = min(len(v) for v in cpu.values())
print(f"Proxy CPU µs per request, recording off (--stats false) and on: medians of {n} "
      "alternating runs per mode (min–max in brackets); requests/s medians.\n")
print("| test | CPU µs/req off | CPU µs/req on | on/off | rps off | rps on |")
print("|---|---|---|---|---|---|")
worst = 0.0
for t in tests:
    off, on = cpu[(t, "off")], cpu[(t, "on")]
    ratio = statistics.median(on) / statistics.median(off)
    worst = max(worst, ratio)
    print(f"| {t} | {statistics.median(off):.2f} ({min(off):.2f}–{max(off):.2f}) "
          f"| {statistics.median(on):.2f} ({min(on):.2f}–{max(on):.2f}) | **{ratio:.3f}** "
          f"| {statistics.median(rps[(t, 'off')]):,.0f} | {statistics.median(rps[(t, 'on')]):,.0f} |")
verdict = "PASS" if worst <= limit else "FAIL"
print(f"\n{verdict}: the largest on/off is {worst:.3f} (limit {limit}).")
sys.exit(0 if worst <= limit else 1)
EOF
status=${PIPESTATUS[0]}
set -e
log "raw results: $RAW; summary: $OUT/summary.md"
exit "$status"
