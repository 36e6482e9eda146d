# shellcheck shell=bash
# Sourced by the scripts that run a gateway (scripts/test.d/*.sh): start it,
# wait for it, stop it, each on an event with a deadline, never a fixed sleep.
#
# The gateway prints exactly one line on standard output once every listener
# is bound and its signal handlers are in (src/main.rs, README "Operating
# it"):
#   {"ready":{"api":"127.0.0.1:1235","http":"127.0.0.1:1234","text":"127.0.0.1:5678"}}
# Its standard output goes to a pipe held here, so reading that pipe is the
# wait: the ready line arrives, or the pipe closes because the gateway exited.

# gateway_start LOG SECONDS CMD [ARG...]
#   Runs CMD in the background (standard error to LOG) and waits at most
#   SECONDS for its ready line. Sets GATEWAY_PID and READY_HTTP, READY_TEXT,
#   READY_API (ip:port). Returns 1, with a reason on standard error, if the
#   gateway exited first or the deadline passed.
gateway_start() {
  local log=$1 seconds=$2 fifo line status=0
  shift 2
  fifo=$(mktemp -u)
  mkfifo "$fifo"
  "$@" >"$fifo" 2>"$log" &
  GATEWAY_PID=$!
  # Opening the read end waits for the writer (the child) to open it too.
  exec {GATEWAY_FD}<"$fifo"
  rm -f "$fifo"
  IFS= read -r -t "$seconds" -u "$GATEWAY_FD" line || status=$?
  if [ "$status" -gt 128 ]; then
    echo "no ready line within $seconds s" >&2
    return 1
  elif [ "$status" -ne 0 ]; then
    echo "the gateway exited before its ready line" >&2
    return 1
  fi
  read -r READY_HTTP READY_TEXT READY_API < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])["ready"]
print(r["http"], r["text"], r["api"])' "$line") || { echo "not a ready line: $line" >&2; return 1; }
}

# gateway_stop SECONDS
#   Sends SIGTERM and waits at most SECONDS for the gateway to exit (its end
#   of the pipe closes). Sets GATEWAY_RC to its exit status. Returns 1 if it
#   is still running at the deadline.
gateway_stop() {
  local line status=0
  kill -TERM "$GATEWAY_PID" 2>/dev/null || true
  # Nothing more is printed: the read ends at end of file (exit) or timeout.
  while :; do
    IFS= read -r -t "$1" -u "$GATEWAY_FD" line || { status=$?; break; }
  done
  [ "$status" -le 128 ] || return 1
  exec {GATEWAY_FD}<&-
  GATEWAY_RC=0
  wait "$GATEWAY_PID" || GATEWAY_RC=$?
  GATEWAY_PID=""
}

# wait_until SECONDS CMD [ARG...]
#   Runs CMD until it succeeds, at most SECONDS: the scripts' twin of the
#   tests' `wait_until`, for state that announces nothing (an HTTP answer, a
#   line in a client's output). Returns 1 at the deadline.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.05
  done
}
