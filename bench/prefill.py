#!/usr/bin/env python3
"""Writes every key redis-benchmark -r N can pick, through one endpoint.

redis-benchmark replaces __rand_int__ with a 12-digit, zero-padded number
below -r, so with -r 100000 its keys are key:000000000000 .. key:000000099999.
This sets all of them (value "xxx", the size redis-benchmark's SET writes) with
pipelined SETs, checks every reply, then reads a sample back with MGET.

usage: prefill.py PORT [KEYSPACE]
"""

import random
import socket
import sys

BATCH = 1000


def key(i: int) -> bytes:
    return b"key:%012d" % i


def cmd(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise RuntimeError("connection closed")
        self.buf += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def reply(self):
        ln = self.line()
        t, rest = ln[:1], ln[1:]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise RuntimeError("error reply: " + rest.decode(errors="replace"))
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            val, self.buf = self.buf[:n], self.buf[n + 2:]
            return val
        if t == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError("unexpected reply: %r" % ln)


def main() -> int:
    port = int(sys.argv[1])
    keyspace = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
    c = Conn(port)
    for start in range(0, keyspace, BATCH):
        end = min(start + BATCH, keyspace)
        c.sock.sendall(b"".join(cmd(b"SET", key(i), b"xxx") for i in range(start, end)))
        for _ in range(start, end):
            r = c.reply()
            if r != b"OK":
                raise RuntimeError("SET answered %r" % r)
    rng = random.Random(1)
    for _ in range(100):
        ks = [key(rng.randrange(keyspace)) for _ in range(10)]
        c.sock.sendall(cmd(b"MGET", *ks))
        r = c.reply()
        if r != [b"xxx"] * 10:
            raise RuntimeError("MGET %r answered %r" % (ks, r))
    print("prefilled %d keys through 127.0.0.1:%d" % (keyspace, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
