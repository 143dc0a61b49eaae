#!/usr/bin/env python3
"""A flood of IKEv2 IKE_SA_INIT requests (RFC 7296 §1.2: SA with
AES-GCM-16/128, PRF-HMAC-SHA256, Curve25519; KE; Ni), one per UDP socket,
each from its own source port, built here byte by byte (not by espgw's
code). Then it listens for a while and sorts the answers.

  ike_flood.py SRC DST COUNT FIRST_PORT
      {"sent": N, "answers": A, "cookies": C, "accepted": S, "refused": R}

cookies: responses holding only a COOKIE notify (§2.6), accepted:
responses with an SA payload, refused: other notifies.
"""
import json
import os
import select
import socket
import struct
import sys
import time


def sa_init(spi):
    attr = struct.pack("!HH", 0x800E, 128)  # key length, TV format
    t_encr = struct.pack("!BBHBBH", 3, 0, 8 + len(attr), 1, 0, 20) + attr  # ENCR_AES_GCM_16
    t_prf = struct.pack("!BBHBBH", 3, 0, 8, 2, 0, 5)  # PRF_HMAC_SHA2_256
    t_dh = struct.pack("!BBHBBH", 0, 0, 8, 4, 0, 31)  # Curve25519
    trans = t_encr + t_prf + t_dh
    prop = struct.pack("!BBHBBBB", 0, 0, 8 + len(trans), 1, 1, 0, 3) + trans
    sa = struct.pack("!BBH", 34, 0, 4 + len(prop)) + prop  # next: KE
    ke_data = os.urandom(32)
    ke = struct.pack("!BBHHH", 40, 0, 8 + len(ke_data), 31, 0) + ke_data  # next: Nonce
    nonce = os.urandom(32)
    ni = struct.pack("!BBH", 0, 0, 4 + len(nonce)) + nonce
    body = sa + ke + ni
    hdr = struct.pack("!QQBBBBII", spi, 0, 33, 0x20, 34, 0x08, 0, 28 + len(body))
    return hdr + body


def classify(msg):
    """(first payload type, notify type if the first payload is a notify)."""
    if len(msg) < 28:
        return None, None
    nxt = msg[16]
    if nxt == 41 and len(msg) >= 36:
        return nxt, struct.unpack("!H", msg[28 + 6:28 + 8])[0]
    return nxt, None


def main(src, dst, count, first_port):
    socks = []
    for k in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, first_port + k))
        s.setblocking(False)
        socks.append(s)
    for s in socks:
        s.sendto(sa_init(int.from_bytes(os.urandom(8), "big") | 1), (dst, 500))
        time.sleep(0.002)
    answers = cookies = accepted = refused = 0
    end = time.time() + 3.0
    while time.time() < end:
        r, _, _ = select.select(socks, [], [], 0.2)
        for s in r:
            try:
                msg = s.recv(65535)
            except BlockingIOError:
                continue
            answers += 1
            first, notify = classify(msg)
            if first == 41 and notify == 16390:
                cookies += 1
            elif first == 33:
                accepted += 1
            else:
                refused += 1
    print(json.dumps({"sent": count, "answers": answers, "cookies": cookies, "accepted": accepted, "refused": refused}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
