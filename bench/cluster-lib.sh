# Helpers for the migration benchmarks (migrate.sh, bigkey.sh): a cluster
# with the dashboard, named proxies and the load tool. Source it after
# lib.sh; everything started here is tracked by lib.sh's cleanup too.

DASHBOARD_CPU=${DASHBOARD_CPU:-$SERVER_CPU}
PROXY_THREADS=${PROXY_THREADS:-1}
PROXY_ADDRS=()
PROXY_ADMINS=()
PROXY_PIDS=()

# Sets PROXY_BIN, DASHBOARD_BIN and LOADGEN_BIN: SHARDIS_PROXY_BIN,
# SHARDIS_DASHBOARD_BIN and LOADGEN_BIN when all are set, else one release
# build of the three.
build_all() {
    if [ -n "${SHARDIS_PROXY_BIN:-}" ] && [ -n "${SHARDIS_DASHBOARD_BIN:-}" ] && [ -n "${LOADGEN_BIN:-}" ]; then
        PROXY_BIN=$SHARDIS_PROXY_BIN
        DASHBOARD_BIN=$SHARDIS_DASHBOARD_BIN
    else
        need cargo
        log "cargo build --release -p shardis-proxy -p shardis-dashboard -p loadgen"
        (cd "$ROOT_DIR" && cargo build --release -p shardis-proxy -p shardis-dashboard -p loadgen) >&2 ||
            die "the release build failed"
        local dir=${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release
        PROXY_BIN=${SHARDIS_PROXY_BIN:-$dir/shardis-proxy}
        DASHBOARD_BIN=${SHARDIS_DASHBOARD_BIN:-$dir/shardis-dashboard}
        LOADGEN_BIN=${LOADGEN_BIN:-$dir/loadgen}
    fi
    local b
    for b in "$PROXY_BIN" "$DASHBOARD_BIN" "$LOADGEN_BIN"; do
        [ -x "$b" ] || die "no binary at $b"
    done
}

# The load tool, on the client core.
loadgen() { nice -n "${LOADGEN_NICE:-0}" taskset -c "$CLIENT_CPU" "$LOADGEN_BIN" "$@"; }

start_dashboard() {
    DASHBOARD_PORT=$(free_port)
    DASHBOARD_URL="http://127.0.0.1:$DASHBOARD_PORT"
    NO_COLOR=1 RUST_LOG=${DASHBOARD_LOG:-info} nice -n "${DASHBOARD_NICE:-0}" \
        taskset -c "$DASHBOARD_CPU" "$DASHBOARD_BIN" \
        --listen "127.0.0.1:$DASHBOARD_PORT" --etcd "$ETCD_URL" --cluster "$CLUSTER" \
        >"$WORK_DIR/dashboard.log" 2>&1 &
    DASHBOARD_PID=$!
    track "$DASHBOARD_PID" shardis-dashboard
    local i
    for i in $(seq 1 300); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$DASHBOARD_URL/healthz" || true)" = 200 ]; then
            log "shardis-dashboard on $DASHBOARD_URL (pid $DASHBOARD_PID)"
            return 0
        fi
        check_alive "$DASHBOARD_PID" shardis-dashboard "$WORK_DIR/dashboard.log"
        sleep 0.1
    done
    die "the dashboard did not answer /healthz within 30s"
}

# api METHOD PATH [JSON]: prints the answer; dies on anything but 2xx. 503
# (still electing itself leader) is retried for 30 s.
api() {
    local method=$1 path=$2 body=${3:-} out code deadline=$((SECONDS + 30))
    while :; do
        if [ -n "$body" ]; then
            out=$(curl -s --max-time 120 -X "$method" -H 'Content-Type: application/json' \
                -d "$body" -w '\n%{http_code}' "$DASHBOARD_URL$path") || out=$'\n000'
        else
            out=$(curl -s --max-time 120 -X "$method" -w '\n%{http_code}' "$DASHBOARD_URL$path") || out=$'\n000'
        fi
        code=${out##*$'\n'}
        out=${out%$'\n'*}
        case $code in
        2??)
            printf '%s\n' "$out"
            return 0
            ;;
        503 | 000)
            if ((SECONDS < deadline)); then
                sleep 0.3
                continue
            fi
            ;;
        esac
        die "dashboard: $method $path ${body:+$body }-> HTTP $code: $out"
    done
}

# start_proxy_named ID: a proxy with that id; appends to PROXY_ADDRS etc.
start_proxy_named() {
    local id=$1 port admin pid i code
    port=$(free_port)
    admin=$(free_port)
    # shellcheck disable=SC2086
    NO_COLOR=1 nice -n "${PROXY_NICE:-0}" taskset -c "$SERVER_CPU" "$PROXY_BIN" --id "$id" \
        --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        --etcd "$ETCD_URL" --cluster "$CLUSTER" --threads "$PROXY_THREADS" ${PROXY_ARGS:-} \
        >"$WORK_DIR/$id.log" 2>&1 &
    pid=$!
    track "$pid" "$id"
    for i in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz" || true)
        if [ "$code" = 200 ]; then
            log "$id on 127.0.0.1:$port, admin $admin (pid $pid)"
            PROXY_ADDRS+=("127.0.0.1:$port")
            PROXY_ADMINS+=("127.0.0.1:$admin")
            PROXY_PIDS+=("$pid")
            return 0
        fi
        check_alive "$pid" "$id" "$WORK_DIR/$id.log"
        sleep 0.1
    done
    die "$id was not ready within 30s"
}

# setup_groups MASTER1 MASTER2: groups 1 and 2, one master each, every slot
# on group 1 (through the dashboard API).
setup_groups() {
    api POST /api/v1/groups '{"id":1}' >/dev/null
    api POST /api/v1/groups '{"id":2}' >/dev/null
    api POST /api/v1/groups/1/servers "{\"addr\":\"$1\"}" >/dev/null
    api POST /api/v1/groups/2/servers "{\"addr\":\"$2\"}" >/dev/null
    api POST /api/v1/slots/assign '{"slots":"0-1023","group":1}' >/dev/null
    log "groups: 1 = $1 (slots 0-1023), 2 = $2"
}

# Every proxy applied the current topology.
barrier_now() {
    local v
    v=$(api GET /api/v1/overview | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' 2>/dev/null) ||
        v=""
    if [ -n "$v" ]; then
        api GET "/api/v1/barrier?version=$v&timeout_ms=10000" >/dev/null
    fi
}

# Migration start; prints the id.
start_migration() { # body
    api POST /api/v1/migrations "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}

# watch_migration ID TSV TIMEOUT_S: polls every POLL_S (0.2 s) until the
# migration ends, one tab-separated line per poll; prints progress every 2 s; sets
# MIG_STATE and MIG_JSON (the last answer). Returns 1 on the timeout. One Python
# process polls (see watch_migration.py), not a curl and a jq per poll.
watch_migration() {
    local rc=0
    MIG_JSON=$(python3 "$BENCH_DIR/watch_migration.py" "$DASHBOARD_URL" "$1" "$2" "$3" "${POLL_S:-0.2}") || rc=$?
    MIG_STATE=$(printf '%s' "$MIG_JSON" | jq -r '.state // "unknown"')
    return "$rc"
}

# redis_info PORT SECTION: INFO of a server, without carriage returns.
redis_info() { redis-cli -p "$1" info "$2" | tr -d '\r'; }

# The calls, total µs and µs per call of one command from INFO commandstats.
cmdstat() { # port command
    redis_info "$1" commandstats | sed -n "s/^cmdstat_$2:calls=\([0-9]*\),usec=\([0-9]*\),usec_per_call=\([0-9.]*\).*/calls \1, usec \2, usec_per_call \3/p"
}

# Busy and total jiffies of every core and of the whole machine, from
# /proc/stat: "cpu BUSY TOTAL cpu0 BUSY TOTAL ...".
machine_cpu() {
    awk '/^cpu/ { busy = $2 + $3 + $4 + $7 + $8 + $9; total = busy + $5 + $6; printf "%s %d %d ", $1, busy, total }' /proc/stat
    echo
}

# One line of cpu.txt: LABEL UNIX_MS OUR_TICKS (every process started here)
# and machine_cpu's fields.
cpu_mark() { # label file
    local p t=0
    for p in "${STARTED_PIDS[@]}"; do
        if running "$p"; then t=$((t + $(cpu_ticks "$p"))); fi
    done
    echo "$1 $(date +%s%3N) $t $(machine_cpu)" >>"$2"
}
