#!/usr/bin/env bash
# Memory of idle client connections: 10,000 idle clients must add less than
# 100 MiB RSS to shardis-proxy. See bench/README.md.
#
# Starts etcd, one redis-server (one group owning all 1024 slots) and the proxy,
# reads the proxy's VmRSS, opens CONNS connections that each send one PING and
# read +PONG, waits, reads VmRSS again and prints the growth.
#
# Environment (defaults in brackets):
#   CONNS [10000]          idle connections
#   LIMIT_MIB [100]        pass if the growth is below this
#   IDLE_TARGET [proxy]    proxy | twemproxy | redis: the server measured
#                          (the other two are for comparison)
#   SHARDIS_PROXY_BIN      use this binary instead of cargo build --release
#   PROXY_ARGS             extra arguments for the proxy
#   PROXY_MAX_CLIENTS_ARGS [--max-clients 20000]
#   RESULTS_DIR [bench/results/idle-<timestamp>]
#   KEEP_WORK [0]          1: keep the temp dir with the logs
# Exit status: 0 on PASS, 1 on FAIL.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${CONNS:-10000}
LIMIT_MIB=${LIMIT_MIB:-100}
IDLE_TARGET=${IDLE_TARGET:-proxy}
PROXY_MAX_CLIENTS_ARGS=${PROXY_MAX_CLIENTS_ARGS:---max-clients 20000}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/idle-$(date +%Y%m%d-%H%M%S)}
need redis-server taskset python3 curl

# File descriptors: the server measured needs one per client (plus a few), and
# so does the client script; both inherit this limit. Root may raise the hard
# limit; otherwise take what the hard limit allows.
want=$((CONNS * 2 + 1024))
[ "$want" -lt 65536 ] && want=65536
if ! ulimit -n "$want" 2>/dev/null; then
    ulimit -n "$(ulimit -Hn)"
fi
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((CONNS + 100)) ] ||
    die "ulimit -n is $(ulimit -n), too low for $CONNS connections"
log "ulimit -n $(ulimit -n)"

case $IDLE_TARGET in
proxy) build_proxy ;;
twemproxy | redis) ;;
*) die "IDLE_TARGET must be proxy, twemproxy or redis" ;;
esac

start_etcd
start_redis redis1 --maxclients $((CONNS + 1000))
put_topology "127.0.0.1:$REDIS_PORT"
case $IDLE_TARGET in
proxy)
    # shellcheck disable=SC2086
    start_proxy --threads 1 $PROXY_MAX_CLIENTS_ARGS
    PID=$PROXY_PID PORT=$PROXY_PORT
    ;;
twemproxy)
    start_twemproxy "127.0.0.1:$REDIS_PORT"
    PID=$TWEM_PID PORT=$TWEM_PORT
    ;;
redis)
    PID=$REDIS_PID PORT=$REDIS_PORT
    ;;
esac

# One request through the server first, so that its backend connection and
# buffers exist before the baseline is taken.
python3 "$BENCH_DIR/prefill.py" "$PORT" 1000 >/dev/null

mkdir -p "$RESULTS_DIR"
log "$CONNS idle connections to $IDLE_TARGET (pid $PID, 127.0.0.1:$PORT)"
set +e
taskset -c "$CLIENT_CPU" python3 "$BENCH_DIR/idle_conns.py" --pid "$PID" --port "$PORT" \
    --conns "$CONNS" --limit-mib "$LIMIT_MIB" | tee "$RESULTS_DIR/idle-$IDLE_TARGET.txt"
status=${PIPESTATUS[0]}
set -e
check_alive "$PID" "$IDLE_TARGET"
exit "$status"
