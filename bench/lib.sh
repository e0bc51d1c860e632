# Shared helpers for the scripts in bench/. Source it; do not run it.
#
# Everything started through these helpers is recorded in STARTED_PIDS and
# stopped (by pid, nothing else) when the sourcing script exits, including on
# Ctrl-C. Everything listens on 127.0.0.1, on ports the kernel hands out as
# free, so the default Redis/etcd ports (6379, 2379, 2380) are never used.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$BENCH_DIR/.." && pwd)

# Core for redis-benchmark / the idle-connection client (and etcd, which is
# idle while measuring), and core for everything that is measured: the Redis
# servers, twemproxy and the proxy.
CLIENT_CPU=${CLIENT_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
CLUSTER=${CLUSTER:-bench}
KEEP_WORK=${KEEP_WORK:-0}

STARTED_PIDS=()
STARTED_NAMES=()
WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/shardis-bench.XXXXXX")
USED_PORTS=" 6379 2379 2380 "

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# True while the process runs (an exited child not yet reaped is a zombie:
# it still has a /proc entry, in state Z).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Stops one started process: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        running "$pid" || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    trap '' INT # a second Ctrl-C must not cut the cleanup short
    # Newest first: the proxies leave etcd and the servers before those stop.
    local i
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[$i]}"
    done
    if [ "$KEEP_WORK" = 1 ]; then
        log "kept work dir $WORK_DIR"
    else
        rm -rf "$WORK_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' is not installed"
    done
}

# Remembers a background process so that cleanup stops it.
track() {
    STARTED_PIDS+=("$1")
    STARTED_NAMES+=("$2")
}

# Fails if a tracked process has died (prints the end of its log).
check_alive() {
    local pid=$1 name=$2 logf=${3:-}
    if ! running "$pid"; then
        [ -n "$logf" ] && [ -f "$logf" ] && tail -n 20 "$logf" >&2
        die "$name (pid $pid) is not running"
    fi
}

# A TCP port on 127.0.0.1 that is free now and not handed out before.
free_port() {
    local p i
    for i in $(seq 1 50); do
        p=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
        case "$USED_PORTS" in
        *" $p "*) continue ;;
        esac
        USED_PORTS="$USED_PORTS$p "
        echo "$p"
        return 0
    done
    die "no free port found"
}

wait_tcp() { # port timeout_s name
    local port=$1 timeout=$2 name=$3 i
    for i in $(seq 1 $((timeout * 10))); do
        if python3 -c 'import socket,sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.5); s.close()' "$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within ${timeout}s"
}

# utime+stime of a process (all its threads), in clock ticks.
cpu_ticks() {
    local pid=$1 stat
    stat=$(cat "/proc/$pid/stat") || die "cannot read /proc/$pid/stat"
    # The command name (field 2) may hold spaces: cut at the last ')'.
    stat=${stat##*) }
    # Now field 3 (state) is the first word: utime/stime are fields 14/15.
    set -- $stat
    echo $((${12} + ${13}))
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

start_etcd() {
    need etcd etcdctl
    ETCD_PORT=$(free_port)
    local peer
    peer=$(free_port)
    ETCD_URL="http://127.0.0.1:$ETCD_PORT"
    taskset -c "$CLIENT_CPU" etcd --name shardis-bench \
        --data-dir "$WORK_DIR/etcd" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$peer" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "shardis-bench=http://127.0.0.1:$peer" \
        --initial-cluster-state new \
        >"$WORK_DIR/etcd.log" 2>&1 &
    ETCD_PID=$!
    track "$ETCD_PID" etcd
    local i
    for i in $(seq 1 200); do
        if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=1s \
            endpoint health >/dev/null 2>&1; then
            log "etcd on $ETCD_URL (pid $ETCD_PID)"
            return 0
        fi
        check_alive "$ETCD_PID" etcd "$WORK_DIR/etcd.log"
        sleep 0.1
    done
    die "etcd did not become healthy"
}

etcd_put() {
    ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" put "$1" "$2" >/dev/null
}

# start_redis NAME [extra redis-server args...]; sets REDIS_PORT and REDIS_PID.
start_redis() {
    need redis-server
    local name=$1
    shift
    REDIS_PORT=$(free_port)
    mkdir -p "$WORK_DIR/$name"
    nice -n "${REDIS_NICE:-0}" taskset -c "$SERVER_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --daemonize no --dir "$WORK_DIR/$name" \
        --logfile "$WORK_DIR/$name.log" "$@" \
        >/dev/null 2>&1 &
    REDIS_PID=$!
    track "$REDIS_PID" "$name"
    wait_tcp "$REDIS_PORT" 10 "$name"
    check_alive "$REDIS_PID" "$name" "$WORK_DIR/$name.log"
    log "$name on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
}

# put_topology HOST:PORT... : one group per server, slots split evenly.
put_topology() {
    local doc
    doc=$(python3 - "$@" <<'EOF'
import json, sys
servers = sys.argv[1:]
n = len(servers)
groups = [{"id": i + 1, "servers": [s]} for i, s in enumerate(servers)]
slots = [{"from": i * 1024 // n, "to": (i + 1) * 1024 // n - 1,
          "state": "normal", "group": i + 1} for i in range(n)]
print(json.dumps({"version": 1, "groups": groups, "slots": slots}, separators=(",", ":")))
EOF
)
    etcd_put "/shardis/$CLUSTER/topology" "$doc"
    etcd_put "/shardis/$CLUSTER/topology-version" 1
    log "topology: $doc"
}

# Sets PROXY_BIN: $SHARDIS_PROXY_BIN, or a fresh release build.
build_proxy() {
    if [ -n "${SHARDIS_PROXY_BIN:-}" ]; then
        PROXY_BIN=$SHARDIS_PROXY_BIN
    else
        need cargo
        log "cargo build --release -p shardis-proxy"
        (cd "$ROOT_DIR" && cargo build --release -p shardis-proxy) >&2 ||
            die "the proxy does not build (set SKIP_PROXY=1 to measure without it)"
        PROXY_BIN=${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/shardis-proxy
    fi
    [ -x "$PROXY_BIN" ] || die "no proxy binary at $PROXY_BIN"
}

# start_proxy [extra args...]; sets PROXY_PORT, PROXY_ADMIN_PORT, PROXY_PID.
# Its log goes to $WORK_DIR/$PROXY_LOG_NAME [proxy.log].
start_proxy() {
    PROXY_PORT=$(free_port)
    PROXY_ADMIN_PORT=$(free_port)
    local proxy_log=$WORK_DIR/${PROXY_LOG_NAME:-proxy.log}
    # shellcheck disable=SC2086
    taskset -c "$SERVER_CPU" "$PROXY_BIN" \
        --listen "127.0.0.1:$PROXY_PORT" \
        --admin-listen "127.0.0.1:$PROXY_ADMIN_PORT" \
        --etcd "$ETCD_URL" --cluster "$CLUSTER" "$@" ${PROXY_ARGS:-} \
        >"$proxy_log" 2>&1 &
    PROXY_PID=$!
    track "$PROXY_PID" shardis-proxy
    local i code
    for i in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROXY_ADMIN_PORT/readyz" || true)
        if [ "$code" = 200 ]; then
            log "shardis-proxy on 127.0.0.1:$PROXY_PORT, admin $PROXY_ADMIN_PORT (pid $PROXY_PID)"
            return 0
        fi
        check_alive "$PROXY_PID" shardis-proxy "$proxy_log"
        sleep 0.1
    done
    tail -n 20 "$proxy_log" >&2
    die "shardis-proxy was not ready within 30s"
}

# start_twemproxy HOST:PORT... : one pool over all the servers.
start_twemproxy() {
    need nutcracker
    TWEM_PORT=$(free_port)
    local stats_port s i=0
    stats_port=$(free_port)
    {
        echo "bench:"
        echo "  listen: 127.0.0.1:$TWEM_PORT"
        echo "  hash: fnv1a_64"
        echo "  distribution: ketama"
        echo "  redis: true"
        echo "  auto_eject_hosts: false"
        echo "  timeout: 5000"
        echo "  server_connections: 1"
        echo "  servers:"
        for s in "$@"; do
            i=$((i + 1))
            echo "    - $s:1 server$i"
        done
    } >"$WORK_DIR/nutcracker.yml"
    nutcracker -t -c "$WORK_DIR/nutcracker.yml" >/dev/null 2>&1 ||
        die "nutcracker rejects $WORK_DIR/nutcracker.yml"
    taskset -c "$SERVER_CPU" nutcracker -c "$WORK_DIR/nutcracker.yml" \
        -s "$stats_port" -a 127.0.0.1 -p "$WORK_DIR/nutcracker.pid" \
        -o "$WORK_DIR/nutcracker.log" ${TWEMPROXY_ARGS:-} \
        >/dev/null 2>&1 &
    TWEM_PID=$!
    track "$TWEM_PID" nutcracker
    wait_tcp "$TWEM_PORT" 10 nutcracker
    check_alive "$TWEM_PID" nutcracker "$WORK_DIR/nutcracker.log"
    log "twemproxy on 127.0.0.1:$TWEM_PORT (pid $TWEM_PID)"
}

# ---------------------------------------------------------------- data-path tests
# The tests of run.sh and stats-overhead.sh: test name -> pipeline depth,
# requests per run (the caller's N_P1, N_P16, N_MULTI, MULTI_PIPELINE) and
# redis-benchmark's command selection.
MGET_ARGS=(MGET)
for _ in $(seq 1 10); do MGET_ARGS+=("key:__rand_int__"); done

test_pipeline() {
    case $1 in
    set_p1 | get_p1) echo 1 ;;
    set_p16 | get_p16) echo 16 ;;
    mset10 | mget10) echo "${MULTI_PIPELINE:-1}" ;;
    *) die "unknown test $1" ;;
    esac
}
test_requests() {
    case $1 in
    set_p1 | get_p1) echo "$N_P1" ;;
    set_p16 | get_p16) echo "$N_P16" ;;
    mset10 | mget10) echo "$N_MULTI" ;;
    esac
}
test_command() { # prints one argument per line
    case $1 in
    set_*) printf '%s\n' -t set ;;
    get_*) printf '%s\n' -t get ;;
    mset10) printf '%s\n' -t mset ;; # redis-benchmark's "MSET (10 keys)"
    mget10) printf '%s\n' "${MGET_ARGS[@]}" ;;
    esac
}
