#!/usr/bin/env bash
# Moving 1,000,000 small keys between groups under a fixed-rate load (issue 4,
# acceptance 3). See bench/README.md.
#
# Setup: etcd, two redis-servers (group 1 and group 2, one master each), the
# dashboard, PROXIES (1) proxies --threads 1; every slot on group 1. KEYS keys
# (key:000000000000 ...) with VALUE_SIZE-byte values are written straight
# into group 1's master. `loadgen max` measures what the proxies sustain
# (closed loop, CONNS connections, one request in flight each: the shape of
# the fixed-rate load); `loadgen run` then sends 50/50 GET/SET over the same
# connections at LOAD_SHARE (30%) of it, open loop, latency counted from each
# request's scheduled send time to its reply's arrival. After BASELINE seconds all 1024 slots move
# to group 2 (POST /api/v1/migrations, wave_size WAVE); AFTER seconds after
# the migration finished the load stops. Reported: the migration's time
# (wall clock from the POST to `finished`, and the API's elapsed_secs), keys/s,
# p99 before vs during the move, the maximum during the move; the targets
# (<= 30 s, p99 within 3x, max < 250 ms) are checked.
#
# Pinning: none by default (every process may run on every core). Pinned
# (SERVER_CPU=1 CLIENT_CPU=0: the Redis servers, the proxies and the dashboard
# on core 1, the load tool and etcd on core 0), the load alone keeps core 1
# about 80% busy on a 2-core machine and the move saturates it, while core 0
# idles at 40%; the scheduler does better with both cores for everything.
#
# Environment (defaults in brackets):
#   KEYS [1000000]  VALUE_SIZE [100]  WAVE [256]  PROXIES [1]  CONNS [16]
#   LOAD_SHARE [0.30]   RATE (requests/s; overrides LOAD_SHARE x measured max)
#   MAX_SECONDS [5]     how long `loadgen max` measures
#   BASELINE [10]  AFTER [10]  MIGRATION_TIMEOUT [600] (seconds)
#   KEYS_PER_SEC, BYTES_PER_SEC   rate limits of the migration (unset: none)
#   SAFE [0]        1: the mover's safe mode
#   TARGET_REPLICA [0]  1: group 2 gets a replica (safe mode waits for it)
#   REFERENCE [1]   afterwards, time plain MIGRATE batches of the same keys
#                   between the two servers without Shardis (0: skip)
#   SHARDIS_PROXY_BIN, SHARDIS_DASHBOARD_BIN, LOADGEN_BIN   skip the build
#   PROXY_ARGS, CLIENT_CPU [all], SERVER_CPU [all], DASHBOARD_CPU [SERVER_CPU]
#   DASHBOARD_NICE [10]  LOADGEN_NICE, PROXY_NICE, REDIS_NICE [0]: nice of the load
#                   tool, the proxies, the Redis servers
#   RESULTS_DIR [bench/results/migrate-<timestamp>-wave<WAVE>], KEEP_WORK [0]
# Exit status: 0 when every target is met, 1 otherwise.

# The dashboard runs at nice 10, as deploy/systemd sets it: on this shared
# machine its mover's bookkeeping then waits for the proxies and the servers.
DASHBOARD_NICE=${DASHBOARD_NICE:-10}
ALL_CPUS=0-$(($(nproc) - 1))
CLIENT_CPU=${CLIENT_CPU:-$ALL_CPUS}
SERVER_CPU=${SERVER_CPU:-$ALL_CPUS}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$BENCH_DIR/cluster-lib.sh"

KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
# Waves of 256 (the API's default is 128): half the scans of the source,
# and the move ends seconds sooner at the same p99 (README, Migration).
WAVE=${WAVE:-256}
PROXIES=${PROXIES:-1}
CONNS=${CONNS:-16}
LOAD_SHARE=${LOAD_SHARE:-0.30}
RATE=${RATE:-}
MAX_SECONDS=${MAX_SECONDS:-5}
BASELINE=${BASELINE:-10}
AFTER=${AFTER:-10}
MIGRATION_TIMEOUT=${MIGRATION_TIMEOUT:-600}
SAFE=${SAFE:-0}
TARGET_REPLICA=${TARGET_REPLICA:-0}
REFERENCE=${REFERENCE:-1}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/migrate-$(date +%Y%m%d-%H%M%S)-wave$WAVE}

need redis-server redis-cli taskset python3 curl jq
BASELINE=$((BASELINE < 3 ? 3 : BASELINE))
[ "$(nproc)" -ge 2 ] || log "warning: fewer than 2 cores; pinning cannot separate the load tool and the servers"
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$RESULTS_DIR"
R=$RESULTS_DIR

# ---------------------------------------------------------------- setup
build_all
start_etcd
start_redis group1
R1_PORT=$REDIS_PORT R1_PID=$REDIS_PID
start_redis group2
R2_PORT=$REDIS_PORT R2_PID=$REDIS_PID
start_dashboard
setup_groups "127.0.0.1:$R1_PORT" "127.0.0.1:$R2_PORT"
R2R_PID=
if [ "$TARGET_REPLICA" = 1 ]; then
    # A replica in the target group: what safe mode waits for.
    start_redis group2-replica
    R2R_PORT=$REDIS_PORT R2R_PID=$REDIS_PID
    api POST /api/v1/groups/2/servers "{\"addr\":\"127.0.0.1:$R2R_PORT\"}" >/dev/null
    for _ in $(seq 1 100); do
        redis-cli -p "$R2R_PORT" info replication | grep -q '^master_link_status:up' && break
        sleep 0.1
    done
    redis-cli -p "$R2R_PORT" info replication | grep -q '^master_link_status:up' ||
        die "the target's replica did not link up"
    log "group 2 replica on 127.0.0.1:$R2R_PORT"
fi
for i in $(seq 1 "$PROXIES"); do start_proxy_named "proxy-$i"; done
ADDRS=$(
    IFS=,
    echo "${PROXY_ADDRS[*]}"
)

{
    echo "date: $(date -Is)"
    echo "git: $(git -C "$ROOT_DIR" rev-parse HEAD 2>/dev/null || echo none) $(git -C "$ROOT_DIR" status --porcelain 2>/dev/null | wc -l) changed files"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
    echo "kernel: $(uname -r)"
    echo "redis: $(redis-server --version)"
    echo "keys=$KEYS value_size=$VALUE_SIZE wave=$WAVE proxies=$PROXIES conns=$CONNS load_share=$LOAD_SHARE rate=${RATE:-auto} safe=$SAFE target_replica=$TARGET_REPLICA"
    echo "client cpu $CLIENT_CPU, server cpu $SERVER_CPU, dashboard cpu $DASHBOARD_CPU, dashboard nice $DASHBOARD_NICE, load tool nice ${LOADGEN_NICE:-0}, proxy nice ${PROXY_NICE:-0}, redis nice ${REDIS_NICE:-0}"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$R/env.txt"

# ---------------------------------------------------------------- prefill
log "prefill: $KEYS keys of $VALUE_SIZE bytes into group 1's master 127.0.0.1:$R1_PORT"
loadgen fill --addr "127.0.0.1:$R1_PORT" --keys "$KEYS" --value-size "$VALUE_SIZE" --conns 4 | tee "$R/fill.txt" >&2
n1=$(redis-cli -p "$R1_PORT" dbsize)
[ "$n1" = "$KEYS" ] || die "group 1 holds $n1 keys after the prefill, not $KEYS"
log "group 1: $n1 keys, $(redis_info "$R1_PORT" memory | sed -n 's/^used_memory_human://p') used"

# ---------------------------------------------------------------- max
log "what the proxies sustain: loadgen max, $CONNS connections, pipeline 1, ${MAX_SECONDS}s"
loadgen max --addr "$ADDRS" --keys "$KEYS" --value-size "$VALUE_SIZE" --conns "$CONNS" \
    --pipeline 1 --duration "$MAX_SECONDS" --json "$R/max.json" | tee "$R/max.txt" >&2
MAX_OPS=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["ops_per_sec"]))' "$R/max.json")
if [ -z "$RATE" ]; then
    RATE=$(python3 -c 'import sys; print(round(float(sys.argv[1]) * float(sys.argv[2])))' "$MAX_OPS" "$LOAD_SHARE")
fi
log "max $MAX_OPS ops/s; fixed-rate load: $RATE requests/s"
sleep 1

# ---------------------------------------------------------------- load + migration
STOP_FILE=$WORK_DIR/loadgen.stop
PHASES=$R/phases.txt
: >"$PHASES"
LOAD_SECONDS=$((BASELINE + MIGRATION_TIMEOUT + AFTER + 30))
# exec: $! is the load tool itself, so its CPU time can be read.
(exec nice -n "${LOADGEN_NICE:-0}" taskset -c "$CLIENT_CPU" "$LOADGEN_BIN" run --addr "$ADDRS" --keys "$KEYS" \
    --value-size "$VALUE_SIZE" --conns "$CONNS" \
    --rate "$RATE" --duration "$LOAD_SECONDS" --warmup 2 --stop-file "$STOP_FILE" \
    --phases "$PHASES" --out "$R/timeline.csv" --json "$R/load.json" \
    >"$R/load.txt" 2>&1) &
LOAD_PID=$!
track "$LOAD_PID" loadgen
LOAD_T0=$(date +%s%3N)
log "load running (pid $LOAD_PID); baseline ${BASELINE}s"
sleep 2
cpu_mark baseline "$R/cpu.txt"
sleep $((BASELINE - 2))
check_alive "$LOAD_PID" loadgen "$R/load.txt"

redis-cli -p "$R1_PORT" config resetstat >/dev/null
redis-cli -p "$R2_PORT" config resetstat >/dev/null
for a in "${PROXY_ADMINS[@]}"; do curl -s "http://$a/metrics" >"$R/metrics-before-${a##*:}.txt" || true; done
ticks_of() { # pids...
    local p t=0
    for p in "$@"; do t=$((t + $(cpu_ticks "$p"))); done
    echo "$t"
}
T_REDIS0=$(ticks_of "$R1_PID" "$R2_PID" $R2R_PID)
T_PROXY0=$(ticks_of "${PROXY_PIDS[@]}")
T_DASH0=$(ticks_of "$DASHBOARD_PID")
T_LOAD0=$(ticks_of "$LOAD_PID")

BODY="{\"slots\":\"0-1023\",\"to_group\":2,\"wave_size\":$WAVE"
[ -z "${KEYS_PER_SEC:-}" ] || BODY+=",\"keys_per_sec\":$KEYS_PER_SEC"
[ -z "${BYTES_PER_SEC:-}" ] || BODY+=",\"bytes_per_sec\":$BYTES_PER_SEC"
[ "$SAFE" != 1 ] || BODY+=",\"safe\":true"
BODY+="}"
cpu_mark migration "$R/cpu.txt"
MIG_T0=$(date +%s%3N)
MIG_ID=$(start_migration "$BODY")
log "migration $MIG_ID started: $BODY"
watch_migration "$MIG_ID" "$R/progress.tsv" "$MIGRATION_TIMEOUT" || true
MIG_T1=$(date +%s%3N)
cpu_mark after "$R/cpu.txt"
T_REDIS1=$(ticks_of "$R1_PID" "$R2_PID" $R2R_PID)
T_PROXY1=$(ticks_of "${PROXY_PIDS[@]}")
T_DASH1=$(ticks_of "$DASHBOARD_PID")
T_LOAD1=$(ticks_of "$LOAD_PID")
MIG_JSON=$(api GET "/api/v1/migrations/$MIG_ID")
printf '%s\n' "$MIG_JSON" >"$R/migration.json"
MIG_STATE=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["state"])' "$MIG_JSON")
log "migration $MIG_ID: $MIG_STATE after $(((MIG_T1 - MIG_T0)))ms wall clock"
for p in "$R1_PORT" "$R2_PORT"; do redis_info "$p" commandstats >"$R/commandstats-$p.txt"; done
for a in "${PROXY_ADMINS[@]}"; do curl -s "http://$a/metrics" >"$R/metrics-after-${a##*:}.txt" || true; done

log "after the migration: ${AFTER}s more load"
sleep "$AFTER"
END_T=$(date +%s%3N)
cpu_mark end "$R/cpu.txt"
{
    echo "# name start_unix_ms end_unix_ms"
    echo "baseline $((LOAD_T0 + 2000)) $MIG_T0"
    echo "migration $MIG_T0 $MIG_T1"
    echo "after $MIG_T1 $END_T"
} >"$PHASES"
touch "$STOP_FILE"
set +e
wait "$LOAD_PID"
LOAD_RC=$?
set -e
cat "$R/load.txt" >&2
[ "$LOAD_RC" = 0 ] || log "warning: loadgen exited with $LOAD_RC (see $R/load.txt)"

# ---------------------------------------------------------------- checks
n1=$(redis-cli -p "$R1_PORT" dbsize)
n2=$(redis-cli -p "$R2_PORT" dbsize)
log "keys: group 1 $n1, group 2 $n2"
cp "$WORK_DIR/dashboard.log" "$R/dashboard.log"
for i in $(seq 1 "$PROXIES"); do cp "$WORK_DIR/proxy-$i.log" "$R/" 2>/dev/null || true; done

# ---------------------------------------------------------------- reference
# What stock Redis does alone on this machine: the same keys straight back
# from group 2's master to group 1's with plain MIGRATE batches of 1000, one
# at a time, no load, no Shardis (the cluster is not used afterwards).
if [ "$REFERENCE" = 1 ] && [ "$n2" = "$KEYS" ]; then
    log "reference: plain MIGRATE of the $KEYS keys from 127.0.0.1:$R2_PORT back to 127.0.0.1:$R1_PORT, batches of 1000"
    loadgen raw-migrate --addr "127.0.0.1:$R2_PORT" --to "127.0.0.1:$R1_PORT" --keys "$KEYS" \
        --batch 1000 --json "$R/raw-migrate.json" | tee "$R/raw-migrate.txt" >&2
fi

# ---------------------------------------------------------------- report
set +e
python3 "$BENCH_DIR/migrate_report.py" "$R" "$KEYS" "$MIG_T0" "$MIG_T1" "$MAX_OPS" "$RATE" "$n1" "$n2" \
    "$((T_REDIS1 - T_REDIS0))" "$((T_PROXY1 - T_PROXY0))" "$((T_DASH1 - T_DASH0))" "$((T_LOAD1 - T_LOAD0))" \
    "$CLK_TCK" "$R1_PORT" "$R2_PORT" >"$R/summary.md"
status=$?
set -e
echo
cat "$R/summary.md"
echo
log "results in $R"
exit "$status"
