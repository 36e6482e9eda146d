#!/usr/bin/env bash
# Checks deploy/compose.yaml (two pushgate nodes, Redis, Prometheus) without a
# container engine, which CI does not have:
#   1. the Compose Specification's JSON schema (check-jsonschema's vendored
#      copy, PyPI), and `docker compose config` too where the plugin exists;
#   2. promtool check config on the Prometheus configuration it mounts;
#   3. our own rules: every image by exact tag (never latest), pushgate's tag
#      is the crate's version, the image it builds is deploy/Dockerfile, every
#      PUSHGATE_* variable is one the binary knows, Prometheus scrapes each
#      pushgate service on its API port, and ports are published on loopback.
# Run by scripts/test.sh; also runs alone: `bash scripts/test.d/compose.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "compose: $*"; }
fail() { echo "compose: FAIL: $*" >&2; exit 1; }

venv=target/py-tools-compose
pin="check-jsonschema==0.39.0"
if [ ! -x "$venv/bin/check-jsonschema" ] || [ "$(cat "$venv/.pin" 2>/dev/null)" != "$pin" ]; then
  say "installing $pin (PyPI) into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$pin" pyyaml
  echo "$pin" >"$venv/.pin"
fi

"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml \
  || fail "deploy/compose.yaml does not match the Compose Specification"
say "deploy/compose.yaml matches the Compose Specification schema"
if docker compose version >/dev/null 2>&1; then
  docker compose -f deploy/compose.yaml config --quiet || fail "docker compose config"
  say "docker compose config: clean"
else
  say "docker compose is not installed here: schema check only"
fi

PROMTOOL="$(scripts/prometheus-tools.sh)/usr/bin/promtool"
"$PROMTOOL" check config deploy/compose/prometheus.yml >/dev/null \
  || fail "promtool check config deploy/compose/prometheus.yml"
say "promtool check config deploy/compose/prometheus.yml: clean"

"$venv/bin/python" - deploy/compose.yaml deploy/compose/prometheus.yml Cargo.toml src <<'PY'
import pathlib, re, sys
import yaml

compose_path, prom_path, cargo, src = sys.argv[1:]
doc = yaml.safe_load(open(compose_path))
prom = yaml.safe_load(open(prom_path))
version = re.search(r'^version = "([^"]+)"', open(cargo).read(), re.M).group(1)
known = set()
for f in pathlib.Path(src).rglob("*.rs"):
    known |= set(re.findall(r'env = "(PUSHGATE_\w+)"', f.read_text()))
errors = []
pushgates = []
for name, svc in doc["services"].items():
    image = svc.get("image", "")
    repo, _, tag = image.rpartition(":")
    if not repo or not tag or tag == "latest" or "/" in tag:
        errors.append(f"{name}: image {image!r} is not pinned to an exact tag")
    if repo == "pushgate":
        pushgates.append(name)
        if tag != version:
            errors.append(f"{name}: image tag {tag} is not the crate version {version}")
        build = svc.get("build", {})
        if build.get("dockerfile") != "deploy/Dockerfile":
            errors.append(f"{name}: must build deploy/Dockerfile")
        env = svc.get("environment", {})
        for var in env:
            if var.startswith("PUSHGATE_") and var not in known:
                errors.append(f"{name}: {var} is not a variable pushgate reads")
        api = env.get("PUSHGATE_API_LISTEN", "")
        if not api.endswith(":1235"):
            errors.append(f"{name}: PUSHGATE_API_LISTEN must be on port 1235 (Prometheus scrapes it)")
    for port in svc.get("ports", []):
        if not str(port).startswith("127.0.0.1:"):
            errors.append(f"{name}: port {port} is published beyond the host's loopback")
if len(pushgates) < 2:
    errors.append("compose.yaml must run at least two pushgate nodes (cluster mode)")
targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
for name in pushgates:
    if f"{name}:1235" not in targets:
        errors.append(f"prometheus.yml does not scrape {name}:1235")
for e in errors:
    print(f"compose: FAIL: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
say "images pinned, variables known, both nodes scraped"
