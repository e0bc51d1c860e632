#!/usr/bin/env python3
"""Polls a migration until it ends, from one process (a curl and a jq per poll
cost the machine under test more than the poll itself).

usage: watch_migration.py DASHBOARD_URL ID TSV TIMEOUT_S [POLL_S]

Appends one tab-separated line per poll to TSV, logs progress to stderr every
2 s, and prints the last answer (JSON) on stdout. Exit status 0 when the
migration ended (finished, stopped or failed), 1 on the timeout.
"""
import json
import sys
import time
import urllib.request

url, mid, tsv, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
poll = float(sys.argv[5]) if len(sys.argv) > 5 else 0.2
fields = ["state", "slots_done", "slots_total", "keys_moved", "bytes_moved",
          "keys_per_sec", "elapsed_secs", "reason", "error"]
deadline = time.monotonic() + timeout
last_print = 0.0
answer = {}
with open(tsv, "w") as out:
    out.write("unix_ms\t" + "\t".join(fields) + "\n")
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v1/migrations/{mid}", timeout=30) as r:
                answer = json.load(r)
        except (OSError, ValueError) as e:
            print(f"watch_migration: {e}", file=sys.stderr)
            time.sleep(poll)
            continue
        now_ms = int(time.time() * 1000)
        row = []
        for f in fields:
            v = answer.get(f)
            if f == "keys_per_sec" and isinstance(v, (int, float)):
                v = round(v)
            row.append("" if v is None else str(v).replace("\t", " ").replace("\n", " "))
        line = f"{now_ms}\t" + "\t".join(row)
        out.write(line + "\n")
        out.flush()
        if time.monotonic() - last_print >= 2:
            last_print = time.monotonic()
            print(f"[{time.strftime('%H:%M:%S')}] migration {mid}: {line.replace(chr(9), ' ')}",
                  file=sys.stderr, flush=True)
        if answer.get("state") in ("finished", "stopped", "failed"):
            break
        if time.monotonic() >= deadline:
            print(f"migration {mid}: still {answer.get('state')} after {timeout:.0f}s; giving up waiting",
                  file=sys.stderr)
            print(json.dumps(answer))
            sys.exit(1)
        time.sleep(poll)
print(json.dumps(answer))
