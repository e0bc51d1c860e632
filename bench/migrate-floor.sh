#!/usr/bin/env bash
# What plain MIGRATE costs a client of the source, without Shardis: the floor
# under bench/migrate.sh's latency target. See bench/README.md.
#
# Two redis-servers on SERVER_CPU (1); KEYS keys of VALUE_SIZE bytes in the
# first; `loadgen run` sends 50/50 GET/SET straight to it at RATE requests/s
# over CONNS connections (open loop, latency from each request's scheduled
# send time, the load tool on CLIENT_CPU 0). After BASELINE seconds
# `loadgen raw-migrate` moves every key to the second server with plain
# `MIGRATE … KEYS …` in batches of BATCH, one at a time, as fast as it can.
# Reported: the time and the CPU both servers spent on it, the load's
# p50/p99/max before and during, for each BATCH in BATCHES.
#
# Environment (defaults in brackets): KEYS [1000000] VALUE_SIZE [100]
#   BATCHES ["200 50"] RATE [17500] CONNS [16] BASELINE [10]
#   LOADGEN_BIN (skip the build), CLIENT_CPU [0], SERVER_CPU [1]

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
BATCHES=${BATCHES:-200 50}
RATE=${RATE:-17500}
CONNS=${CONNS:-16}
BASELINE=${BASELINE:-10}

need redis-server redis-cli taskset
if [ -z "${LOADGEN_BIN:-}" ]; then
    (cd "$ROOT_DIR" && cargo build --release -p loadgen) >&2 || die "the release build failed"
    LOADGEN_BIN=${CARGO_TARGET_DIR:-$ROOT_DIR/target}/release/loadgen
fi
loadgen() { taskset -c "$CLIENT_CPU" "$LOADGEN_BIN" "$@"; }
ticks() { cpu_ticks "$1"; }
CLK_TCK=$(getconf CLK_TCK)

for batch in $BATCHES; do
    start_redis "src-$batch"
    SRC=$REDIS_PORT SRC_PID=$REDIS_PID
    start_redis "dst-$batch"
    DST=$REDIS_PORT DST_PID=$REDIS_PID
    loadgen fill --addr "127.0.0.1:$SRC" --keys "$KEYS" --value-size "$VALUE_SIZE" --conns 4 >/dev/null
    stop=$WORK_DIR/stop-$batch phases=$WORK_DIR/phases-$batch
    : >"$phases"
    t0=$(date +%s%3N)
    loadgen run --addr "127.0.0.1:$SRC" --keys "$KEYS" --value-size "$VALUE_SIZE" --conns "$CONNS" \
        --rate "$RATE" --duration 600 --warmup 2 --stop-file "$stop" --phases "$phases" --quiet \
        >"$WORK_DIR/load-$batch.txt" 2>&1 &
    load_pid=$!
    sleep "$BASELINE"
    s0=$(ticks "$SRC_PID") d0=$(ticks "$DST_PID") m0=$(date +%s%3N)
    loadgen raw-migrate --addr "127.0.0.1:$SRC" --to "127.0.0.1:$DST" --keys "$KEYS" \
        --batch "$batch" >"$WORK_DIR/raw-$batch.txt" 2>&1
    m1=$(date +%s%3N) s1=$(ticks "$SRC_PID") d1=$(ticks "$DST_PID")
    sleep 2
    printf 'baseline %s %s\nmigration %s %s\n' $((t0 + 2000)) "$m0" "$m0" "$m1" >"$phases"
    touch "$stop"
    wait "$load_pid" || true
    echo "## MIGRATE batches of $batch keys"
    tail -n 1 "$WORK_DIR/raw-$batch.txt"
    echo "CPU: source $(((s1 - s0) * 1000 / CLK_TCK)) ms, target $(((d1 - d0) * 1000 / CLK_TCK)) ms"
    grep '^phase' "$WORK_DIR/load-$batch.txt"
    echo
    stop_pid "$SRC_PID"
    stop_pid "$DST_PID"
done
