#!/usr/bin/env python3
"""Medians of A/B pairs from scripts/ab-bench.sh: per scenario and variant,
gateway CPU per operation (µs), idle memory per connection (KiB) and p99
latency (µs), cluster pipelined deliveries per second, A beside B, and the median of the per-pair ratios B/A; for the
history scenarios also bytes per retained message beyond its payload
(history-memory), resume times (resume) and the longest time a client was
without a connection (rolling-deploy). When the runs carried AB_ARGS_A /
AB_ARGS_B (one build, two flag sets), the flags are printed first."""
import json
import statistics
import sys
from collections import defaultdict

# Figures read from a row's "extra", by scenario: (key in extra, figure name).
EXTRA = {
    "idle": [("rss_per_conn_kib", "kib_per_conn")],
    "history-memory": [("rss_overhead_bytes", "rss_bytes_over_payload"),
                       ("gauge_overhead_bytes", "gauge_bytes_over_payload")],
    "resume": [("all_resumed_ms", "all_resumed_ms"), ("resume_p50_ms", "resume_p50_ms"),
               ("resume_p99_ms", "resume_p99_ms")],
    "rolling-deploy": [("longest_disconnected_ms", "longest_disconnected_ms")],
}
# Scenarios whose per-op CPU is not a delivery cost (restarts dominate them).
NO_CPU = {"idle", "resume", "rolling-deploy"}

runs = defaultdict(lambda: defaultdict(dict))  # (scenario, variant, metric) -> pair -> build -> value
flags = {}
faults = []
for line in open(sys.argv[1]):
    v = json.loads(line)
    if "args" in v:
        flags[v["build"]] = v["args"]
    if "rows" not in v:
        continue
    for row in v["rows"]:
        key = (v["scenario"], row.get("variant", ""), row.get("connections", ""))
        # Idle has no operations: its figure is memory per connection.
        figures = {} if v["scenario"] in NO_CPU else {"us_per_op": row.get("gateway_us_per_op")}
        lat = row.get("latency") or {}
        if lat.get("p99_us") is not None and v["scenario"] in ("latency", "cluster"):
            figures["p99_us"] = lat["p99_us"]
        # Cluster throughput (budget: pipelined with history at least half of without).
        if v["scenario"] == "cluster" and "pipelined" in row.get("variant", ""):
            figures["deliv_per_s"] = row.get("deliveries_per_s")
        extra = row.get("extra") or {}
        for k, name in EXTRA.get(v["scenario"], []):
            if k in extra:
                figures[name] = extra[k]
        integrity = row.get("integrity") or {}
        if integrity.get("lost") or integrity.get("duplicates") or extra.get("out_of_order"):
            faults.append(f"{v['build']} pair {v['pair']} {v['scenario']}/{row.get('variant')}: "
                          f"lost {integrity.get('lost')} dup {integrity.get('duplicates')} "
                          f"out of order {extra.get('out_of_order', 0)}")
        for name, value in figures.items():
            if isinstance(value, (int, float)):
                runs[key + (name,)][v["pair"]][v["build"]] = value

for build in sorted(flags):
    print(f"{build}: {flags[build]}")
print("| scenario | variant | figure | A median | B median | B/A (median of pairs) | pairs |")
print("|---|---|---|---|---|---|---|")
for key in sorted(runs, key=str):
    pairs = [p for p in runs[key].values() if "A" in p and "B" in p]
    if not pairs:
        continue
    a = statistics.median(p["A"] for p in pairs)
    b = statistics.median(p["B"] for p in pairs)
    ratios = [p["B"] / p["A"] for p in pairs if p["A"]]
    ratio = f"{statistics.median(ratios):.3f}" if ratios else "-"
    scenario, variant, conns, figure = key
    print(f"| {scenario} | {variant} {conns} | {figure} | {a:.3g} | {b:.3g} | {ratio} | {len(pairs)} |")
for f in faults:
    print(f"FAULT: {f}")
