"""redis-py (RESP3) workers through the proxies while slots migrate.

Usage: redis_py_migration.py PORT[,PORT...] STOP_FILE

Each worker has its own keys (counters, lists, strings, hashes, spread over
all slots) and its own model of them. It writes and reads them until
STOP_FILE exists: single commands, non-transactional pipelines, MGET/MSET
across slots, expiries. Every read must match the model; a write that failed
(TRYAGAIN while a key is held or being moved) may or may not have happened,
and the model allows both. At the end every key is read back and checked.
Exit status 0: no problem found.
"""

import os
import random
import sys
import threading

import redis

PORTS = [int(p) for p in sys.argv[1].split(",")]
STOP_FILE = sys.argv[2]
WORKERS = 4
KEYS = 24
# Replies that mean "not done, try again": the proxy's answer while a key
# is held or its move failed. Anything else is a problem.
RETRYABLE = ("TRYAGAIN",)


class Model:
    """What each key may hold: a string key maps to a set of possible values
    (None: absent), one after a successful write or read, more after failed
    writes. Hashes are checked right after each write instead."""

    def __init__(self):
        self.counters = {}  # key -> [acked, failed]
        self.lists = {}  # key -> (acked elements in order, failed elements)
        self.values = {}  # string key -> set of possible values


class Worker(threading.Thread):
    def __init__(self, i):
        super().__init__(daemon=True)
        self.i = i
        self.rng = random.Random(i)
        self.r = redis.Redis(
            host="127.0.0.1",
            port=PORTS[i % len(PORTS)],
            protocol=3,
            decode_responses=True,
            socket_timeout=30,
        )
        self.m = Model()
        self.problems = []
        self.ops = 0
        self.retries = 0
        self.seq = 0

    def key(self, kind):
        return f"py{self.i}:{kind}{self.rng.randrange(KEYS)}"

    def problem(self, what):
        if len(self.problems) < 20:
            self.problems.append(what)

    def failed(self, e):
        if not str(e).startswith(RETRYABLE):
            self.problem(f"unexpected error: {e!r}")
        self.retries += 1

    def counter(self):
        k = self.key("c")
        c = self.m.counters.setdefault(k, [0, 0])
        return k, c

    def set_value(self, k, v, ok):
        prev = self.m.values.get(k, {None})
        self.m.values[k] = {v} if ok else prev | {v}

    def check_read(self, k, got):
        possible = self.m.values.get(k, {None})
        if got not in possible:
            self.problem(f"{k}: read {got!r}, expected one of {possible!r}")
        else:
            self.m.values[k] = {got}

    def step(self):
        self.seq += 1
        op = self.rng.randrange(9)
        r = self.r
        if op == 0:
            k, c = self.counter()
            try:
                r.incr(k)
                c[0] += 1
            except redis.ResponseError as e:
                c[1] += 1
                self.failed(e)
        elif op == 1:
            k = self.key("l")
            acked, failed = self.m.lists.setdefault(k, ([], set()))
            v = str(self.seq)
            try:
                r.rpush(k, v)
                acked.append(v)
            except redis.ResponseError as e:
                failed.add(v)
                self.failed(e)
        elif op == 2:
            k, v = self.key("s"), f"v{self.seq}"
            try:
                r.set(k, v)
                self.set_value(k, v, True)
                self.check_read(k, r.get(k))
            except redis.ResponseError as e:
                self.set_value(k, v, False)
                self.failed(e)
        elif op == 3:
            k, f, v = self.key("h"), f"f{self.seq % 4}", str(self.seq)
            try:
                r.hset(k, f, v)
                got = r.hget(k, f)
                if got != v:
                    self.problem(f"{k}.{f}: read {got!r} after writing {v!r}")
            except redis.ResponseError as e:
                self.failed(e)
        elif op == 4:
            # A pipeline (not a transaction): replies in order, one each.
            ck, c = self.counter()
            sk = self.key("s")
            lk = self.key("l")
            acked, failed = self.m.lists.setdefault(lk, ([], set()))
            v = str(self.seq)
            p = r.pipeline(transaction=False)
            p.incr(ck).get(sk).rpush(lk, v).llen(lk)
            res = p.execute(raise_on_error=False)
            if isinstance(res[0], Exception):
                c[1] += 1
                self.failed(res[0])
            else:
                c[0] += 1
            if isinstance(res[1], Exception):
                self.failed(res[1])
            else:
                self.check_read(sk, res[1])
            if isinstance(res[2], Exception):
                failed.add(v)
                self.failed(res[2])
            else:
                acked.append(v)
                if not isinstance(res[3], Exception) and res[3] != res[2]:
                    self.problem(f"{lk}: LLEN {res[3]} right after RPUSH answered {res[2]}")
        elif op == 5:
            ks = sorted({self.key("s") for _ in range(5)})
            try:
                got = r.mget(ks)
                for k, g in zip(ks, got):
                    self.check_read(k, g)
            except redis.ResponseError as e:
                self.failed(e)
        elif op == 6:
            pairs = {self.key("s"): f"m{self.seq}" for _ in range(4)}
            try:
                r.mset(pairs)
                for k, v in pairs.items():
                    self.set_value(k, v, True)
            except redis.ResponseError as e:
                for k, v in pairs.items():
                    self.set_value(k, v, False)
                self.failed(e)
        elif op == 7:
            k, v = self.key("s"), f"x{self.seq}"
            try:
                r.set(k, v, ex=1000)
                self.set_value(k, v, True)
                ttl = r.ttl(k)
                if not 990 <= ttl <= 1000:
                    self.problem(f"{k}: TTL {ttl} right after SET EX 1000")
            except redis.ResponseError as e:
                self.set_value(k, v, False)
                self.failed(e)
        else:
            k = self.key("s")
            try:
                got = r.getdel(k)
                self.check_read(k, got)
                self.m.values[k] = {None}
            except redis.ResponseError as e:
                self.m.values[k] = self.m.values.get(k, {None}) | {None}
                self.failed(e)
        self.ops += 1

    def run(self):
        try:
            while not os.path.exists(STOP_FILE):
                self.step()
        except Exception as e:  # a dropped connection, a protocol error
            self.problem(f"worker stopped: {e!r}")

    def verify(self):
        r = self.r
        for k, (acked, failed) in self.m.counters.items():
            got = int(r.get(k) or 0)
            if not acked <= got <= acked + failed:
                self.problem(f"{k}: {got}, acknowledged {acked}, failed {failed}")
        for k, (acked, failed) in self.m.lists.items():
            got = [v for v in r.lrange(k, 0, -1) if v not in failed]
            if got != acked:
                self.problem(f"{k}: {len(got)} acknowledged elements, expected {len(acked)}")
        for k, possible in self.m.values.items():
            got = r.get(k)
            if got not in possible:
                self.problem(f"{k}: {got!r} at the end, expected one of {possible!r}")


def main():
    workers = [Worker(i) for i in range(WORKERS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for w in workers:
        w.verify()
    ops = sum(w.ops for w in workers)
    retries = sum(w.retries for w in workers)
    print(f"{ops} operations, {retries} retryable errors")
    problems = [p for w in workers for p in w.problems]
    for p in problems:
        print("PROBLEM:", p)
    if ops < 1000:
        print("PROBLEM: too few operations")
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
