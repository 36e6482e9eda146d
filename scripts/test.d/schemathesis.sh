#!/usr/bin/env bash
# Contract test of the REST API against openapi.yaml: schemathesis generates
# requests from the document (its examples, boundary values, then random
# valid and invalid inputs) and checks every answer of the live server: never
# a 5xx, only documented status codes, the documented content type, and a body
# matching the documented schema; schema-invalid requests and undocumented
# methods must be refused. The operations of the public listener (the
# WebSocket upgrade, the SSE stream, the client files and the demo page)
# are not on the API listener it tests, and are left out (tests/sse.rs and
# tests/v2.rs cover them).
#
# positive_data_acceptance is not run: JSON Schema cannot say what the server
# rightly refuses among schema-valid uids (`42.0` is an "integer"; maxLength
# counts characters where the server counts 256 bytes), see Uid in openapi.yaml.
#
# schemathesis comes from PyPI into a venv under target/ (kept between runs).
# Runs the debug binary that `cargo test` builds.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/py-tools
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "installing: schemathesis (PyPI) into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

cargo build --quiet --locked --bin pushgate

. scripts/lib/gateway.sh
log=$(mktemp)
GATEWAY_PID=""
cleanup() {
  if [ -n "$GATEWAY_PID" ]; then
    kill "$GATEWAY_PID" 2>/dev/null || true
    wait "$GATEWAY_PID" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap cleanup EXIT

# The API listener (where openapi.yaml's operations live) is read from the
# gateway's ready line. History is on, so /history/{uid} answers its pages
# (with it off every call there is the documented 404) and push answers carry
# their stored positions.
RUST_LOG=info gateway_start "$log" 20 target/debug/pushgate --listen 127.0.0.1:0 \
  --text-listen 127.0.0.1:0 --api-listen 127.0.0.1:0 --log-format json --history \
  || { echo "pushgate did not start:"; cat "$log"; exit 1; }
port=${READY_API##*:}

# Bounded: 50 cases per operation, seeded so a failure reproduces; the outer
# timeout only guards against a hang.
# Run from a directory under target/: hypothesis and schemathesis keep caches
# in the working directory.
spec=$PWD/openapi.yaml
mkdir -p target/schemathesis
cd target/schemathesis
timeout 180 "../py-tools/bin/schemathesis" run "$spec" \
  --url "http://127.0.0.1:$port" \
  --exclude-operation-id websocket \
  --exclude-operation-id eventStream \
  --exclude-operation-id clientScript \
  --exclude-operation-id clientModule \
  --exclude-operation-id demoPage \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,unsupported_method \
  --phases examples,coverage,fuzzing \
  --max-examples 50 \
  --seed "${SCHEMATHESIS_SEED:-20240601}" \
  --generation-database none \
  --request-timeout 10 \
  --workers 2 \
  --no-color
