#!/usr/bin/env bash
# Smoke run of pushgate-bench so the tool never rots: every scenario, tiny
# (100 connections, spread over three processes to exercise the workers,
# about a second each), against gateways (and, for the cluster scenario, a
# redis-server) it starts itself with --spawn. Checks that
# each scenario prints its JSON line with no loss and no duplicates (push-http
# also with its batch variant, `POST /push/batch`, 100 pushes a request), then
# push-text once against the floor relay (`--floor`, the bench's reference
# gateway), then the history scenarios, tiny: resume (50 v2 clients, node B
# restarted, each must resume with `recovered: true`), rolling-deploy (50 v2
# clients, three nodes restarted in turn under a push stream, then one killed
# with SIGKILL and restarted: nothing lost, duplicated or out of order) and
# history-memory (5000 stored messages: the history gauge must count them).
# Speed is never asserted: CI machines are shared and noisy. Run by
# scripts/test.sh; also runs alone: `bash scripts/test.d/bench-smoke.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --workspace --bins --locked -q
out=$(mktemp)
floor=$(mktemp)
hist=$(mktemp)
trap 'rm -f "$out" "$floor" "$hist"' EXIT

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

# History: each scenario bounded on its own (about 10 s each here).
timeout 90 target/debug/pushgate-bench resume --spawn --json --connections 50 >"$hist" || status=$?
timeout 90 target/debug/pushgate-bench rolling-deploy --spawn --json --connections 50 \
  --uids 10 --duration 1s --crash >>"$hist" || status=$?
timeout 60 target/debug/pushgate-bench history-memory --spawn --json --messages 5000 >>"$hist" \
  || status=$?
python3 - "$hist" <<'PY' || status=1
import json, sys
seen = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        v = json.loads(line)
        seen[v["scenario"]] = v
bad = []
for name in ("resume", "rolling-deploy", "history-memory"):
    v = seen.get(name)
    if v is None or "error" in v or not v.get("ok"):
        bad.append(f"{name}: {v and v.get('error', 'lost or duplicated messages')}")
        continue
    row = v["rows"][0]
    i, x = row["integrity"], row["extra"]
    if i["lost"] or i["duplicates"] or x.get("out_of_order") or x.get("foreign"):
        bad.append(f"{name}: lost {i['lost']} dup {i['duplicates']} "
                   f"out of order {x.get('out_of_order')} foreign {x.get('foreign')}")
    if name == "resume" and (x["recovered"] != row["connections"] or x["not_recovered"]):
        bad.append(f"resume: {x['recovered']} of {row['connections']} recovered, "
                   f"{x['not_recovered']} not ({x['not_recovered_reasons']})")
    if name != "history-memory" and (not x.get("settled") or row["deliveries"] == 0):
        bad.append(f"{name}: never settled, or nothing delivered")
    if name == "rolling-deploy" and x["clean_exits"] != 3:
        bad.append(f"rolling-deploy: {x['clean_exits']} of 3 nodes exited cleanly")
    if name == "history-memory" and x.get("stored") != 5000:
        bad.append(f"history-memory: {x.get('stored')} of 5000 messages stored")
    print(f"bench-smoke: {name}: ok")
if bad:
    print("bench-smoke: history FAIL\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
if [ "$status" -ne 0 ]; then
  echo "bench-smoke: FAIL (exit $status)" >&2
  cat "$out" "$floor" "$hist" >&2
  exit 1
fi
echo "bench-smoke: every scenario (and the floor relay) ran without loss or duplicates"
