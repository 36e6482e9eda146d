#!/usr/bin/env python3
"""Idle memory per Server-Sent Events stream (BENCHMARKS.md, issue 16):
   scripts/sse-idle-memory.py PUSHGATE_BINARY STREAMS FREE_PORT_BASE
Starts the gateway on FREE_PORT_BASE..+2, opens 200 warm-up streams, reads
its RSS, opens STREAMS more bound legacy-mode streams (each read up to its
`bound` event), waits a second and prints the RSS added per stream."""
import socket, subprocess, sys, time
BIN=sys.argv[1]; N=int(sys.argv[2]); P=int(sys.argv[3])
g=subprocess.Popen([BIN,"--listen",f"127.0.0.1:{P}","--text-listen",f"127.0.0.1:{P+1}","--api-listen",f"127.0.0.1:{P+2}"],stdout=subprocess.PIPE,stderr=subprocess.DEVNULL)
g.stdout.readline()  # the ready line: it serves
def rss(): 
    for l in open(f"/proc/{g.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def stream(i):
    s=socket.create_connection(("127.0.0.1",P))
    s.sendall(f"GET /sse?uid=u{i} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    got=b""
    while b"event: bound" not in got or not got.endswith(b"\n\n\r\n"):
        d=s.recv(4096)
        if not d: raise SystemExit("closed")
        got+=d
    return s
warm=[stream(i) for i in range(200)]
time.sleep(0.5); base=rss()
socks=[stream(1000+i) for i in range(N)]
time.sleep(1.0); after=rss()
print(f"{N} idle SSE streams (release): RSS {base} -> {after} KiB: {(after-base)/N:.2f} KiB per stream")
g.terminate(); g.wait()
