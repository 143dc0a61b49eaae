#!/usr/bin/env python3
"""Turn criterion's estimates (target/criterion) into the Markdown tables of
perf/RESULTS.md: ESP stage vs raw crypto per algorithm and size, and policy
lookups. Usage: perf/criterion_tables.py [target/criterion]"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"


def median_ns(group, bench):
    p = os.path.join(root, group, bench, "new", "estimates.json")
    with open(p) as f:
        return json.load(f)["median"]["point_estimate"]


def esp_table():
    rows = []
    for alg, backends in [("aes128-gcm16", ["ring", "rustcrypto"]), ("aes256-gcm16", ["ring", "rustcrypto"]),
                          ("chacha20-poly1305", ["ring", "rustcrypto"]),
                          ("aes128-cbc-hmac-sha1-96", ["rustcrypto"]), ("null-hmac-sha1-96", ["rustcrypto"])]:
        for be in backends:
            g = f"{alg}_{be}"
            if not os.path.isdir(os.path.join(root, g)):
                continue
            for size in (64, 512, 1420):
                try:
                    rs, ro = median_ns(g, f"raw_seal_x32_{size}") / 32, median_ns(g, f"raw_open_x32_{size}") / 32
                    en, de = median_ns(g, f"encap_burst32_{size}") / 32, median_ns(g, f"decap_burst32_{size}") / 32
                except FileNotFoundError:
                    continue
                gbps = size * 8 / en
                rows.append(f"| {alg} | {be} | {size} | {rs:.0f} | {en:.0f} | +{en - rs:.0f} ns / {100 * (en / rs - 1):+.1f} % | "
                            f"{ro:.0f} | {de:.0f} | +{de - ro:.0f} ns / {100 * (de / ro - 1):+.1f} % | {gbps:.2f} |")
    print("| algorithm | backend | bytes | raw seal ns | encap ns | ESP adds (out) | raw open ns | decap ns | ESP adds (in) | encap Gbit/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def policy_table():
    print("| benchmark | median |")
    print("|---|---:|")
    for b in sorted(os.listdir(os.path.join(root, "policy"))):
        if b == "report":
            continue
        ns = median_ns("policy", b)
        val = f"{ns / 1e6:.2f} ms" if ns > 1e6 else (f"{ns / 1e3:.2f} µs" if ns > 1e3 else f"{ns:.1f} ns")
        print(f"| {b.replace('_', ' ', 1)} | {val} |")


if __name__ == "__main__":
    esp_table()
    print()
    policy_table()
