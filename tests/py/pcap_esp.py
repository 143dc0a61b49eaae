#!/usr/bin/env python3
"""scapy as an independent ESP endpoint for espgw's end-to-end tests.

  pcap_esp.py decrypt IN.pcap OUT.pcap SA...   reassemble + decrypt ESP frames
  pcap_esp.py encrypt IN.pcap OUT.pcap SA...   encrypt cleartext frames

SA options: --algorithm NAME --enc-key HEX [--auth-key HEX] --spi N
            --local IP --remote IP [--esn] [--seq N] [--dst-mac MAC]
            [--nat-t SPORT:DPORT]   ESP in UDP (RFC 3948), scapy's nat_t_header
Frames that are not ESP (for decrypt) are counted and skipped. Prints counts.
"""
import argparse
import sys

from scapy.all import Ether, rdpcap, wrpcap
from scapy.layers.inet import IP, UDP, defragment
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

ALGS = {
    "aes128-gcm16": ("AES-GCM", None),
    "aes256-gcm16": ("AES-GCM", None),
    "aes128-cbc-hmac-sha1-96": ("AES-CBC", "HMAC-SHA1-96"),
    "aes256-cbc-hmac-sha1-96": ("AES-CBC", "HMAC-SHA1-96"),
    "null-hmac-sha1-96": ("NULL", "HMAC-SHA1-96"),
    # RFC 7634 (salt 4 + IV 8, 16-byte ICV), through pyca/cryptography's ChaCha20Poly1305
    "chacha20-poly1305": ("CHACHA20-POLY1305", None),
}


def make_sa(a, esn_hi=0):
    crypt, auth = ALGS[a.algorithm]
    tunnel = IPv6(src=a.local, dst=a.remote) if ":" in a.local else IP(src=a.local, dst=a.remote)
    kw = dict(spi=a.spi, crypt_algo=crypt, crypt_key=bytes.fromhex(a.enc_key) if a.enc_key else None, tunnel_header=tunnel)
    if crypt == "AES-GCM":
        kw["crypt_icv_size"] = 16
    if auth:
        kw["auth_algo"] = auth
        kw["auth_key"] = bytes.fromhex(a.auth_key)
    if a.nat_t:
        sport, dport = (int(x) for x in a.nat_t.split(":"))
        kw["nat_t_header"] = UDP(sport=sport, dport=dport)
    if a.esn:
        kw["esn_en"] = True
        kw["esn"] = esn_hi
    return SecurityAssociation(ESP, **kw)


def decrypt(a):
    frames = rdpcap(a.inp)
    ips = [f[IP] for f in frames if IP in f]
    ips6 = [f[IPv6] for f in frames if IPv6 in f and IP not in f]
    whole = list(defragment(ips)) + ips6
    sa = make_sa(a)
    out, skipped, failed = [], 0, 0
    for p in whole:
        p = p.__class__(bytes(p))
        if ESP not in p:
            skipped += 1
            continue
        try:
            inner = sa.decrypt(p)
            out.append(Ether(src="02:00:00:00:00:aa", dst="02:00:00:00:00:bb") / inner)
        except Exception as e:  # count, report the first
            if failed == 0:
                print(f"first failure: {type(e).__name__}: {e}", file=sys.stderr)
            failed += 1
    wrpcap(a.out, out)
    print(f"decrypted {len(out)} packets from {len(frames)} frames ({len(whole)} after reassembly), {skipped} not ESP, {failed} failed")
    return 1 if failed else 0


def encrypt(a):
    frames = rdpcap(a.inp)
    sa = make_sa(a)
    out = []
    seq = a.seq
    for f in frames:
        l3 = f[IP] if IP in f else f[IPv6]
        e = sa.encrypt(l3.__class__(bytes(l3)), seq_num=seq)
        out.append(Ether(src="02:00:00:00:00:cc", dst=a.dst_mac) / e)
        seq += 1
    wrpcap(a.out, out)
    print(f"encrypted {len(out)} packets")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["decrypt", "encrypt"])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--algorithm", required=True)
    ap.add_argument("--enc-key", default="")
    ap.add_argument("--auth-key", default="")
    ap.add_argument("--spi", type=lambda s: int(s, 0), required=True)
    ap.add_argument("--local", required=True)
    ap.add_argument("--remote", required=True)
    ap.add_argument("--esn", action="store_true")
    ap.add_argument("--seq", type=int, default=1)
    ap.add_argument("--dst-mac", default="02:00:00:00:00:01")
    ap.add_argument("--nat-t", default="")
    a = ap.parse_args()
    sys.exit(decrypt(a) if a.cmd == "decrypt" else encrypt(a))


if __name__ == "__main__":
    main()
