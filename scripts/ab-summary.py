#!/usr/bin/env python3
"""Medians of A/B pairs from scripts/ab-bench.sh: per scenario and variant,
gateway CPU per operation (µs), idle memory per connection (KiB) and p99
latency (µs), A beside B, and the median of the per-pair ratios B/A."""
import json
import statistics
import sys
from collections import defaultdict

runs = defaultdict(lambda: defaultdict(dict))  # (scenario, variant, metric) -> pair -> build -> value
for line in open(sys.argv[1]):
    v = json.loads(line)
    if "rows" not in v:
        continue
    for row in v["rows"]:
        key = (v["scenario"], row.get("variant", ""), row.get("connections", ""))
        # Idle has no operations: its figure is memory per connection.
        figures = {} if v["scenario"] == "idle" else {"us_per_op": row.get("gateway_us_per_op")}
        lat = row.get("latency") or {}
        if lat.get("p99_us") is not None and v["scenario"] in ("latency", "cluster"):
            figures["p99_us"] = lat["p99_us"]
        extra = row.get("extra") or {}
        for k in ("rss_per_conn_kib",):
            if k in extra:
                figures["kib_per_conn"] = extra[k]
        for name, value in figures.items():
            if isinstance(value, (int, float)):
                runs[key + (name,)][v["pair"]][v["build"]] = value

print("| scenario | variant | figure | A median | B median | B/A (median of pairs) | pairs |")
print("|---|---|---|---|---|---|---|")
for key in sorted(runs, key=str):
    pairs = [p for p in runs[key].values() if "A" in p and "B" in p]
    if not pairs:
        continue
    a = statistics.median(p["A"] for p in pairs)
    b = statistics.median(p["B"] for p in pairs)
    ratio = statistics.median(p["B"] / p["A"] for p in pairs if p["A"])
    scenario, variant, conns, figure = key
    print(f"| {scenario} | {variant} {conns} | {figure} | {a:.3g} | {b:.3g} | {ratio:.3f} | {len(pairs)} |")
