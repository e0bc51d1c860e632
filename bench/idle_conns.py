#!/usr/bin/env python3
"""Opens many idle client connections to a server and reports its RSS growth.

usage: idle_conns.py --pid PID --port PORT [--conns 10000] [--limit-mib 100]
                     [--settle 2]

Reads VmRSS of PID, opens CONNS connections to 127.0.0.1:PORT, sends one PING
on each and reads +PONG (so that each client session is really set up on the
server side), waits SETTLE seconds, reads VmRSS again, and prints the growth.
Then checks that a PING still works, closes everything and reads VmRSS once
more. Exits 0 when the growth is below LIMIT_MIB, 1 otherwise.
"""

import argparse
import resource
import selectors
import socket
import sys
import time


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 256
    if soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {want}: run with a higher ulimit -Hn")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def ping_all(socks, timeout: float) -> None:
    """Sends PING on every socket, waits for +PONG on all of them."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    deadline = time.monotonic() + timeout
    pending = len(socks)
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            raise SystemExit(f"{pending} connections got no PONG within {timeout}s")
        for key, _ in sel.select(left):
            s = key.fileobj
            data = s.recv(64)
            if not data:
                raise SystemExit("the server closed a connection")
            bufs[s] += data
            if bufs[s].endswith(b"\r\n"):
                if bufs[s] != b"+PONG\r\n":
                    raise SystemExit(f"PING answered {bufs[s]!r}")
                sel.unregister(s)
                s.setblocking(True)
                pending -= 1
    sel.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--limit-mib", type=float, default=100.0)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=500)
    a = ap.parse_args()
    raise_nofile(a.conns)

    before = rss_kib(a.pid)
    t0 = time.monotonic()
    socks = []
    # Connect in batches, and have each batch answer a PING before the next,
    # so that the server's accept backlog never overflows.
    while len(socks) < a.conns:
        batch = []
        for _ in range(min(a.batch, a.conns - len(socks))):
            s = socket.create_connection(("127.0.0.1", a.port), timeout=30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            batch.append(s)
        ping_all(batch, 60)
        socks += batch
    t1 = time.monotonic()
    time.sleep(a.settle)
    after = rss_kib(a.pid)
    # Still serving?
    ping_all(socks[:1] + socks[-1:], 10)
    delta_mib = (after - before) / 1024
    per_conn = (after - before) * 1024 / a.conns
    for s in socks:
        s.close()
    time.sleep(a.settle)
    closed = rss_kib(a.pid)

    ok = delta_mib < a.limit_mib
    print(f"connections:        {a.conns} (opened and PINGed in {t1 - t0:.1f}s)")
    print(f"RSS before:         {before / 1024:.1f} MiB")
    print(f"RSS with idle conns: {after / 1024:.1f} MiB")
    print(f"RSS after closing:  {closed / 1024:.1f} MiB")
    print(f"growth:             {delta_mib:.1f} MiB ({per_conn:.0f} bytes per connection)")
    print(f"{'PASS' if ok else 'FAIL'}: growth {delta_mib:.1f} MiB {'<' if ok else '>='} {a.limit_mib:g} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
