#!/usr/bin/env python3
"""Write a pcap of mixed cleartext traffic for end-to-end tests and the demo.

Usage: gen_traffic.py OUT.pcap [--count N] [--seed S]

Several flows (IPv4 and IPv6, UDP, TCP, ICMP), frame sizes from 64 to 1514,
some IPv4 packets with DF set. Deterministic for a given seed.
"""
import argparse
import random

from scapy.all import Ether, IP, IPv6, UDP, TCP, ICMP, Raw, wrpcap

SRC_MAC = "02:00:00:00:00:01"
DST_MAC = "02:00:00:00:00:02"


def make_packets(count: int, seed: int):
    rnd = random.Random(seed)
    flows = [
        ("v4", "udp", "10.0.1.10", "10.0.2.20", 4000, 5000),
        ("v4", "tcp", "10.0.1.11", "10.0.2.21", 40000, 443),
        ("v4", "icmp", "10.0.1.12", "10.0.2.22", 0, 0),
        ("v6", "udp", "fd00:1::10", "fd00:2::20", 4001, 5001),
        ("v6", "tcp", "fd00:1::11", "fd00:2::21", 40001, 22),
    ]
    pkts = []
    for i in range(count):
        fam, proto, src, dst, sp, dp = flows[i % len(flows)]
        size = rnd.choice([64, 64, 128, 256, 512, 576, 1000, 1400, 1500, 1514]) if i % 7 else 1514
        eth = Ether(src=SRC_MAC, dst=DST_MAC)
        if fam == "v4":
            l3 = IP(src=src, dst=dst, id=i & 0xFFFF, flags="DF" if i % 3 == 0 else 0, ttl=64)
        else:
            l3 = IPv6(src=src, dst=dst, hlim=64)
        if proto == "udp":
            l4 = UDP(sport=sp, dport=dp)
        elif proto == "tcp":
            l4 = TCP(sport=sp, dport=dp, seq=i * 1000, flags="PA")
        else:
            l4 = ICMP(id=7, seq=i)
        base = eth / l3 / l4
        pad = max(0, size - len(base))
        payload = bytes(rnd.getrandbits(8) for _ in range(pad))
        pkts.append(base / Raw(payload))
    return pkts


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    wrpcap(a.out, make_packets(a.count, a.seed))


if __name__ == "__main__":
    main()
