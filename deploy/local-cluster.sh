#!/usr/bin/env bash
# Shardis on one machine: etcd, Redis groups (a master and a replica each), two
# proxies and the dashboard, all on 127.0.0.1, with data, logs, pid files and
# configs in one folder.
#
#   deploy/local-cluster.sh up              install what is missing, build, start, assign the slots
#   deploy/local-cluster.sh status          every component: address, pid, alive/dead, proxies' /readyz
#   deploy/local-cluster.sh down [--purge]  stop exactly what `up` started (--purge: delete the folder too)
#
# The defaults are a contract (scripts and docs rely on them); the environment
# may override them:
#   SHARDIS_HOME               <repo>/.local-cluster   data, logs, pid files, configs
#   SHARDIS_CLUSTER            local                   etcd prefix /shardis/<cluster>/
#   SHARDIS_ETCD_PORT          23790                   etcd client port
#   SHARDIS_ETCD_PEER_PORT     23800                   etcd peer port
#   SHARDIS_REDIS_PORTS        "7001 7002 7003 7004"   taken SHARDIS_GROUP_SIZE at a time, master first
#   SHARDIS_GROUP_SIZE         2                       servers per group (1 = masters only)
#   SHARDIS_PROXY_PORTS        "19000 19001"           proxies proxy-1, proxy-2, ...
#   SHARDIS_PROXY_ADMIN_PORTS  "11080 11081"           their admin HTTP ports
#   SHARDIS_DASHBOARD_PORT     18080
#   SHARDIS_SKIP_INSTALL=1     never call apt-get
#   SHARDIS_SKIP_BUILD=1       use the binaries already built (no cargo)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ME="deploy/local-cluster.sh"
HOST=127.0.0.1

HOME_DIR="${SHARDIS_HOME:-$ROOT/.local-cluster}"
case "$HOME_DIR" in /*) ;; *) HOME_DIR="$PWD/$HOME_DIR" ;; esac
HOME_DIR="${HOME_DIR%/}"
RUN="$HOME_DIR/run"
LOGS="$HOME_DIR/logs"
CONF="$HOME_DIR/conf"
MARKER="$HOME_DIR/.shardis-local-cluster"

CLUSTER="${SHARDIS_CLUSTER:-local}"
ETCD_PORT="${SHARDIS_ETCD_PORT:-23790}"
ETCD_PEER_PORT="${SHARDIS_ETCD_PEER_PORT:-23800}"
GROUP_SIZE="${SHARDIS_GROUP_SIZE:-2}"
read -r -a REDIS_PORTS <<<"${SHARDIS_REDIS_PORTS:-7001 7002 7003 7004}"
read -r -a PROXY_PORTS <<<"${SHARDIS_PROXY_PORTS:-19000 19001}"
read -r -a ADMIN_PORTS <<<"${SHARDIS_PROXY_ADMIN_PORTS:-11080 11081}"
DASHBOARD_PORT="${SHARDIS_DASHBOARD_PORT:-18080}"
ETCD_URL="http://$HOST:$ETCD_PORT"
DASHBOARD_URL="http://$HOST:$DASHBOARD_PORT"

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
PROXY_BIN="$TARGET_DIR/release/shardis-proxy"
DASHBOARD_BIN="$TARGET_DIR/release/shardis-dashboard"

KEY_TOPOLOGY="/shardis/$CLUSTER/topology"
KEY_VERSION="/shardis/$CLUSTER/topology-version"

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() {
  printf 'local-cluster: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<EOF
usage: $ME up | status | down [--purge]

  up      install what is missing (Debian), build the release binaries, start
          etcd ($HOST:$ETCD_PORT), Redis (${REDIS_PORTS[*]}), the proxies
          (${PROXY_PORTS[*]}) and the dashboard ($DASHBOARD_PORT), assign the slots.
          Running it again restarts only what died.
  status  each component with its address, pid and state; the proxies' /readyz
  down    stop exactly the processes recorded by up; --purge also deletes
          $HOME_DIR
EOF
}

# ---------------------------------------------------------------- configuration

is_port() { [[ $1 =~ ^[0-9]{1,5}$ ]] && (($1 >= 1 && $1 <= 65535)); }

validate() {
  [[ $CLUSTER =~ ^[A-Za-z0-9_-]{1,64}$ ]] ||
    die "SHARDIS_CLUSTER='$CLUSTER': use 1-64 letters, digits, '-' or '_'"
  [[ $GROUP_SIZE =~ ^[1-9][0-9]*$ ]] || die "SHARDIS_GROUP_SIZE='$GROUP_SIZE' is not a positive number"
  local n=${#REDIS_PORTS[@]}
  ((n > 0 && n % GROUP_SIZE == 0)) ||
    die "SHARDIS_REDIS_PORTS has $n ports: it needs groups of $GROUP_SIZE (master first, then replicas)"
  ((n / GROUP_SIZE <= 1024)) || die "more groups than slots"
  ((${#PROXY_PORTS[@]} > 0)) || die "SHARDIS_PROXY_PORTS is empty"
  ((${#PROXY_PORTS[@]} == ${#ADMIN_PORTS[@]})) ||
    die "SHARDIS_PROXY_PORTS (${PROXY_PORTS[*]}) and SHARDIS_PROXY_ADMIN_PORTS (${ADMIN_PORTS[*]}) must have as many ports"
  local -A seen=()
  local p
  for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "${REDIS_PORTS[@]}" "${PROXY_PORTS[@]}" "${ADMIN_PORTS[@]}" "$DASHBOARD_PORT"; do
    is_port "$p" || die "'$p' is not a port number"
    [ -z "${seen[$p]:-}" ] || die "port $p is configured twice"
    seen[$p]=1
  done
}

# Groups: ids 1.., servers taken GROUP_SIZE at a time from REDIS_PORTS, and an
# even share of the 1024 slots each (the first groups take the remainder).
declare -a GROUP_IDS=()
declare -A GROUP_PORTS=() GROUP_FROM=() GROUP_TO=() MASTER_OF=() GROUP_OF=()
plan_groups() {
  local groups=$((${#REDIS_PORTS[@]} / GROUP_SIZE))
  local base=$((1024 / groups)) rem=$((1024 % groups)) from=0 g i size p
  for ((g = 1; g <= groups; g++)); do
    GROUP_IDS+=("$g")
    local ports=("${REDIS_PORTS[@]:$(((g - 1) * GROUP_SIZE)):$GROUP_SIZE}")
    GROUP_PORTS[$g]="${ports[*]}"
    for i in "${!ports[@]}"; do
      p=${ports[$i]}
      GROUP_OF[$p]=$g
      ((i == 0)) || MASTER_OF[$p]=${ports[0]}
    done
    size=$((base + (g <= rem ? 1 : 0)))
    GROUP_FROM[$g]=$from
    GROUP_TO[$g]=$((from + size - 1))
    from=$((from + size))
  done
}

# Components in start order. `down` does not use this list: it stops whatever
# has a pid file, so a changed environment cannot make it miss anything.
declare -a COMPONENTS=()
declare -A PORTS_OF=()
plan_components() {
  COMPONENTS=(etcd)
  PORTS_OF[etcd]="$ETCD_PORT $ETCD_PEER_PORT"
  local p i
  for p in "${REDIS_PORTS[@]}"; do # masters first, then replicas
    [ -n "${MASTER_OF[$p]:-}" ] || { COMPONENTS+=("redis-$p"); PORTS_OF[redis-$p]=$p; }
  done
  for p in "${REDIS_PORTS[@]}"; do
    [ -z "${MASTER_OF[$p]:-}" ] || { COMPONENTS+=("redis-$p"); PORTS_OF[redis-$p]=$p; }
  done
  COMPONENTS+=(dashboard)
  PORTS_OF[dashboard]=$DASHBOARD_PORT
  for i in "${!PROXY_PORTS[@]}"; do
    COMPONENTS+=("proxy-$((i + 1))")
    PORTS_OF[proxy-$((i + 1))]="${PROXY_PORTS[$i]} ${ADMIN_PORTS[$i]}"
  done
}

have_dashboard() { [ -x "$DASHBOARD_BIN" ]; }

# The components `up` should have running: the dashboard only once it is built.
wanted() {
  local c
  for c in "${COMPONENTS[@]}"; do
    if [ "$c" = dashboard ] && ! have_dashboard; then continue; fi
    printf '%s\n' "$c"
  done
}

addr_of() {
  case $1 in
    etcd) say "$HOST:$ETCD_PORT" ;;
    redis-*) say "$HOST:${1#redis-}" ;;
    dashboard) say "$HOST:$DASHBOARD_PORT" ;;
    proxy-*) say "$HOST:${PROXY_PORTS[$((${1#proxy-} - 1))]}" ;;
  esac
}

# ------------------------------------------------------------------- processes
#
# run/<name>.pid holds the pid; run/<name>.meta the program name (line 1), the
# address (line 2) and strings of which the process's command line must contain
# one (lines 3..). A pid counts as ours only if it is alive and matches, so a
# recycled pid is never signalled.

read_pid() {
  local f="$RUN/$1.pid" pid
  [ -r "$f" ] || return 1
  read -r pid <"$f" || true
  [[ ${pid:-} =~ ^[0-9]+$ ]] || return 1
  printf '%s\n' "$pid"
}

is_ours() {
  local name=$1 pid cmd first tok
  pid=$(read_pid "$name") || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) " || return 1
  [ "$cmd" != " " ] || return 1 # exited (zombie)
  local meta="$RUN/$name.meta"
  [ -r "$meta" ] || return 1
  local -a m
  mapfile -t m <"$meta"
  ((${#m[@]} >= 3)) || return 1
  first=${cmd%% *}
  [ "${first##*/}" = "${m[0]}" ] || return 1
  for tok in "${m[@]:2}"; do
    [[ $cmd == *"$tok"* ]] && return 0
  done
  return 1
}

write_meta() { # name program address match...
  local name=$1
  shift
  printf '%s\n' "$@" >"$RUN/$name.meta"
}

# Starts "$@" in the background, detached from this terminal (nohup, own
# session), appending its output to $LOGS/<name>.log, and records its pid.
start_proc() {
  local name=$1 pidf="$RUN/$1.pid" log="$LOGS/$1.log" i
  shift
  rm -f "$pidf"
  printf '\n--- %s: starting %s\n' "$(date '+%F %T')" "$*" >>"$log"
  # The wrapper writes its own pid and execs the program, so the pid is the
  # program's even if setsid had to fork. fd 9 (our lock) is not inherited.
  # NO_COLOR: plain log files (no ANSI colours from the Rust binaries).
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner bash
  NO_COLOR=1 nohup setsid bash -c 'echo $$ >"$0" && exec "$@"' "$pidf" "$@" </dev/null >>"$log" 2>&1 9>&- &
  # Until the wrapper has exec'd, the pid is still a bash: wait for the program.
  for ((i = 0; i < 100; i++)); do
    is_ours "$name" && return 0
    sleep 0.05
  done
  tail -n 20 "$log" >&2 || true
  die "$name did not start; see $log"
}

log_of() {
  say "$LOGS/$1.log"
}

# wait_until NAME WHAT SECONDS COMMAND...: COMMAND succeeds, or NAME died, or time ran out.
wait_until() {
  local name=$1 what=$2 limit=$3
  shift 3
  local deadline=$((SECONDS + limit))
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! is_ours "$name"; then
      printf 'local-cluster: %s exited while starting; the end of %s:\n' "$name" "$(log_of "$name")" >&2
      tail -n 20 "$(log_of "$name")" >&2 || true
      die "$name failed to start (the rest keeps running: '$ME status', '$ME down')"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$(log_of "$name")" >&2 || true
      die "$name is not $what after ${limit}s; see $(log_of "$name")"
    fi
    sleep 0.2
  done
}

stop_proc() {
  local name=$1 pid i
  if ! pid=$(read_pid "$name"); then
    rm -f "$RUN/$name.pid" "$RUN/$name.meta"
    return 0
  fi
  if ! is_ours "$name"; then
    say "$name: not running (pid $pid is gone or is not ours); removing its pid file"
    rm -f "$RUN/$name.pid" "$RUN/$name.meta"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do # 10 s: proxies drain their sessions
    is_ours "$name" || break
    sleep 0.1
  done
  if is_ours "$name"; then
    say "$name: pid $pid ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      is_ours "$name" || break
      sleep 0.1
    done
  fi
  if is_ours "$name"; then
    printf 'local-cluster: %s (pid %s) is still running\n' "$name" "$pid" >&2
    return 1
  fi
  # Gone from /proc too once its parent (init, usually) has reaped it.
  for ((i = 0; i < 30; i++)); do
    [ -e "/proc/$pid" ] || break
    sleep 0.1
  done
  say "stopped $name (pid $pid)"
  rm -f "$RUN/$name.pid" "$RUN/$name.meta"
}

# ------------------------------------------------------------------------ ports

port_listening() {
  # shellcheck disable=SC2016 # $0 belongs to the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" >/dev/null 2>&1
}

port_owner() {
  local who=""
  if command -v ss >/dev/null 2>&1; then
    who=$(ss -Hltnp "sport = :$1" 2>/dev/null |
      sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1, pid \2/p' | head -n 1)
  fi
  say "${who:-something is listening on it}"
}

env_for_port() {
  local name=$1 port=$2
  case $name in
    etcd) if [ "$port" = "$ETCD_PORT" ]; then say SHARDIS_ETCD_PORT; else say SHARDIS_ETCD_PEER_PORT; fi ;;
    redis-*) say SHARDIS_REDIS_PORTS ;;
    dashboard) say SHARDIS_DASHBOARD_PORT ;;
    proxy-*) if [[ " ${PROXY_PORTS[*]} " == *" $port "* ]]; then say SHARDIS_PROXY_PORTS; else say SHARDIS_PROXY_ADMIN_PORTS; fi ;;
  esac
}

# Every port of every component about to start must be free.
check_ports() {
  local c p
  for c in "$@"; do
    for p in ${PORTS_OF[$c]}; do
      if port_listening "$p"; then
        die "port $p is taken ($(port_owner "$p")); it is needed for $c. Free it, or pick another port with $(env_for_port "$c" "$p")=..."
      fi
    done
  done
}

# ---------------------------------------------------------------- install, build

install_missing() {
  [ "${SHARDIS_SKIP_INSTALL:-0}" = 1 ] && return 0
  local -a pkgs=()
  local pair cmd pkg
  for pair in redis-server:redis-server redis-cli:redis-tools etcd:etcd-server etcdctl:etcd-client \
    protoc:protobuf-compiler curl:curl cc:build-essential; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || pkgs+=("$pkg")
  done
  ((${#pkgs[@]} == 0)) && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "missing: ${pkgs[*]} (Debian package names), and there is no apt-get here: install them and run again"
  local -a sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "missing packages ${pkgs[*]}: run as root or install sudo"
    sudo=(sudo)
  fi
  step "installing ${pkgs[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
}

find_cargo() {
  if command -v cargo >/dev/null 2>&1; then
    CARGO=cargo
  elif [ -x "${HOME:-/nonexistent}/.cargo/bin/cargo" ]; then
    CARGO="$HOME/.cargo/bin/cargo"
  else
    die "cargo is missing: install Rust $(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n 1) or newer with rustup, then run again"
  fi
}

build() {
  if [ "${SHARDIS_SKIP_BUILD:-0}" = 1 ]; then
    [ -x "$PROXY_BIN" ] || die "SHARDIS_SKIP_BUILD=1 but $PROXY_BIN does not exist"
    say "(SHARDIS_SKIP_BUILD=1: using the binaries in $TARGET_DIR/release)"
    return 0
  fi
  find_cargo
  step "building release binaries (cargo build --release --bins)"
  if ! (cd "$ROOT" && "$CARGO" build --release --bins); then
    if [ -x "$PROXY_BIN" ]; then
      die "the build failed (SHARDIS_SKIP_BUILD=1 starts the cluster with the binaries built before)"
    fi
    die "the build failed"
  fi
  [ -x "$PROXY_BIN" ] || die "the build did not produce $PROXY_BIN"
}

# --------------------------------------------------------------------- starting

etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints="$ETCD_URL" --dial-timeout=3s --command-timeout=10s "$@"; }

etcd_healthy() { curl -fsS --max-time 2 "$ETCD_URL/health" | grep -q '"health": *"true"'; }
redis_up() { [ "$(redis-cli -h "$HOST" -p "$1" ping 2>/dev/null)" = PONG ]; }
replica_linked() { redis-cli -h "$HOST" -p "$1" info replication 2>/dev/null | grep -q '^master_link_status:up'; }
http_answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)" != 000 ]; }
http_200() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)" = 200 ]; }

start_etcd() {
  mkdir -p "$HOME_DIR/etcd"
  write_meta etcd etcd "$HOST:$ETCD_PORT" "$HOME_DIR/etcd "
  start_proc etcd etcd --name shardis-local --data-dir "$HOME_DIR/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster "shardis-local=http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster-state new --auto-compaction-retention 1h --logger zap
  wait_until etcd healthy 30 etcd_healthy
}

start_redis() {
  local p=$1 name="redis-$1"
  # No persistence, and replication that writes no RDB file either (the
  # master streams it, the replica loads it from the socket): a server that
  # is restarted starts empty instead of loading a stale replication dump.
  local -a args=(--port "$p" --bind "$HOST" --dir "$HOME_DIR/redis-$p" --logfile "$LOGS/$name.log"
    --daemonize no --save '' --appendonly no --repl-diskless-sync yes --repl-diskless-load swapdb)
  [ -z "${MASTER_OF[$p]:-}" ] || args+=(--replicaof "$HOST" "${MASTER_OF[$p]}")
  mkdir -p "$HOME_DIR/redis-$p"
  write_meta "$name" redis-server "$HOST:$p" "$HOST:$p " "--port $p "
  start_proc "$name" redis-server "${args[@]}"
  wait_until "$name" "answering PING" 15 redis_up "$p"
}

start_dashboard() {
  write_meta dashboard shardis-dashboard "$HOST:$DASHBOARD_PORT" "$HOST:$DASHBOARD_PORT "
  start_proc dashboard "$DASHBOARD_BIN" --listen "$HOST:$DASHBOARD_PORT" --etcd "$ETCD_URL" --cluster "$CLUSTER"
  wait_until dashboard "answering HTTP" 30 http_answers "$DASHBOARD_URL/healthz"
}

start_proxy() {
  local name=$1 i=$((${1#proxy-} - 1))
  local port=${PROXY_PORTS[$i]} admin=${ADMIN_PORTS[$i]} conf="$CONF/$name.toml"
  cat >"$conf" <<EOF
# Written by $ME each time it starts $name: edit deploy/local-cluster.sh, not this file.
# Every other setting keeps its default (target/release/shardis-proxy --default-config).
listen = "$HOST:$port"
admin_listen = "$HOST:$admin"
etcd = ["$ETCD_URL"]
cluster = "$CLUSTER"
id = "$name"
EOF
  write_meta "$name" shardis-proxy "$HOST:$port" "$conf "
  start_proc "$name" "$PROXY_BIN" --config "$conf"
}

# ---------------------------------------------------------------------- topology

# A topology already in etcd is kept when it names every server of ours and
# leaves no slot unassigned (a second `up`, or changes made since).
topology_complete() {
  local doc=$1 p
  [ -n "$doc" ] || return 1
  [[ $doc != *'"unassigned"'* ]] || return 1
  for p in "${REDIS_PORTS[@]}"; do
    [[ $doc == *"\"$HOST:$p\""* ]] || return 1
  done
}

topology_json() { # version
  local v=$1 g p sep="" out groups="" slots=""
  for g in "${GROUP_IDS[@]}"; do
    local servers="" s=""
    for p in ${GROUP_PORTS[$g]}; do
      servers+="$s\"$HOST:$p\""
      s=,
    done
    groups+="$sep{\"id\":$g,\"servers\":[$servers]}"
    slots+="$sep{\"from\":${GROUP_FROM[$g]},\"to\":${GROUP_TO[$g]},\"state\":\"normal\",\"group\":$g}"
    sep=,
  done
  out="{\"version\":$v,\"groups\":[$groups],\"slots\":[$slots]}"
  printf '%s\n' "$out"
}

go_quote() {
  local q=${1//\\/\\\\}
  q=${q//\"/\\\"}
  printf '"%s"' "$q"
}

# Without the dashboard: one etcd transaction writes the document and its
# version, guarded by the version it read (as the dashboard's own writes are).
write_topology_etcd() {
  local cur next cmp json res
  cur=$(etcdctl_ get --print-value-only "$KEY_VERSION") || die "cannot read $KEY_VERSION from etcd"
  if [ -z "$cur" ]; then
    next=1
    cmp="create(\"$KEY_VERSION\") = \"0\""
  else
    [[ $cur =~ ^[0-9]+$ ]] || die "$KEY_VERSION holds '$cur', not a version"
    next=$((cur + 1))
    cmp="value(\"$KEY_VERSION\") = \"$cur\""
  fi
  json=$(topology_json "$next")
  # etcdctl txn reads: compares, a blank line, success requests, a blank line,
  # failure requests (none), a blank line.
  res=$(printf '%s\n\nput %s %s\nput %s "%s"\n\n\n' "$cmp" "$KEY_TOPOLOGY" "$(go_quote "$json")" "$KEY_VERSION" "$next" |
    etcdctl_ txn) || die "etcdctl txn failed: $res"
  [ "$(head -n 1 <<<"$res")" = SUCCESS ] || die "the topology changed while it was being written (version was $cur); run '$ME up' again"
  say "topology version $next written to $KEY_TOPOLOGY"
}

# api METHOD PATH JSON OK_CODES: fails with the API's own error text otherwise.
# 503 and refused connections are retried for 30 s (the dashboard may still be
# electing itself leader). The dashboard inherits SHARDIS_ADMIN_TOKEN from this
# environment, so the calls bring it when it is set.
api() {
  local method=$1 path=$2 body=$3 ok=$4 out code text deadline=$((SECONDS + 30))
  local -a auth=()
  [ -z "${SHARDIS_ADMIN_TOKEN:-}" ] || auth=(-H "Authorization: Bearer $SHARDIS_ADMIN_TOKEN")
  while :; do
    out=$(curl -s --max-time 60 -X "$method" -H 'Content-Type: application/json' "${auth[@]}" -d "$body" \
      -w '\n%{http_code}' "$DASHBOARD_URL$path") || out=$'\n000'
    code=${out##*$'\n'}
    text=${out%$'\n'*}
    if [[ " $ok " == *" $code "* ]]; then
      API_CODE=$code
      API_MESSAGE=$(sed -n 's/.*"message": *"\([^"]*\)".*/\1/p' <<<"$text")
      API_ERROR=$(sed -n 's/.*"error": *"\([^"]*\)".*/\1/p' <<<"$text")
      API_ERROR=${API_ERROR:-$text}
      return 0
    fi
    if [[ $code == 503 || $code == 000 ]] && ((SECONDS < deadline)); then
      sleep 0.5
      continue
    fi
    die "dashboard: $method $path $body -> HTTP $code: ${text:-(no body)}"
  done
}

configure_with_dashboard() {
  local g p
  for g in "${GROUP_IDS[@]}"; do
    api POST /api/v1/groups "{\"id\":$g}" "200 201 204 409"
    if [ "$API_CODE" = 409 ]; then say "group $g: $API_ERROR (continuing)"; else say "${API_MESSAGE:-group $g created}"; fi
    for p in ${GROUP_PORTS[$g]}; do
      api POST "/api/v1/groups/$g/servers" "{\"addr\":\"$HOST:$p\"}" "200 201 204 409"
      if [ "$API_CODE" = 409 ]; then
        say "$HOST:$p: $API_ERROR (continuing)"
      else
        say "${API_MESSAGE:-$HOST:$p added to group $g}"
      fi
    done
  done
  for g in "${GROUP_IDS[@]}"; do
    api POST /api/v1/slots/assign "{\"slots\":\"${GROUP_FROM[$g]}-${GROUP_TO[$g]}\",\"group\":$g}" "200 201 202 204"
    say "${API_MESSAGE:-slots ${GROUP_FROM[$g]}-${GROUP_TO[$g]} assigned to group $g}"
  done
  local deadline=$((SECONDS + 15))
  until topology_complete "$(etcdctl_ get --print-value-only "$KEY_TOPOLOGY" 2>/dev/null || true)"; do
    ((SECONDS < deadline)) || die "the dashboard accepted the requests but $KEY_TOPOLOGY is not complete after 15s; see $(log_of dashboard)"
    sleep 0.3
  done
}

configure_topology() {
  local doc
  doc=$(etcdctl_ get --print-value-only "$KEY_TOPOLOGY") || die "cannot read $KEY_TOPOLOGY from etcd"
  if topology_complete "$doc"; then
    say "the topology in etcd already covers every server and slot (version $(etcdctl_ get --print-value-only "$KEY_VERSION")): left as it is"
    follow_topology_roles "$doc"
    return 0
  fi
  [ -z "$doc" ] || say "the topology in etcd does not match this layout: replacing it"
  if have_dashboard; then
    step "assigning the slots through the dashboard API ($DASHBOARD_URL)"
    configure_with_dashboard
  else
    step "writing the topology into etcd with etcdctl"
    say "note: the dashboard (shardis-dashboard) is not built yet; the slots go straight into etcd"
    write_topology_etcd
  fi
}

# Each group's servers in the topology document $1, a line each, separated
# by commas, its master first.
group_servers() {
  local list
  while read -r list; do
    list=${list#*[}
    list=${list%]*}
    printf '%s\n' "${list//\"/}"
  done < <(grep -o '"servers":\[[^]]*\]' <<<"$1")
}

# A kept topology may name another master than this layout's (a promotion
# since): the servers, started in the layout's roles, follow the topology's
# (each group's first server is its master), so the master it names takes
# writes.
follow_topology_roles() {
  local doc=$1 master addr p
  while IFS=, read -r -a addrs; do
    master=${addrs[0]:-}
    [ -n "$master" ] || continue
    for addr in "${addrs[@]}"; do
      p=${addr##*:}
      [ "${addr%:*}" = "$HOST" ] && [ -n "${GROUP_OF[$p]:-}" ] || continue
      if [ "$addr" = "$master" ]; then
        if [ -n "${MASTER_OF[$p]:-}" ]; then
          say "$addr is its group's master in the topology: REPLICAOF NO ONE"
          redis-cli -h "$HOST" -p "$p" replicaof no one >/dev/null
        fi
      elif [ "${MASTER_OF[$p]:-}" != "${master##*:}" ]; then
        say "$addr replicates ${master} as the topology says"
        redis-cli -h "$HOST" -p "$p" replicaof "${master%:*}" "${master##*:}" >/dev/null
      fi
    done
  done < <(group_servers "$doc")
}

# Refuses to restart a group's master (as the topology names it) that died
# while another server of its group still runs: with no persistence it would
# come back empty, and its replicas would then copy the empty data set.
refuse_empty_masters() {
  local want=$1 doc addr master p q others
  doc=$(etcdctl_ get --print-value-only "$KEY_TOPOLOGY" 2>/dev/null) || return 0
  while IFS=, read -r -a addrs; do
    master=${addrs[0]:-}
    p=${master##*:}
    [ -n "$master" ] && [ "${master%:*}" = "$HOST" ] && [[ $want == *" redis-$p "* ]] || continue
    [ -e "$RUN/redis-$p.pid" ] || continue
    others=""
    for addr in "${addrs[@]:1}"; do
      q=${addr##*:}
      if [ "${addr%:*}" = "$HOST" ] && is_ours "redis-$q"; then others+=" $addr"; fi
    done
    [ -n "$others" ] || continue
    others=${others# }
    die "$master, group ${GROUP_OF[$p]:-?}'s master, is down; restarted it would be an empty master (no persistence here) and its replicas would copy that. Promote one of its replicas first (shardis --dashboard $DASHBOARD_URL promote ${GROUP_OF[$p]:-GROUP} ${others%% *}), then run '$ME up' again: $master then comes back as a replica."
  done < <(group_servers "$doc")
}

# --------------------------------------------------------------------- commands

lock() {
  mkdir -p "$RUN" "$LOGS" "$CONF"
  exec 9>"$RUN/lock"
  flock -n 9 || die "another '$ME' is running on $HOME_DIR"
}

summary() {
  local i g p role
  say ""
  say "Shardis local cluster '$CLUSTER' is up."
  for i in "${!PROXY_PORTS[@]}"; do
    say "  proxy-$((i + 1)):    redis-cli -p ${PROXY_PORTS[$i]}        (admin http://$HOST:${ADMIN_PORTS[$i]}/metrics)"
  done
  if have_dashboard; then
    say "  dashboard:  $DASHBOARD_URL   (web UI in a browser; API at $DASHBOARD_URL/api/v1/openapi.json)"
  else
    say "  dashboard:  not built yet (the topology was written to etcd directly)"
  fi
  say "  etcd:       $ETCD_URL   (etcdctl --endpoints=$ETCD_URL get --prefix /shardis/$CLUSTER/)"
  for g in "${GROUP_IDS[@]}"; do
    local line=""
    for p in ${GROUP_PORTS[$g]}; do
      [ -n "${MASTER_OF[$p]:-}" ] && role=replica || role=master
      line+=" $p ($role)"
    done
    say "  group $g:    slots ${GROUP_FROM[$g]}-${GROUP_TO[$g]}, redis$line"
  done
  say "  data:       $HOME_DIR"
  say "  logs:       $LOGS"
  local again=$ME
  [ -z "${SHARDIS_HOME:-}" ] || again="SHARDIS_HOME=$HOME_DIR $ME"
  say "  status:     $again status"
  say "  stop:       $again down      (down --purge also deletes $HOME_DIR)"
}

cmd_up() {
  lock
  touch "$MARKER"
  local -a todo=() restart=()
  local c
  while read -r c; do
    if is_ours "$c"; then continue; fi
    todo+=("$c")
    [ ! -e "$RUN/$c.pid" ] || restart+=("$c")
  done < <(wanted)
  if ((${#todo[@]} == 0)); then
    say "Everything is already running."
    status_table || true
    summary
    return 0
  fi
  if ((${#restart[@]} > 0)); then
    say "Not running, to be restarted: ${restart[*]}"
  fi
  check_ports "${todo[@]}"
  install_missing
  build
  # The build may have produced the dashboard.
  if have_dashboard && [[ " ${todo[*]} " != *" dashboard "* ]] && ! is_ours dashboard; then
    check_ports dashboard
    todo+=(dashboard)
  fi

  local want p
  want=" ${todo[*]} "
  if [[ $want == *" etcd "* ]]; then
    step "starting etcd on $HOST:$ETCD_PORT (peer $ETCD_PEER_PORT)"
    start_etcd
  fi
  refuse_empty_masters "$want"
  for c in "${COMPONENTS[@]}"; do
    [[ $c == redis-* && $want == *" $c "* ]] || continue
    p=${c#redis-}
    if [ -n "${MASTER_OF[$p]:-}" ]; then
      step "starting redis $HOST:$p (group ${GROUP_OF[$p]}, replica of ${MASTER_OF[$p]})"
    else
      step "starting redis $HOST:$p (group ${GROUP_OF[$p]}, master)"
    fi
    start_redis "$p"
  done
  local masters
  masters=$(group_servers "$(etcdctl_ get --print-value-only "$KEY_TOPOLOGY" 2>/dev/null || true)" | cut -d, -f1)
  for p in "${REDIS_PORTS[@]}"; do
    [ -n "${MASTER_OF[$p]:-}" ] || continue
    # Promoted since: the topology's roles are set below, nothing to wait for.
    if [ -n "$masters" ] && ! grep -qx "$HOST:${MASTER_OF[$p]}" <<<"$masters"; then continue; fi
    local deadline=$((SECONDS + 15))
    until replica_linked "$p"; do
      if ((SECONDS >= deadline)); then
        say "warning: replica $p has no link to its master ${MASTER_OF[$p]} yet; see $(log_of "redis-$p")"
        break
      fi
      sleep 0.2
    done
  done
  if [[ $want == *" dashboard "* ]]; then
    step "starting the dashboard on $DASHBOARD_URL"
    start_dashboard
  fi
  configure_topology
  for c in "${COMPONENTS[@]}"; do
    [[ $c == proxy-* && $want == *" $c "* ]] || continue
    step "starting $c on $(addr_of "$c")"
    start_proxy "$c"
  done
  for c in "${COMPONENTS[@]}"; do
    [[ $c == proxy-* && $want == *" $c "* ]] || continue
    local i=$((${c#proxy-} - 1))
    wait_until "$c" ready 30 http_200 "http://$HOST:${ADMIN_PORTS[$i]}/readyz"
    wait_until "$c" "answering PING" 10 redis_up "${PROXY_PORTS[$i]}"
  done
  say ""
  status_table || true
  summary
}

# Prints one line per component; returns non-zero when one that `up` wants is not running.
status_table() {
  local c pid state extra all_ok=0 i p code info
  printf '%-11s %-22s %-8s %-6s %s\n' COMPONENT ADDRESS PID STATE DETAIL
  local -A listed=()
  local -a names=("${COMPONENTS[@]}")
  local f
  for f in "$RUN"/*.pid; do # anything started with other settings
    [ -e "$f" ] || continue
    c=$(basename "$f" .pid)
    [[ " ${names[*]} " == *" $c "* ]] || names+=("$c")
  done
  for c in "${names[@]}"; do
    [ -z "${listed[$c]:-}" ] || continue
    listed[$c]=1
    pid=$(read_pid "$c" 2>/dev/null) || pid=-
    extra=""
    if is_ours "$c"; then
      state=alive
      case $c in
        redis-*)
          p=${c#redis-}
          info=$(redis-cli -h "$HOST" -p "$p" info replication 2>/dev/null | tr -d '\r' || true)
          if grep -q '^role:master' <<<"$info"; then
            extra="master${GROUP_OF[$p]:+ of group ${GROUP_OF[$p]}}, $(sed -n 's/^connected_slaves:/replicas connected: /p' <<<"$info")"
          elif grep -q '^role:slave' <<<"$info"; then
            extra="replica of $(sed -n 's/^master_port://p' <<<"$info"), link $(sed -n 's/^master_link_status://p' <<<"$info")"
          else
            extra="no answer to INFO"
          fi
          ;;
        proxy-*)
          i=$((${c#proxy-} - 1))
          if [ -n "${ADMIN_PORTS[$i]:-}" ]; then
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$HOST:${ADMIN_PORTS[$i]}/readyz" || true)
            extra="readyz: $code (admin $HOST:${ADMIN_PORTS[$i]})"
            [ "$code" = 200 ] || all_ok=1
          fi
          ;;
        etcd)
          if etcd_healthy; then extra=healthy; else extra="not healthy" all_ok=1; fi
          ;;
        dashboard) extra="$DASHBOARD_URL" ;;
      esac
    elif [ "$pid" = - ]; then
      state=-
      if [ "$c" = dashboard ] && ! have_dashboard; then
        extra="not built yet"
      else
        extra="not started"
        all_ok=1
      fi
    else
      state=dead
      extra="see $(log_of "$c")"
      all_ok=1
    fi
    local addr
    addr=$(sed -n 2p "$RUN/$c.meta" 2>/dev/null || true)
    [ -n "$addr" ] || addr=$(addr_of "$c")
    printf '%-11s %-22s %-8s %-6s %s\n' "$c" "$addr" "$pid" "$state" "$extra"
  done
  return $all_ok
}

cmd_status() {
  if [ ! -d "$RUN" ]; then
    say "Nothing was started in $HOME_DIR ('$ME up' starts the cluster)."
    return 3
  fi
  say "Shardis local cluster '$CLUSTER' in $HOME_DIR"
  status_table && return 0
  return 3
}

cmd_down() {
  local purge=0 arg
  for arg in "$@"; do
    case $arg in
      --purge) purge=1 ;;
      *) die "down: unknown option '$arg' (only --purge)" ;;
    esac
  done
  if [ ! -d "$RUN" ]; then
    say "Nothing was started in $HOME_DIR."
  else
    lock
    # Proxies first (they revoke their etcd leases), then the dashboard, the
    # Redis servers (replicas before masters does not matter: none persists),
    # etcd last; then anything else with a pid file.
    local -a order=() rest=()
    local f c failed=0
    for f in "$RUN"/proxy-*.pid "$RUN"/dashboard.pid "$RUN"/redis-*.pid "$RUN"/etcd.pid "$RUN"/*.pid; do
      [ -e "$f" ] || continue
      c=$(basename "$f" .pid)
      [[ " ${order[*]} " == *" $c "* ]] || order+=("$c")
    done
    if ((${#order[@]} == 0)); then
      say "Nothing is running from $HOME_DIR."
    fi
    for c in "${order[@]}"; do
      stop_proc "$c" || failed=1
    done
    ((failed == 0)) || die "some processes could not be stopped; nothing was deleted"
  fi
  if ((purge)); then
    if [ -d "$HOME_DIR" ]; then
      [ -e "$MARKER" ] || die "--purge: $HOME_DIR has no $(basename "$MARKER"), so it was not made by '$ME up'; not deleting it"
      rm -rf -- "$HOME_DIR"
      say "deleted $HOME_DIR"
    fi
  elif [ -d "$HOME_DIR" ]; then
    say "data and logs kept in $HOME_DIR ('$ME down --purge' deletes them)"
  fi
}

main() {
  local cmd=${1:-}
  [ $# -eq 0 ] || shift
  case $cmd in
    up | status)
      [ $# -eq 0 ] || die "$cmd takes no arguments"
      ;;
    down) ;;
    -h | --help | help)
      usage
      return 0
      ;;
    *)
      usage >&2
      return 2
      ;;
  esac
  validate
  plan_groups
  plan_components
  "cmd_$cmd" "$@"
}

main "$@"
