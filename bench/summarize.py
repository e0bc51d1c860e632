#!/usr/bin/env python3
"""Medians, ratios and PASS/FAIL for the raw results of bench/run.sh.

usage: summarize.py RAW_CSV CLK_TCK
Prints markdown; exits 1 if the proxy was measured and missed a target.
"""

import csv
import statistics
import sys
from collections import defaultdict

TARGETS = ["direct", "twemproxy", "proxy"]
TEST_ORDER = ["set_p1", "get_p1", "set_p16", "get_p16", "mset10", "mget10"]
# Tests where the shared server core is the limit: proxy must beat twemproxy.
SERVER_BOUND = {"set_p16", "get_p16", "mset10", "mget10"}
# Tests where clients wait on round trips: proxy must keep up with direct.
LATENCY_BOUND = {"set_p1", "get_p1"}
MIN_RPS_VS_TWEM = 1.25
MAX_CPU_VS_TWEM = 0.8
MIN_RPS_VS_DIRECT = 0.95


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def main() -> int:
    path, clk_tck = sys.argv[1], int(sys.argv[2])
    rows = defaultdict(list)  # (test, target) -> [row]
    for r in csv.DictReader(open(path)):
        rows[(r["test"], r["target"])].append(r)
    tests = [t for t in TEST_ORDER if any((t, x) in rows for x in TARGETS)]
    tests += sorted({t for t, _ in rows} - set(tests))
    have_proxy = any(x == "proxy" for _, x in rows)

    def vals(test, target, field):
        return [float(r[field]) for r in rows.get((test, target), [])]

    def cpu_us(test, target, field):
        # CPU time of one process over the run, per request, in microseconds.
        return [
            float(r[field]) / clk_tck / int(r["requests"]) * 1e6
            for r in rows.get((test, target), [])
            if r[field] != ""
        ]

    def pipeline(test):
        for x in TARGETS:
            for r in rows.get((test, x), []):
                return r["pipeline"]
        return "?"

    out = []
    rounds = max((len(v) for v in rows.values()), default=0)
    out.append(f"Medians of {rounds} runs per cell. CPU is utime+stime from /proc/<pid>/stat "
               f"(1/{clk_tck} s ticks) over each run, divided by its requests.")
    out.append("")
    out.append("| test | -P | direct rps | twemproxy rps | proxy rps | proxy/direct | proxy/twemproxy "
               "| p50/p99 ms direct | p50/p99 ms twemproxy | p50/p99 ms proxy "
               "| CPU µs/req twemproxy | CPU µs/req proxy | CPU proxy/twemproxy |")
    out.append("|" + "---|" * 13)
    verdicts = []
    for t in tests:
        rps = {x: med(vals(t, x, "rps")) for x in TARGETS}
        lat = {
            x: (f"{med(vals(t, x, 'p50_ms')):.3f}/{med(vals(t, x, 'p99_ms')):.3f}"
                if rows.get((t, x)) else "—")
            for x in TARGETS
        }
        cpu_twem = med(cpu_us(t, "twemproxy", "twem_ticks"))
        cpu_proxy = med(cpu_us(t, "proxy", "proxy_ticks"))
        r_direct = ratio(rps["proxy"], rps["direct"])
        r_twem = ratio(rps["proxy"], rps["twemproxy"])
        r_cpu = ratio(cpu_proxy, cpu_twem)
        out.append(
            f"| {t} | {pipeline(t)} | {fmt(rps['direct'], ',.0f')} | {fmt(rps['twemproxy'], ',.0f')} "
            f"| {fmt(rps['proxy'], ',.0f')} | {fmt(r_direct, '.2f')} | {fmt(r_twem, '.2f')} "
            f"| {lat['direct']} | {lat['twemproxy']} | {lat['proxy']} "
            f"| {fmt(cpu_twem, '.2f')} | {fmt(cpu_proxy, '.2f')} | {fmt(r_cpu, '.2f')} |"
        )
        if not have_proxy:
            continue
        if t in SERVER_BOUND:
            verdicts.append((t, f"throughput proxy/twemproxy >= {MIN_RPS_VS_TWEM}", r_twem,
                             r_twem is not None and r_twem >= MIN_RPS_VS_TWEM))
            verdicts.append((t, f"CPU/req proxy/twemproxy <= {MAX_CPU_VS_TWEM}", r_cpu,
                             r_cpu is not None and r_cpu <= MAX_CPU_VS_TWEM))
        if t in LATENCY_BOUND:
            verdicts.append((t, f"throughput proxy/direct >= {MIN_RPS_VS_DIRECT}", r_direct,
                             r_direct is not None and r_direct >= MIN_RPS_VS_DIRECT))

    out.append("")
    out.append("CPU µs/req of every process on the server core (medians; redis = both servers):")
    out.append("")
    out.append("| test | redis (direct) | redis (via twemproxy) | twemproxy | total twemproxy "
               "| redis (via proxy) | proxy | total proxy |")
    out.append("|" + "---|" * 8)
    for t in tests:
        rd = med(cpu_us(t, "direct", "redis_ticks"))
        rt = med(cpu_us(t, "twemproxy", "redis_ticks"))
        tw = med(cpu_us(t, "twemproxy", "twem_ticks"))
        rp = med(cpu_us(t, "proxy", "redis_ticks"))
        px = med(cpu_us(t, "proxy", "proxy_ticks"))
        tot_t = None if rt is None or tw is None else rt + tw
        tot_p = None if rp is None or px is None else rp + px
        out.append(f"| {t} | {fmt(rd, '.2f')} | {fmt(rt, '.2f')} | {fmt(tw, '.2f')} | {fmt(tot_t, '.2f')} "
                   f"| {fmt(rp, '.2f')} | {fmt(px, '.2f')} | {fmt(tot_p, '.2f')} |")

    out.append("")
    out.append("Spread of requests/s (min–max over the runs):")
    out.append("")
    out.append("| test | " + " | ".join(x for x in TARGETS) + " |")
    out.append("|" + "---|" * (len(TARGETS) + 1))
    for t in tests:
        cells = []
        for x in TARGETS:
            v = vals(t, x, "rps")
            cells.append(f"{min(v):,.0f}–{max(v):,.0f}" if v else "—")
        out.append(f"| {t} | " + " | ".join(cells) + " |")

    failed = False
    out.append("")
    if not have_proxy:
        out.append("Targets: not checked (the proxy was not measured).")
    else:
        out.append("Targets:")
        out.append("")
        for t, what, value, ok in verdicts:
            failed |= not ok
            out.append(f"- {'PASS' if ok else 'FAIL'} {t}: {what} (measured {fmt(value, '.2f')})")
        out.append("")
        out.append("Overall: " + ("FAIL" if failed else "PASS"))
    print("\n".join(out))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
