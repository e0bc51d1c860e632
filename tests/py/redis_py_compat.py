"""redis-py against a running shardis-proxy: connection setup (HELLO 3,
CLIENT SETINFO), RESP3 and RESP2 replies, pipelines, fan-out commands.

Usage: python3 redis_py_compat.py PORT [PASSWORD]
Exits non-zero with the failing check on stderr.
"""
import sys

import redis


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def run(port, password, protocol):
    r = redis.Redis(host="127.0.0.1", port=port, password=password,
                    protocol=protocol, decode_responses=True,
                    socket_timeout=5)
    check(r.ping() is True, f"PING (RESP{protocol})")
    info = r.execute_command("HELLO", protocol)
    if isinstance(info, list):  # RESP2: a flat key/value list
        info = dict(zip(info[::2], info[1::2]))
    check(info["proto"] == protocol, f"HELLO proto {info}")
    check(info["mode"] == "standalone", "HELLO mode")
    r.client_setname(f"compat-{protocol}")
    check(r.client_getname() == f"compat-{protocol}", "CLIENT GETNAME")
    check(isinstance(r.client_id(), int), "CLIENT ID")

    p = f"py{protocol}:"
    r.delete(*[p + k for k in ("a", "n", "h", "z", "s")])
    check(r.set(p + "a", "1") is True, "SET")
    check(r.get(p + "a") == "1", "GET")
    check(r.incr(p + "n") == 1, "INCR")
    keys = [f"{p}k{i}" for i in range(50)]
    check(r.mset({k: k.upper() for k in keys}) is True, "MSET across groups")
    check(r.mget(keys + [p + "missing"]) == [k.upper() for k in keys] + [None],
          "MGET across groups")
    check(r.exists(*keys, keys[0]) == 51, "EXISTS counts duplicates")
    check(r.hset(p + "h", mapping={"f1": "v1", "f2": "v2"}) == 2, "HSET")
    check(r.hgetall(p + "h") == {"f1": "v1", "f2": "v2"}, "HGETALL")
    check(r.zadd(p + "z", {"a": 1.5, "b": 2}) == 2, "ZADD")
    check(r.zscore(p + "z", "a") == 1.5, "ZSCORE (a double in RESP3)")
    # redis-py gives tuples in RESP2 and lists in RESP3, straight from Redis too.
    check([tuple(x) for x in r.zrange(p + "z", 0, -1, withscores=True)]
          == [("a", 1.5), ("b", 2.0)], "ZRANGE WITHSCORES")
    check(r.sadd(p + "s", "x", "y") == 2 and r.smembers(p + "s") == {"x", "y"},
          "SADD/SMEMBERS (a set in RESP3)")
    check(r.expire(p + "a", 100) is True and 0 < r.ttl(p + "a") <= 100, "EXPIRE/TTL")

    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"{p}pipe{i}", i)
        pipe.get(f"{p}pipe{i}")
    out = pipe.execute()
    check(out == [x for i in range(200) for x in (True, str(i))], "pipeline order")

    try:
        r.execute_command("KEYS", "*")
        check(False, "KEYS must be refused")
    except redis.ResponseError as e:
        check("KEYS" in str(e), f"KEYS refusal names the command: {e}")
    check(r.ping() is True, "session survives a refused command")

    check(r.delete(*keys, p + "missing") == 50, "DEL across groups")
    check(r.dbsize() >= 0, "DBSIZE")
    r.close()


def main():
    port = int(sys.argv[1])
    password = sys.argv[2] if len(sys.argv) > 2 else None
    run(port, password, 3)
    run(port, password, 2)
    # The library's default protocol, whatever this version picks.
    r = redis.Redis(host="127.0.0.1", port=port, password=password)
    check(r.set("pydefault", "x") and r.get("pydefault") == b"x", "default protocol")
    print(f"redis-py {redis.__version__}: all checks passed")


if __name__ == "__main__":
    main()
