#!/usr/bin/env python3
"""The two ends of espgw's host-path test, each run in its network namespace.

  host_peer.py serve ADDR SECONDS      on the gateway's kernel side: UDP echo on
                                        ADDR:7, an "IKE responder" on ADDR:500
                                        (answers b"IKE-RESP" + the request), and
                                        a sink on ADDR:9000; prints JSON of what
                                        the sink received.
  host_peer.py ping SRC DST            ICMP echo from SRC to DST (raw socket);
                                        exit 0 when the reply came.
  host_peer.py udp SRC SPORT DST DPORT PAYLOAD
                                        send a datagram, print the answer's
                                        payload and source as JSON.
  host_peer.py esp SRC DST SPI KEYHEX SEQ PAYLOAD
                                        send a transport-mode ESP packet (scapy,
                                        AES-GCM) carrying UDP 5000 -> 9000.
"""
import json
import select
import socket
import struct
import sys
import time


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def serve(addr, seconds):
    socks = {}
    for port in (7, 500, 9000):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, port))
        socks[s.fileno()] = (port, s)
    print(json.dumps({"ready": True}), flush=True)
    got = []
    end = time.time() + seconds
    while time.time() < end:
        r, _, _ = select.select([s for _, s in socks.values()], [], [], 0.1)
        for s in r:
            port = socks[s.fileno()][0]
            data, peer = s.recvfrom(65535)
            if port == 7:
                s.sendto(data, peer)
            elif port == 500:
                s.sendto(b"IKE-RESP" + data, peer)
            else:
                got.append({"from": peer[0], "sport": peer[1], "payload": data.decode(errors="replace")})
    print(json.dumps({"sink": got}), flush=True)


def ping(src, dst):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.bind((src, 0))
    s.settimeout(0.5)
    for seq in range(1, 11):
        body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"espgw host path"
        body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
        s.sendto(body, (dst, 0))
        try:
            while True:
                pkt, peer = s.recvfrom(2048)
                icmp = pkt[(pkt[0] & 15) * 4:]
                if peer[0] == dst and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == 0x4242:
                    print(json.dumps({"reply_from": peer[0], "seq": seq}))
                    return 0
        except socket.timeout:
            continue
    return 1


def udp(src, sport, dst, dport, payload):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, int(sport)))
    s.settimeout(0.5)
    for _ in range(10):
        s.sendto(payload.encode(), (dst, int(dport)))
        try:
            data, peer = s.recvfrom(65535)
            print(json.dumps({"from": peer[0], "sport": peer[1], "payload": data.decode(errors="replace")}))
            return 0
        except socket.timeout:
            continue
    return 1


def esp(src, dst, spi, key, seq, payload):
    from scapy.all import send
    from scapy.layers.inet import IP, UDP
    from scapy.layers.ipsec import ESP, SecurityAssociation

    sa = SecurityAssociation(ESP, spi=int(spi, 0), crypt_algo="AES-GCM", crypt_key=bytes.fromhex(key), crypt_icv_size=16)
    inner = IP(src=src, dst=dst) / UDP(sport=5000, dport=9000) / payload.encode()
    pkt = sa.encrypt(IP(bytes(inner)), seq_num=int(seq))
    send(pkt, verbose=False)
    return 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(args[0], float(args[1]))
        return 0
    return {"ping": ping, "udp": udp, "esp": esp}[cmd](*args)


if __name__ == "__main__":
    sys.exit(main())
