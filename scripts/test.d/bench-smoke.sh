#!/usr/bin/env bash
# Smoke run of pushgate-bench so the tool never rots: every scenario, tiny
# (100 connections, spread over three processes to exercise the workers,
# about a second each), against gateways (and, for the cluster scenario, a
# redis-server) it starts itself with --spawn. Checks that
# each scenario prints its JSON line with no loss and no duplicates (push-http
# also with its batch variant, `POST /push/batch`, 100 pushes a request), then
# push-text once against the floor relay (`--floor`, the bench's reference
# gateway). Speed is never asserted: CI machines are shared and noisy. Run by
# scripts/test.sh; also runs alone: `bash scripts/test.d/bench-smoke.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --workspace --bins --locked -q
out=$(mktemp)
floor=$(mktemp)
trap 'rm -f "$out" "$floor"' EXIT

# The bench kills what it started on exit; `timeout` bounds the whole run.
status=0
timeout 240 target/debug/pushgate-bench all --spawn --json \
  --connections 100 --clients-per-process 40 --duration 1s --rate 2000 \
  --batch 100 >"$out" || status=$?

python3 - "$out" <<'PY' || status=1
import json, sys
want = ["idle", "push-text", "push-http", "broadcast", "latency", "growth", "cluster"]
seen = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        v = json.loads(line)
        seen[v["scenario"]] = v
bad = []
for name in want:
    v = seen.get(name)
    if v is None:
        bad.append(f"{name}: no JSON line")
        continue
    if not v.get("ok") or "error" in v:
        bad.append(f"{name}: {v.get('error', 'lost or duplicated messages')}")
        continue
    for row in v["rows"]:
        i = row["integrity"]
        if i["lost"] or i["duplicates"]:
            bad.append(f"{name}/{row['variant']}: lost {i['lost']} dup {i['duplicates']}")
        if name not in ("idle",) and row["deliveries"] == 0:
            bad.append(f"{name}/{row['variant']}: nothing delivered")
    if name == "push-http" and not any(r["variant"].startswith("batch=") for r in v["rows"]):
        bad.append("push-http: no batch variant row")
    print(f"bench-smoke: {name}: ok ({len(v['rows'])} rows)")
if bad:
    print("bench-smoke: FAIL\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
PY

# The floor relay (floor.rs): the same wire contract, checked the same way.
timeout 60 target/debug/pushgate-bench push-text --spawn --floor --json \
  --connections 100 --duration 1s >"$floor" || status=$?
python3 - "$floor" <<'PY' || status=1
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bad = []
if len(lines) != 1 or lines[0].get("gateway") != "floor":
    bad.append(f"expected one push-text line from the floor relay, got {len(lines)}")
for v in lines:
    if not v.get("ok") or "error" in v:
        bad.append(v.get("error", "lost or duplicated messages"))
    for row in v.get("rows", []):
        i = row["integrity"]
        if i["lost"] or i["duplicates"] or row["deliveries"] == 0:
            bad.append(f"{row['variant']}: lost {i['lost']} dup {i['duplicates']} delivered {row['deliveries']}")
if bad:
    print("bench-smoke: floor relay FAIL\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"bench-smoke: push-text --floor: ok ({len(lines[0]['rows'])} rows)")
PY
if [ "$status" -ne 0 ]; then
  echo "bench-smoke: FAIL (exit $status)" >&2
  cat "$out" "$floor" >&2
  exit 1
fi
echo "bench-smoke: every scenario (and the floor relay) ran without loss or duplicates"
