#!/usr/bin/env python3
"""Traffic through an IPsec tunnel for the IKE end-to-end tests, run inside
a network namespace; every mode prints one JSON line.

  tunnel_traffic.py ping SRC DST COUNT INTERVAL_MS
        ICMP echo requests (raw socket), replies collected while sending:
        {"sent": N, "received": K, "lost": [seq, ...]}
  tunnel_traffic.py tcp-sink ADDR PORT SECONDS
        accept one TCP connection, read to EOF, answer with the length and
        SHA-256 of what arrived: {"received": N, "sha256": "..."}
  tunnel_traffic.py tcp-send SRC DST PORT BYTES
        send BYTES random bytes, read the sink's answer:
        {"sent": N, "sha256": "...", "answer": {...}}
"""
import hashlib
import json
import os
import select
import socket
import struct
import sys
import time

from host_peer import csum  # the Internet checksum, next to this script


def ping(src, dst, count, interval_ms):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.bind((src, 0))
    ident = os.getpid() & 0xFFFF
    got = set()
    nxt = time.time()
    sent = 0
    end = None
    while True:
        now = time.time()
        if sent < count and now >= nxt:
            body = struct.pack("!d", now) + b"espgw-ike" * 4
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, sent)
            pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, sent) + body
            s.sendto(pkt, (dst, 0))
            sent += 1
            nxt += interval_ms / 1000.0
            if sent == count:
                end = time.time() + 2.0
        if end is not None and (time.time() >= end or len(got) == count):
            break
        r, _, _ = select.select([s], [], [], 0.005)
        if r:
            data = s.recv(65535)
            hl = (data[0] & 0xF) * 4
            t, _, _, rid, seq = struct.unpack("!BBHHH", data[hl:hl + 8])
            if t == 0 and rid == ident:
                got.add(seq)
    lost = sorted(set(range(count)) - got)
    print(json.dumps({"sent": sent, "received": len(got), "lost": lost}))


def tcp_sink(addr, port, seconds):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(1)
    ls.settimeout(seconds)
    print(json.dumps({"ready": True}), flush=True)
    c, _ = ls.accept()
    c.settimeout(seconds)
    h = hashlib.sha256()
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        h.update(b)
        n += len(b)
    ans = {"received": n, "sha256": h.hexdigest()}
    c.sendall(json.dumps(ans).encode())
    c.close()
    print(json.dumps(ans))


def tcp_send(src, dst, port, nbytes):
    data = os.urandom(nbytes)
    c = socket.create_connection((dst, port), timeout=30, source_address=(src, 0))
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    ans = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        ans += b
    print(json.dumps({"sent": nbytes, "sha256": hashlib.sha256(data).hexdigest(), "answer": json.loads(ans or b"null")}))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "ping":
        ping(a[1], a[2], int(a[3]), float(a[4]))
    elif a[0] == "tcp-sink":
        tcp_sink(a[1], int(a[2]), float(a[3]))
    elif a[0] == "tcp-send":
        tcp_send(a[1], a[2], int(a[3]), int(a[4]))
    else:
        sys.exit(f"unknown mode {a[0]}")
