#!/usr/bin/env bash
# Interleaved A/B pairs of the bench's headline scenarios, in one sitting:
#   scripts/ab-bench.sh A_DIR B_DIR [PAIRS] > pairs.jsonl
# A_DIR and B_DIR each hold a release build's `pushgate` and `pushgate-bench`
# (e.g. target/release of two checkouts). Each pair runs every scenario once
# against A and once against B, the order alternating pair by pair so drift
# in the host's speed falls on both alike. Prints one JSON line per scenario
# run, tagged with "build" and "pair"; scripts/ab-summary.py turns them into
# the medians and ratios BENCHMARKS.md records. Speed is never asserted.
#
# AB_ARGS_A / AB_ARGS_B: extra bench flags for the A and for the B runs, so
# one build can be compared with itself under two gateway flag sets, e.g.
# history off against on:
#   AB_ARGS_B="--gateway-arg=--history" scripts/ab-bench.sh target/release target/release
# (--gateway-arg reaches every gateway the bench spawns, cluster nodes
# included). Each JSON line then also carries the "args" it ran with.
set -euo pipefail
a=$1 b=$2 pairs=${3:-6}
args_a=${AB_ARGS_A:-} args_b=${AB_ARGS_B:-}
# AB_SCENARIOS="broadcast;cluster" runs a subset.
if [ -n "${AB_SCENARIOS:-}" ]; then
  IFS=';' read -r -a scenarios <<<"$AB_SCENARIOS"
else
  scenarios=(
    "idle --connections 10000"
    "push-text"
    "push-http --batch 100"
    "broadcast"
    "latency --rate 10000"
    "cluster"
  )
fi
run() { # build-label dir pair extra-args scenario...
  local label=$1 dir=$2 pair=$3 extra=$4
  shift 4
  # shellcheck disable=SC2068,SC2086
  timeout 300 "$dir/pushgate-bench" $@ $extra --spawn --json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    l=l.strip()
    if l.startswith("{"):
        v=json.loads(l); v["build"]=sys.argv[1]; v["pair"]=int(sys.argv[2])
        if sys.argv[3]: v["args"]=sys.argv[3]
        print(json.dumps(v))' "$label" "$pair" "$extra" \
    || echo "{\"build\":\"$label\",\"pair\":$pair,\"error\":\"$* $extra\"}"
}
for pair in $(seq 1 "$pairs"); do
  for s in "${scenarios[@]}"; do
    if (( pair % 2 )); then
      run A "$a" "$pair" "$args_a" $s; run B "$b" "$pair" "$args_b" $s
    else
      run B "$b" "$pair" "$args_b" $s; run A "$a" "$pair" "$args_a" $s
    fi
  done
done
