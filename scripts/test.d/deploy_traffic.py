"""Step 7 of scripts/test.d/deploy.sh: traffic on a live gateway before its
/metrics is checked. A WebSocket client binds (legacy mode: its first text
frame is its uid), then the text port pushes once to it and once to nobody.

Usage: deploy_traffic.py HTTP_ADDR TEXT_ADDR API_ADDR (each ip:port, from the
gateway's ready line). Exits non-zero with the reason if an answer is wrong.
Standard library only.
"""
import base64
import json
import os
import socket
import sys
import time
import urllib.request

# Every wait on the gateway has this deadline.
PATIENCE = 20.0

http, text, api = sys.argv[1], sys.argv[2], sys.argv[3]


def hostport(a):
    h, p = a.rsplit(":", 1)
    return h, int(p)


def wait_until(what, check):
    """Polls check() until it is true, failing after PATIENCE seconds (the
    tests' wait_until): state the gateway does not announce."""
    deadline = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"deploy: FAIL: never {what}")
        time.sleep(0.05)


def connections(uid):
    with urllib.request.urlopen(f"http://{api}/users/{uid}", timeout=5) as r:
        return json.load(r).get("connections")


ws = socket.create_connection(hostport(http), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
ws.sendall((f"GET /ws HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = ws.recv(4096)
    if not chunk:
        sys.exit("deploy: FAIL: WebSocket upgrade: connection closed")
    head += chunk
if b" 101 " not in head.split(b"\r\n", 1)[0]:
    sys.exit(f"deploy: FAIL: WebSocket upgrade answered {head.splitlines()[0]!r}")
uid = b"deploy-check"
mask = os.urandom(4)
ws.sendall(bytes([0x81, 0x80 | len(uid)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(uid)))
# The bind is processed asynchronously: push only once the gateway holds it.
wait_until("bound deploy-check", lambda: connections("deploy-check") == 1)

t = socket.create_connection(hostport(text), timeout=5)
t.sendall(b'{"uid":"deploy-check","percent":"88%"}\n{"uid":"nobody-here","x":1}\n')
answers = b""
while answers.count(b"\n") < 2:
    chunk = t.recv(100)
    if not chunk:
        break
    answers += chunk
t.close()
if answers != b"ok\nfail\n":
    sys.exit(f"deploy: FAIL: text port answered {answers!r}, want ok and fail")
ws.close()
