#!/usr/bin/env bash
# Throughput, latency and CPU per request: one Redis directly vs twemproxy vs
# shardis-proxy, with redis-benchmark. See bench/README.md.
#
# Setup: etcd, two redis-servers (two groups, slots 0-511 and 512-1023),
# twemproxy with one pool over both, shardis-proxy --threads 1. The servers and
# both proxies share core SERVER_CPU; redis-benchmark runs on core CLIENT_CPU.
# "direct" is the first of the two redis-servers.
#
# Environment (defaults in brackets):
#   ROUNDS [5]            runs per test and target; medians are reported
#   CLIENTS [50]          redis-benchmark -c
#   KEYSPACE [100000]     redis-benchmark -r, and the keys prefilled
#   N_P1 [50000]          requests per run at -P 1
#   N_P16 [300000]        requests per run at -P 16
#   N_MULTI [50000]       requests per run of MSET / MGET (10 keys each)
#   MULTI_PIPELINE [1]    -P for MSET / MGET
#   TESTS [set_p1 get_p1 set_p16 get_p16 mset10 mget10]
#   SKIP_PROXY [0]        1: measure direct and twemproxy only
#   SHARDIS_PROXY_BIN     use this binary instead of cargo build --release
#   PROXY_ARGS            extra arguments for the proxy
#   TWEMPROXY_ARGS        extra arguments for nutcracker (e.g. "-m 512")
#   CLIENT_CPU [0], SERVER_CPU [1]
#   RESULTS_DIR [bench/results/run-<timestamp>]
#   KEEP_WORK [0]         1: keep the temp dir with the logs and configs
# Exit status: 0 when every target is met (or the proxy was skipped), 1 otherwise.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${ROUNDS:-5}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
N_P1=${N_P1:-50000}
N_P16=${N_P16:-300000}
N_MULTI=${N_MULTI:-50000}
MULTI_PIPELINE=${MULTI_PIPELINE:-1}
TESTS=${TESTS:-set_p1 get_p1 set_p16 get_p16 mset10 mget10}
SKIP_PROXY=${SKIP_PROXY:-0}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/run-$(date +%Y%m%d-%H%M%S)}

need redis-benchmark redis-cli nutcracker taskset python3 curl
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 cores; pinning cannot separate client and servers"
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$RESULTS_DIR"
RAW=$RESULTS_DIR/raw.csv

for t in $TESTS; do test_pipeline "$t" >/dev/null; done

# ---------------------------------------------------------------- setup
if [ "$SKIP_PROXY" != 1 ]; then build_proxy; fi

start_etcd
start_redis redis1
R1_PORT=$REDIS_PORT R1_PID=$REDIS_PID
start_redis redis2
R2_PORT=$REDIS_PORT R2_PID=$REDIS_PID
put_topology "127.0.0.1:$R1_PORT" "127.0.0.1:$R2_PORT"
start_twemproxy "127.0.0.1:$R1_PORT" "127.0.0.1:$R2_PORT"
TARGETS=(direct twemproxy)
PROXY_PID=
if [ "$SKIP_PROXY" != 1 ]; then
    start_proxy --threads 1
    TARGETS+=(proxy)
fi

target_port() {
    case $1 in
    direct) echo "$R1_PORT" ;;
    twemproxy) echo "$TWEM_PORT" ;;
    proxy) echo "$PROXY_PORT" ;;
    esac
}

{
    echo "date: $(date -Is)"
    echo "git: $(git -C "$ROOT_DIR" rev-parse HEAD 2>/dev/null || echo none) $(git -C "$ROOT_DIR" status --porcelain 2>/dev/null | wc -l) changed files"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
    echo "kernel: $(uname -r)"
    echo "redis: $(redis-server --version)"
    echo "twemproxy: $(nutcracker --version 2>&1 | head -1)"
    echo "proxy: ${PROXY_BIN:-skipped}"
    echo "rounds=$ROUNDS clients=$CLIENTS keyspace=$KEYSPACE n_p1=$N_P1 n_p16=$N_P16 n_multi=$N_MULTI multi_pipeline=$MULTI_PIPELINE"
    echo "tests: $TESTS"
    echo "client cpu $CLIENT_CPU, server cpu $SERVER_CPU, CLK_TCK $CLK_TCK"
} >"$RESULTS_DIR/env.txt"
cp "$WORK_DIR/nutcracker.yml" "$RESULTS_DIR/"

# ---------------------------------------------------------------- prefill
# Every key redis-benchmark can pick (key:000000000000 .. below KEYSPACE) is
# written directly to redis1, and through each router, so that every GET/MGET
# hits whatever the router's key placement is: the two routers place keys
# differently, so the servers end up holding the union of both placements.
for x in "${TARGETS[@]}"; do
    log "prefill through $x: $(python3 "$BENCH_DIR/prefill.py" "$(target_port "$x")" "$KEYSPACE")"
done
log "keys: redis1 $(redis-cli -p "$R1_PORT" dbsize), redis2 $(redis-cli -p "$R2_PORT" dbsize)"

# ---------------------------------------------------------------- runs
proc_ticks() { # prints "proxy twem redis" ticks; "-" for a missing proxy
    local p=- t r
    if [ -n "$PROXY_PID" ]; then p=$(cpu_ticks "$PROXY_PID"); fi
    t=$(cpu_ticks "$TWEM_PID")
    r=$(($(cpu_ticks "$R1_PID") + $(cpu_ticks "$R2_PID")))
    echo "$p $t $r"
}

# bench TARGET TEST REQUESTS -> prints one CSV line of redis-benchmark's
bench_once() {
    local target=$1 test=$2 n=$3 port pipeline out
    port=$(target_port "$target")
    pipeline=$(test_pipeline "$test")
    local -a cmd
    mapfile -t cmd < <(test_command "$test")
    out=$(taskset -c "$CLIENT_CPU" redis-benchmark -h 127.0.0.1 -p "$port" \
        -c "$CLIENTS" -r "$KEYSPACE" -n "$n" -P "$pipeline" --csv "${cmd[@]}" 2>&1) ||
        die "redis-benchmark failed against $target: $out"
    # The data line is the last line starting with a quote that is not the header.
    out=$(printf '%s\n' "$out" | grep '^"' | grep -v '^"test"' | tail -n 1)
    [ -n "$out" ] || die "no result from redis-benchmark against $target ($test)"
    echo "$out"
}

log "warm-up"
for x in "${TARGETS[@]}"; do
    bench_once "$x" get_p1 20000 >/dev/null
    bench_once "$x" mget10 5000 >/dev/null
done

echo "round,test,target,pipeline,requests,rps,avg_ms,p50_ms,p95_ms,p99_ms,max_ms,wall_s,proxy_ticks,twem_ticks,redis_ticks" >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    for t in $TESTS; do
        n=$(test_requests "$t")
        pipeline=$(test_pipeline "$t")
        for x in "${TARGETS[@]}"; do
            check_alive "$TWEM_PID" nutcracker "$WORK_DIR/nutcracker.log"
            if [ -n "$PROXY_PID" ]; then check_alive "$PROXY_PID" shardis-proxy "$WORK_DIR/proxy.log"; fi
            read -r p0 tw0 r0 <<<"$(proc_ticks)"
            s0=$(date +%s.%N)
            line=$(bench_once "$x" "$t" "$n")
            s1=$(date +%s.%N)
            read -r p1 tw1 r1 <<<"$(proc_ticks)"
            IFS=, read -r _name rps avg _min p50 p95 p99 max <<<"$(printf '%s' "$line" | tr -d '"')"
            dp=""
            if [ -n "$PROXY_PID" ]; then dp=$((p1 - p0)); fi
            wall=$(python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$s0" "$s1")
            echo "$round,$t,$x,$pipeline,$n,$rps,$avg,$p50,$p95,$p99,$max,$wall,$dp,$((tw1 - tw0)),$((r1 - r0))" >>"$RAW"
            log "round $round/$ROUNDS $t $x: $rps rps, p50 $p50 ms, p99 $p99 ms, proxy ${dp:--} twem $((tw1 - tw0)) redis $((r1 - r0)) ticks"
        done
    done
done

# ---------------------------------------------------------------- report
set +e
python3 "$BENCH_DIR/summarize.py" "$RAW" "$CLK_TCK" >"$RESULTS_DIR/summary.md"
status=$?
set -e
echo
cat "$RESULTS_DIR/summary.md"
echo
log "raw results: $RAW; summary: $RESULTS_DIR/summary.md"
exit "$status"
