#!/usr/bin/env bash
# The longest stall of the source while a big key moves (issue 4, acceptance
# 3), against one plain MIGRATE of the same key. See bench/README.md.
#
# Setup: etcd, two redis-servers (group 1 and group 2), the dashboard, one
# proxy; every slot on group 1. SMALL_KEYS (100,000) small keys, and one hash
# BIG_KEY of FIELDS (500,000) fields with FIELD_SIZE (100)-byte values (about
# 64 MiB), all written straight into group 1's master.
#
# Then only the big key's slot moves to group 2, while probes (one
# connection each, one request at a time, as fast as they can, on the client
# core) measure every request's latency:
#   source  PING to group 1's master directly: the source's stall
#   target  PING to group 2's master directly
#   proxy   GET of a small key in another slot, through the proxy
#   slot    GET of a small key in the big key's slot, through the proxy (how
#           long that slot is held)
# For comparison, the same hash is built on a fresh pair of redis-servers and
# moved with one `MIGRATE host port key 0 60000` (redis-cli), with the same
# PING probes on both.
#
# Environment (defaults in brackets): BIG_KEY [bighash], FIELDS [500000],
# FIELD_SIZE [100], SMALL_KEYS [100000], SETTLE [2] (seconds of probing before
# and after), MIGRATION_TIMEOUT [300], SHARDIS_PROXY_BIN,
# SHARDIS_DASHBOARD_BIN, LOADGEN_BIN, CLIENT_CPU [0], SERVER_CPU [1],
# RESULTS_DIR [bench/results/bigkey-<timestamp>], KEEP_WORK [0].
# Exit status: 0 when the source's longest stall is <= 100 ms and no worse
# than the plain MIGRATE's, 1 otherwise.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$BENCH_DIR/cluster-lib.sh"

BIG_KEY=${BIG_KEY:-bighash}
FIELDS=${FIELDS:-500000}
FIELD_SIZE=${FIELD_SIZE:-100}
SMALL_KEYS=${SMALL_KEYS:-100000}
SETTLE=${SETTLE:-2}
MIGRATION_TIMEOUT=${MIGRATION_TIMEOUT:-300}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/bigkey-$(date +%Y%m%d-%H%M%S)}

need redis-server redis-cli taskset python3 curl jq
mkdir -p "$RESULTS_DIR"
R=$RESULTS_DIR

# The big key's slot, a small key in that slot and one in another slot
# (slot = CRC32-IEEE(key) mod 1024; these keys have no hash tag).
read -r SLOT SAME OTHER < <(python3 - "$BIG_KEY" "$SMALL_KEYS" <<'EOF'
import sys, zlib
big, n = sys.argv[1].encode(), int(sys.argv[2])
slot = zlib.crc32(big) % 1024
same = other = None
for i in range(n):
    k = b"key:%012d" % i
    s = zlib.crc32(k) % 1024
    if s == slot and same is None:
        same = k
    if s != slot and other is None:
        other = k
    if same and other:
        break
if same is None or other is None:
    sys.exit("no small key in slot %d among %d: raise SMALL_KEYS" % (slot, n))
print(slot, same.decode(), other.decode())
EOF
)
log "big key $BIG_KEY is in slot $SLOT; probe keys: $SAME (same slot), $OTHER (another slot)"

build_all
start_etcd
start_redis group1
R1_PORT=$REDIS_PORT
start_redis group2
R2_PORT=$REDIS_PORT
start_dashboard
setup_groups "127.0.0.1:$R1_PORT" "127.0.0.1:$R2_PORT"
start_proxy_named proxy-1
PROXY=${PROXY_ADDRS[0]}

{
    echo "date: $(date -Is)"
    echo "git: $(git -C "$ROOT_DIR" rev-parse HEAD 2>/dev/null || echo none) $(git -C "$ROOT_DIR" status --porcelain 2>/dev/null | wc -l) changed files"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
    echo "redis: $(redis-server --version)"
    echo "big_key=$BIG_KEY slot=$SLOT fields=$FIELDS field_size=$FIELD_SIZE small_keys=$SMALL_KEYS"
    echo "client cpu $CLIENT_CPU, server cpu $SERVER_CPU, dashboard cpu $DASHBOARD_CPU"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$R/env.txt"

loadgen fill --addr "127.0.0.1:$R1_PORT" --keys "$SMALL_KEYS" | tee "$R/fill.txt" >&2
loadgen fill-hash --addr "127.0.0.1:$R1_PORT" --key "$BIG_KEY" --fields "$FIELDS" \
    --value-size "$FIELD_SIZE" | tee -a "$R/fill.txt" >&2
BIG_BYTES=$(redis-cli -p "$R1_PORT" memory usage "$BIG_KEY" samples 0)
log "$BIG_KEY: $(redis-cli -p "$R1_PORT" hlen "$BIG_KEY") fields, MEMORY USAGE $BIG_BYTES bytes ($((BIG_BYTES >> 20)) MiB)"

# probe NAME ADDR CMD: a background probe writing $R/probe-NAME.{txt,json}.
PROBE_PIDS=()
probe() {
    local name=$1 addr=$2 cmd=$3
    loadgen probe --addr "$addr" --cmd "$cmd" --duration "$((MIGRATION_TIMEOUT + 60))" --warmup 0 \
        --stop-file "$STOP_FILE" --json "$R/probe-$name.json" --report-over-ms 20 \
        >"$R/probe-$name.txt" 2>&1 &
    PROBE_PIDS+=($!)
    track "$!" "probe-$name"
}
stop_probes() {
    touch "$STOP_FILE"
    local p
    for p in "${PROBE_PIDS[@]}"; do wait "$p" || log "a probe exited with $?"; done
    PROBE_PIDS=()
    rm -f "$STOP_FILE"
}

# ---------------------------------------------------------------- the migration
STOP_FILE=$WORK_DIR/probes.stop
probe source "127.0.0.1:$R1_PORT" PING
probe target "127.0.0.1:$R2_PORT" PING
probe proxy "$PROXY" "GET $OTHER"
probe slot "$PROXY" "GET $SAME"
sleep "$SETTLE"
MIG_T0=$(date +%s%3N)
MIG_ID=$(start_migration "{\"slots\":\"$SLOT\",\"to_group\":2}")
log "migration $MIG_ID of slot $SLOT started"
watch_migration "$MIG_ID" "$R/progress.tsv" "$MIGRATION_TIMEOUT" || true
MIG_T1=$(date +%s%3N)
sleep "$SETTLE"
stop_probes
api GET "/api/v1/migrations/$MIG_ID" >"$R/migration.json"
cp "$WORK_DIR/dashboard.log" "$R/dashboard.log"
log "migration: $(jq -r .state "$R/migration.json") in $((MIG_T1 - MIG_T0)) ms; on group 2: $(redis-cli -p "$R2_PORT" hlen "$BIG_KEY") fields"
grep -E "big key|wave moved|big_keys" "$R/dashboard.log" | tail -n 5 >&2 || true

# ---------------------------------------------------------------- plain MIGRATE
start_redis plain-src
P1_PORT=$REDIS_PORT
start_redis plain-dst
P2_PORT=$REDIS_PORT
loadgen fill-hash --addr "127.0.0.1:$P1_PORT" --key "$BIG_KEY" --fields "$FIELDS" \
    --value-size "$FIELD_SIZE" >>"$R/fill.txt"
STOP_FILE=$WORK_DIR/plain.stop
probe plain-source "127.0.0.1:$P1_PORT" PING
probe plain-target "127.0.0.1:$P2_PORT" PING
sleep "$SETTLE"
PLAIN_T0=$(date +%s%N)
redis-cli -p "$P1_PORT" migrate 127.0.0.1 "$P2_PORT" "$BIG_KEY" 0 60000 >"$R/plain-migrate.txt" 2>&1
PLAIN_T1=$(date +%s%N)
sleep "$SETTLE"
stop_probes
PLAIN_MS=$(((PLAIN_T1 - PLAIN_T0) / 1000000))
log "plain MIGRATE: $(cat "$R/plain-migrate.txt") in $PLAIN_MS ms (redis-cli's wall clock)"

# ---------------------------------------------------------------- report
set +e
python3 - "$R" "$BIG_KEY" "$SLOT" "$BIG_BYTES" "$MIG_T0" "$MIG_T1" "$PLAIN_MS" >"$R/summary.md" <<'EOF'
import json, os, re, sys
rdir, key, slot, size, t0, t1, plain_ms = sys.argv[1:8]
t0, t1 = int(t0), int(t1)
def probe(name):
    try:
        with open(os.path.join(rdir, f"probe-{name}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
mig = json.load(open(os.path.join(rdir, "migration.json")))
copy = ""
for line in open(os.path.join(rdir, "dashboard.log")):
    if "big key copied" in line:
        copy = line.strip()
copy_ms = re.search(r"\bms=(\d+)", copy)
print(f"## Big key: {key}, {int(size) / 2**20:.1f} MiB (MEMORY USAGE), slot {slot}\n")
print(f"- migration of slot {slot}: **{mig['state']}** in {(t1 - t0) / 1000:.2f} s wall clock "
      f"(API elapsed_secs {mig['elapsed_secs']:.2f}); dashboard: `{copy[copy.find('big key'):] if copy else 'no big-key copy logged'}`")
print(f"- plain `MIGRATE` of a fresh copy between two other redis-servers: **{plain_ms} ms** "
      f"(redis-cli's wall clock)\n")
print("| probe | what | requests | p50 ms | p99 ms | max ms | errors |")
print("|---|---|---|---|---|---|---|")
rows = [("source", "PING, source master (shardis move)"), ("target", "PING, target master (shardis move)"),
        ("proxy", "GET of a key in another slot, via the proxy"), ("slot", "GET of a key in the big key's slot, via the proxy"),
        ("plain-source", "PING, source of the plain MIGRATE"), ("plain-target", "PING, target of the plain MIGRATE")]
for name, what in rows:
    p = probe(name)
    o = p.get("overall", {})
    if o:
        print(f"| {name} | {what} | {o['requests']:,} | {o['p50_ms']:.3f} | {o['p99_ms']:.3f} | "
              f"**{o['max_ms']:.1f}** | {o['errors']} |")
print()
src = probe("source").get("overall", {}).get("max_ms", float("inf"))
plain = probe("plain-source").get("overall", {}).get("max_ms", 0)
ok_abs = src <= 100
ok_rel = src <= max(plain, float(plain_ms))
print("| target | result | value |")
print("|---|---|---|")
print(f"| source's longest stall <= 100 ms | {'PASS' if ok_abs else '**FAIL**'} | {src:.1f} ms |")
print(f"| no worse than one plain MIGRATE | {'PASS' if ok_rel else '**FAIL**'} | {src:.1f} ms vs {plain:.1f} ms (probe), {plain_ms} ms (MIGRATE) |")
sys.exit(0 if ok_abs and ok_rel and mig["state"] == "finished" else 1)
EOF
status=$?
set -e
echo
cat "$R/summary.md"
echo
log "results in $R"
exit "$status"
