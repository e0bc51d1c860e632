#!/usr/bin/env python3
"""The summary of one bench/migrate.sh run (markdown on stdout).

usage: migrate_report.py RESULTS_DIR KEYS MIG_T0_MS MIG_T1_MS MAX_OPS RATE
       KEYS_GROUP1 KEYS_GROUP2 TICKS_REDIS TICKS_PROXIES TICKS_DASHBOARD
       TICKS_LOADGEN CLK_TCK SOURCE_PORT TARGET_PORT
Exit status 0 when every target is met, 1 otherwise.
"""

import csv
import datetime
import json
import os
import re
import sys

TIME_LIMIT_S = 30.0
P99_RATIO_LIMIT = 3.0
MAX_LIMIT_MS = 250.0


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def cmdstats(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)", line)
                if m:
                    out[m.group(1)] = (int(m.group(2)), int(m.group(3)), float(m.group(4)))
    except OSError:
        pass
    return out


def log_time(line):
    m = re.match(r"\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line)
    if not m:
        return None
    ts = m.group(1)
    if "." in ts:
        base, frac = ts.split(".")
        ts = base + "." + frac[:6]
        fmt = "%Y-%m-%dT%H:%M:%S.%f"
    else:
        fmt = "%Y-%m-%dT%H:%M:%S"
    t = datetime.datetime.strptime(ts, fmt).replace(tzinfo=datetime.timezone.utc)
    return t.timestamp() * 1000


def field(line, name):
    m = re.search(r"\b%s=(\"[^\"]*\"|\S+)" % re.escape(name), line)
    return m.group(1).strip('"') if m else None


def cpu_windows(path, clk):
    """Per window between consecutive marks of cpu.txt: its name, seconds,
    each core's busy share, the machine's busy cores, and ours (cores)."""
    marks = []
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) < 3:
                    continue
                cores = {}
                for i in range(3, len(w) - 2, 3):
                    cores[w[i]] = (int(w[i + 1]), int(w[i + 2]))
                marks.append((w[0], int(w[1]), int(w[2]), cores))
    except OSError:
        return []
    out = []
    for a, b in zip(marks, marks[1:]):
        secs = (b[1] - a[1]) / 1000
        shares = {}
        for c in b[3]:
            if c in a[3]:
                busy = b[3][c][0] - a[3][c][0]
                total = b[3][c][1] - a[3][c][1]
                shares[c] = busy / total if total else 0.0
        machine = 0.0
        if "cpu" in b[3] and "cpu" in a[3]:
            machine = (b[3]["cpu"][0] - a[3]["cpu"][0]) / clk / max(secs, 1e-9)
        ours = (b[2] - a[2]) / clk / max(secs, 1e-9)
        out.append((a[0], secs, shares, machine, ours))
    return out


def main():
    (rdir, keys, t0, t1, max_ops, rate, n1, n2, t_redis, t_proxy, t_dash, t_load, clk,
     src_port, dst_port) = sys.argv[1:16]
    keys, t0, t1 = int(keys), int(t0), int(t1)
    n1, n2 = int(n1), int(n2)
    clk = float(clk)
    mig = load(os.path.join(rdir, "migration.json"), {})
    try:
        with open(os.path.join(rdir, "dashboard.log")) as f:
            lines = f.readlines()
    except OSError:
        lines = []
    # When the dashboard logged the migration's end (more precise than the polls).
    ended_ms = None
    for line in lines:
        if "migration ended" in line:
            ended_ms = log_time(line)
    lj = load(os.path.join(rdir, "load.json"), {})
    phases = lj.get("phases", {})
    base, during, after = phases.get("baseline", {}), phases.get("migration", {}), phases.get("after", {})
    polled_s = (t1 - t0) / 1000
    wall_s = (ended_ms - t0) / 1000 if ended_ms else polled_s
    state = mig.get("state", "?")
    moved = mig.get("keys_moved", 0)
    api_s = mig.get("elapsed_secs", 0.0)
    kps_wall = keys / wall_s if wall_s > 0 else 0
    ratio = (during.get("p99_ms", 0) / base["p99_ms"]) if base.get("p99_ms") else float("inf")
    dmax = during.get("max_ms", 0)

    checks = [
        ("migration finished", state == "finished", state),
        ("all keys on group 2", n1 == 0 and n2 == keys, f"group 1 {n1}, group 2 {n2} (expected 0 / {keys})"),
        (f"time <= {TIME_LIMIT_S:.0f} s", state == "finished" and wall_s <= TIME_LIMIT_S,
         f"{wall_s:.1f} s wall clock, {api_s:.1f} s elapsed_secs"),
        (f"p99 during <= {P99_RATIO_LIMIT:.0f}x baseline", ratio <= P99_RATIO_LIMIT,
         f"{during.get('p99_ms', 0):.3f} / {base.get('p99_ms', 0):.3f} ms = {ratio:.2f}x"),
        (f"max during < {MAX_LIMIT_MS:.0f} ms", dmax < MAX_LIMIT_MS, f"{dmax:.1f} ms"),
        ("no request unanswered", lj.get("unanswered", 1) == 0 and not lj.get("failures"),
         f"unanswered {lj.get('unanswered')}, failures {len(lj.get('failures', []))}"),
    ]
    ok = all(c[1] for c in checks)

    print(f"## Migration of {keys:,} keys, wave_size {mig.get('wave_size', '?')}\n")
    print(f"- migration {mig.get('id')}: **{state}**, {moved:,} keys moved "
          f"({mig.get('bytes_moved', 0) / 2**20:.1f} MiB by MEMORY USAGE)")
    print(f"- time: **{wall_s:.2f} s** wall clock from the POST to the dashboard's `migration ended` log line; "
          f"{polled_s:.2f} s until a poll of the API saw it; API elapsed_secs {api_s:.2f} s")
    print(f"- rate: **{kps_wall:,.0f} keys/s** ({keys:,} keys / wall clock); API keys_per_sec "
          f"{mig.get('keys_per_sec', 0):,.0f}")
    raw = load(os.path.join(rdir, "raw-migrate.json"))
    if raw:
        print(f"- reference, no Shardis and no load: plain `MIGRATE ... KEYS` of the same {raw['keys']:,} keys "
              f"between the two servers in batches of {raw['batch']}, one at a time: {raw['seconds']:.2f} s "
              f"({raw['keys_per_sec']:,.0f} keys/s; slowest MIGRATE {raw['slowest_ms']:.1f} ms)")
    if mig.get("error"):
        print(f"- error: {mig['error']}")
    print(f"- load: {float(rate):,.0f} requests/s (50% GET / 50% SET, {lj.get('conns')} connections over "
          f"{len(lj.get('addr', []))} proxies, open loop); the proxies sustained {float(max_ops):,.0f} "
          f"requests/s closed loop; the tool's longest send lag behind schedule "
          f"{lj.get('max_send_lag_ms', 0):.1f} ms")
    print()
    print("| phase | requests | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, p in (("before (baseline)", base), ("during the migration", during), ("after", after)):
        if p:
            print(f"| {name} | {p['requests']:,} | {p['errors']:,} | {p['p50_ms']:.3f} | {p['p90_ms']:.3f} | "
                  f"{p['p99_ms']:.3f} | {p['p999_ms']:.3f} | {p['max_ms']:.1f} |")
    print()
    if lj.get("error_replies"):
        print("Error replies: " + "; ".join(f"{n}x `{m}`" for m, n in lj["error_replies"].items()))
        print()

    print("| target | result | value |")
    print("|---|---|---|")
    for name, good, val in checks:
        print(f"| {name} | {'PASS' if good else '**FAIL**'} | {val} |")
    print()

    # CPU during the migration window.
    secs = max(wall_s, 1e-9)
    print(f"CPU during the migration ({wall_s:.1f} s), share of one core: "
          f"redis servers {int(t_redis) / clk / secs:.0%}, proxies {int(t_proxy) / clk / secs:.0%}, "
          f"dashboard {int(t_dash) / clk / secs:.0%}, loadgen {int(t_load) / clk / secs:.0%}\n")

    windows = cpu_windows(os.path.join(rdir, "cpu.txt"), clk)
    if windows:
        print("Machine CPU (cores busy, from /proc/stat) vs the processes this run started; "
              "'others' is whatever else ran on the machine meanwhile:\n")
        print("| window | s | core 0 busy | core 1 busy | all busy (cores) | ours (cores) | others (cores) |")
        print("|---|---|---|---|---|---|---|")
        for name, secs, shares, machine, ours in windows:
            print(f"| {name} | {secs:.1f} | {shares.get('cpu0', 0):.0%} | {shares.get('cpu1', 0):.0%} | "
                  f"{machine:.2f} | {ours:.2f} | {max(machine - ours, 0):.2f} |")
        print()

    # Redis command statistics during the migration.
    src = cmdstats(os.path.join(rdir, f"commandstats-{src_port}.txt"))
    dst = cmdstats(os.path.join(rdir, f"commandstats-{dst_port}.txt"))
    rows = []
    for side, st in (("source", src), ("target", dst)):
        for cmd in ("migrate", "scan", "memory|usage", "restore", "restore-asking", "unlink", "del", "get", "set"):
            if cmd in st:
                calls, usec, per = st[cmd]
                rows.append(f"| {side} | {cmd} | {calls:,} | {usec / 1e6:.2f} | {per:.1f} |")
    if rows:
        print("Redis commandstats during the migration (reset at its start):\n")
        print("| server | command | calls | total s | µs/call |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))
        print()

    # Waves, from the dashboard's log.
    waves = []
    current = None
    for line in lines:
        t = log_time(line)
        if t is None or t < t0 - 1000:
            continue
        if re.search(r"\bwave moved\b", line):
            if current is not None:
                current["moved_at"] = t
                current["mover_ms"] = int(field(line, "ms") or 0)
        elif re.search(r"\bwave\b", line) and field(line, "slots"):
            current = {"slots": field(line, "slots"), "start": t}
            waves.append(current)
    if waves:
        print("Waves (dashboard log): start is when the wave began (hold), mover is the SCAN+MIGRATE "
              "time the dashboard logged, rest is hold/barriers/topology changes until the next wave "
              "(or the end):\n")
        print("| slots | start s | mover ms | total ms | rest ms |")
        print("|---|---|---|---|---|")
        for i, w in enumerate(waves):
            end = waves[i + 1]["start"] if i + 1 < len(waves) else t1
            total = end - w["start"]
            mover = w.get("mover_ms", 0)
            print(f"| {w['slots']} | {(w['start'] - t0) / 1000:.2f} | {mover} | {total:.0f} | "
                  f"{total - mover:.0f} |")
        print()

    # Stalls of progress (keys_moved flat for >= 1 s), from the API polls.
    try:
        with open(os.path.join(rdir, "progress.tsv")) as f:
            prog = list(csv.DictReader(f, delimiter="\t"))
    except OSError:
        prog = []
    flats = []
    start = None
    for a, b in zip(prog, prog[1:]):
        if a["keys_moved"] == b["keys_moved"] and b["state"] == "running":
            start = start or int(a["unix_ms"])
        else:
            if start is not None and int(a["unix_ms"]) - start >= 1000:
                flats.append((start, int(a["unix_ms"]), a["slots_done"], a["reason"]))
            start = None
    if flats:
        print("keys_moved stood still for a second or more (from the API, polled every 0.2 s):\n")
        for s, e, done, reason in flats:
            print(f"- {(s - t0) / 1000:.1f}-{(e - t0) / 1000:.1f} s ({(e - s) / 1000:.1f} s), slots_done {done}"
                  + (f", reason: {reason}" if reason else ""))
        print()

    # The worst seconds of the load during the migration.
    try:
        with open(os.path.join(rdir, "timeline.csv")) as f:
            tl = [r for r in csv.DictReader(f) if t0 - 1000 <= int(r["unix_ms"]) <= t1]
    except OSError:
        tl = []
    if tl:
        worst = sorted(tl, key=lambda r: -float(r["max_ms"]))[:5]
        print("Worst seconds of the load during the migration (by scheduled time; s after the POST): "
              + ", ".join(f"{(int(r['unix_ms']) - t0) / 1000:.0f} s: p99 {float(r['p99_ms']):.1f} ms, "
                          f"max {float(r['max_ms']):.1f} ms" for r in worst))
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
