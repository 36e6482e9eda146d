#!/usr/bin/env bash
# Runs README.md's commands exactly as README writes them (issue 12 §0: a
# README command that no check runs rots). Run by scripts/test.sh after cargo
# test; also runs alone: `bash scripts/test.d/readme.sh`.
#
# Every fenced block of README.md is found mechanically:
#   ```sh   whose first line is `# example: ...`  skipped, the reason printed;
#   ```sh   `cargo run --release`                  started as the server, on its
#                                                  default ports 1234/5678/1235;
#   ```sh   `scripts/test.sh`                      checked to be what .ci/run runs
#                                                  (this script is part of it);
#   ```sh   anything else                          run with bash against that server
#                                                  (curl failing on an HTTP error);
#   ```js   (the seed's page)                      run in node as the WebSocket
#                                                  clients: once as written (uid1),
#                                                  once bound as u1 (the REST examples);
#   ```php  (the seed's backend)                   run with php-cli;
#   ```javascript, ```html                         browser snippets (the client, SSE),
#                                                  not run here: tests/client_browser.rs
#                                                  runs the client in chromium.
# Then it checks that README's clients received README's pushes, SIGTERMs the
# server and checks it exits 0. The server is waited for on its ready line
# (scripts/lib/gateway.sh); every other wait polls with a deadline.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "readme: $*"; }
fail() { echo "readme: FAIL: $*" >&2; exit 1; }

. scripts/lib/gateway.sh
WORK=$(mktemp -d)
GATEWAY_PID="" CLIENTS=()
cleanup() {
  for pid in "${CLIENTS[@]}" $GATEWAY_PID; do
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- the blocks, in README order -------------------------------------------------
python3 - README.md "$WORK" <<'PY'
import re, sys, pathlib
text = open(sys.argv[1], encoding="utf-8").read()
out = pathlib.Path(sys.argv[2])
blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
n = 0
for lang, body in blocks:
    if lang in ("sh", "bash", "shell", "console"):
        kind = "sh"
    elif lang in ("js", "php"):
        kind = lang
    else:
        continue  # text: diagrams and sample output
    n += 1
    (out / f"{n:02d}.{kind}").write_text(body, encoding="utf-8")
PY
ls "$WORK" | grep -q . || fail "no code blocks found in README.md"

# --- the ports the first command uses must be free ---------------------------------
for port in 1234 5678 1235; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is taken: README's first command needs 1234, 5678 and 1235 free"
  fi
done

# --- classify ---------------------------------------------------------------------
first_line() { head -n1 "$1"; }
server_block="" run_blocks=() page_block="" php_blocks=()
for f in "$WORK"/*; do
  case "$f" in
    *.sh)
      body=$(cat "$f")
      if [[ $(first_line "$f") == "# example:"* ]]; then
        say "skipped (${body%%$'\n'*})"
      elif [ "$body" = "cargo run --release" ]; then
        server_block=$f
      elif [ "$body" = "scripts/test.sh" ]; then
        grep -q 'scripts/test.sh' .ci/run || fail ".ci/run does not run scripts/test.sh as README says"
        say "scripts/test.sh: run by .ci/run (this script is part of it)"
      else
        run_blocks+=("$f")
      fi ;;
    *.js) page_block=$f ;;
    *.php) php_blocks+=("$f") ;;
  esac
done
[ -n "$server_block" ] || fail "README has no \`cargo run --release\` block"
[ -n "$page_block" ] || fail "README has no js block (the seed's page) to use as the client"

# --- README's first command -------------------------------------------------------
LOG=$WORK/server.log
say "starting: $(cat "$server_block")"
# exec: the job's pid becomes cargo, which execs the gateway on Unix, so the
# SIGTERM below reaches pushgate itself.
# The first run may compile the release build: a generous deadline.
gateway_start "$LOG" 1200 bash -c "exec $(cat "$server_block")" \
  || { tail -20 "$LOG" >&2; fail "the server did not print its ready line"; }
say "ready line: http $READY_HTTP, text $READY_TEXT, api $READY_API"
[ "${READY_HTTP##*:}:${READY_TEXT##*:}:${READY_API##*:}" = 1234:5678:1235 ] \
  || fail "the ready line does not name the default ports 1234, 5678 and 1235"
# The log is the default text format, coloured; shown here without colours.
plain() { sed 's/\x1b\[[0-9;]*m//g' "$LOG"; }
plain | grep -m1 'listening'
plain | grep -E 'public listener|API listener|text port' | sed 's/^/readme: /'
public=$(plain | grep 'public listener 0.0.0.0:1234:') || fail "no line says what the public listener exposes"
if grep -q 'REST' <<<"$public"; then fail "without keys the public listener serves REST: $public"; fi

body_has() { # $1: url, $2: jq-free grep pattern the body must contain
  curl -sf "$1" | grep -q "$2"
}
wait_http() { # $1: url, $2: pattern; fails the script after 20 s
  wait_until 20 body_has "$1" "$2" || fail "GET $1 never contained $2 (last: $(curl -s "$1"))"
}
wait_http http://127.0.0.1:1234/readyz '"ready"'

# --- README's page as the WebSocket clients ---------------------------------------
client() { # $1: uid the page binds, $2: output file
  sed "s/'uid1'/'$1'/" "$page_block" >"$WORK/page-$1.js"
  node --experimental-websocket --no-warnings "$WORK/page-$1.js" >"$2" 2>&1 &
  CLIENTS+=($!)
  wait_http "http://127.0.0.1:1235/users/$1" '"online":true'
}
client uid1 "$WORK/uid1.out"
client u1 "$WORK/u1.out"
say "README's page bound uid1 and u1"

# --- every other command, as written ----------------------------------------------
for f in "${php_blocks[@]}"; do
  out=$(php "$f")
  say "php block: ${out//$'\n'/ }"
  [ "$out" = "ok" ] || fail "README's PHP example answered ${out@Q}, not ok"
done
for f in "${run_blocks[@]}"; do
  say "running: $(grep -v '^#' "$f" | head -n1) ..."
  # A curl that gets an HTTP error fails the block (README's use -s only).
  out=$(bash -euo pipefail -c 'curl() { command curl --fail-with-body "$@"; }; '"$(cat "$f")") \
    || fail "README block failed: $(cat "$f")${out:+ -> $out}"
  sed 's/^/readme:   /' <<<"$out"
done

# --- what README's clients received --------------------------------------------------
expect() { # $1: output file, $2: exact line
  wait_until 20 grep -qxF -- "$2" "$1" || { cat "$1" >&2; fail "$1 never received $2"; }
}
expect "$WORK/uid1.out" '{"uid":"uid1","percent":"88%"}'
expect "$WORK/uid1.out" 'hello all'
expect "$WORK/uid1.out" '{"hello":"browser"}'
expect "$WORK/u1.out" '{"percent":"88%"}'
expect "$WORK/u1.out" '1'
expect "$WORK/u1.out" 'hello all'
say "README's clients received README's text, PHP and REST pushes"

# --- stop it ------------------------------------------------------------------------
gateway_stop 30 || fail "still running 30 s after SIGTERM"
[ "$GATEWAY_RC" -eq 0 ] || { tail -5 "$LOG" >&2; fail "exited $GATEWAY_RC after SIGTERM"; }
say "SIGTERM: exited 0"
say "every README command ran as written"
