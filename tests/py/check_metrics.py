"""Validates Prometheus text read from stdin with prometheus_client's parser.

Usage: python3 check_metrics.py [FAMILY...] < metrics.txt
Every family named must be present. Histograms must have cumulative buckets
ending in +Inf equal to _count. Exits non-zero naming the problem.
"""
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families = {}
    try:
        for family in text_string_to_metric_families(text):
            families[family.name] = family
    except Exception as e:  # the parser raises ValueError and others
        print(f"FAILED: prometheus_client cannot parse the text: {e!r}", file=sys.stderr)
        return 1
    for name in sys.argv[1:]:
        # prometheus_client drops the _total suffix of counter families.
        base = name[:-len("_total")] if name.endswith("_total") else name
        if name not in families and base not in families:
            print(f"FAILED: no family {name} (have {sorted(families)})", file=sys.stderr)
            return 1
    for family in families.values():
        if family.type != "histogram":
            continue
        series = {}
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(labels, {"buckets": [], "count": None})
            if s.name.endswith("_bucket"):
                series[labels]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[labels]["count"] = s.value
        for labels, h in series.items():
            b = h["buckets"]
            if not b or b[-1][0] != float("inf"):
                print(f"FAILED: {family.name}{labels}: no +Inf bucket", file=sys.stderr)
                return 1
            if any(x[1] > y[1] or x[0] >= y[0] for x, y in zip(b, b[1:])):
                print(f"FAILED: {family.name}{labels}: buckets not cumulative: {b}", file=sys.stderr)
                return 1
            if h["count"] != b[-1][1]:
                print(f"FAILED: {family.name}{labels}: _count {h['count']} != +Inf {b[-1][1]}",
                      file=sys.stderr)
                return 1
    print(f"ok: {len(families)} families")
    return 0


if __name__ == "__main__":
    sys.exit(main())
