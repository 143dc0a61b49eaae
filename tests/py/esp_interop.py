#!/usr/bin/env python3
"""Independent ESP oracle for espgw's tests, built on scapy.layers.ipsec.

Usage: esp_interop.py CASES.json RESULTS.json

Each case names an SA (algorithm, keys, SPI, mode, tunnel endpoints, ESN)
and carries:
  - "ours":  an ESP packet espgw produced (hex), and "inner": the original
             packet (hex). We decrypt "ours" with scapy and report the bytes.
  - "seq":   a sequence number; we encrypt "inner" with scapy under it and
             report the ESP packet so that espgw can decrypt it.
A case with "encap": {"sport": .., "dport": ..} is ESP in UDP (RFC 3948):
scapy's own nat_t_header, with the ports as the *peer* sends them.
Nothing here trusts espgw: keys and parameters go straight into scapy.
"""
import json
import sys

from scapy.layers.inet import IP, UDP, defragment
from scapy.layers.inet6 import IPv6, defragment6
from scapy.layers.ipsec import ESP, SecurityAssociation

ALGS = {
    # espgw name: (scapy crypt_algo, scapy auth_algo)
    "aes128-gcm16": ("AES-GCM", None),
    "aes256-gcm16": ("AES-GCM", None),
    "aes128-cbc-hmac-sha1-96": ("AES-CBC", "HMAC-SHA1-96"),
    "aes256-cbc-hmac-sha1-96": ("AES-CBC", "HMAC-SHA1-96"),
    "null-hmac-sha1-96": ("NULL", "HMAC-SHA1-96"),
    # RFC 7634 (salt 4 + IV 8, 16-byte ICV), through pyca/cryptography's ChaCha20Poly1305
    "chacha20-poly1305": ("CHACHA20-POLY1305", None),
}


def ip_class(raw: bytes):
    return IP if raw[0] >> 4 == 4 else IPv6


def make_sa(case, seq_for_esn):
    crypt, auth = ALGS[case["algorithm"]]
    tunnel = None
    if case["mode"] == "tunnel":
        src, dst = case["local"], case["remote"]
        tunnel = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    kwargs = dict(
        spi=case["spi"],
        crypt_algo=crypt,
        crypt_key=bytes.fromhex(case["enc_key"]) if crypt != "NULL" else None,
        tunnel_header=tunnel,
    )
    if crypt == "AES-GCM":
        kwargs["crypt_icv_size"] = 16
    if auth:
        kwargs["auth_algo"] = auth
        kwargs["auth_key"] = bytes.fromhex(case["auth_key"])
    if case.get("encap"):
        e = case["encap"]
        kwargs["nat_t_header"] = UDP(sport=e["sport"], dport=e["dport"])
    if case["esn"]:
        kwargs["esn_en"] = True
        kwargs["esn"] = seq_for_esn >> 32
    return SecurityAssociation(ESP, **kwargs)


def run_case(case):
    out = {"id": case["id"]}
    inner = bytes.fromhex(case["inner"])
    # 1. Decrypt what espgw sent (reassembling its fragments first, if any).
    try:
        if "ours_fragments" in case:
            frags = [bytes.fromhex(f) for f in case["ours_fragments"]]
            if frags[0][0] >> 4 == 4:
                whole = defragment([IP(f) for f in frags])
                assert len(whole) == 1, f"defragment left {len(whole)} packets"
                pkt = IP(bytes(whole[0]))
            else:
                pkt = IPv6(bytes(defragment6([IPv6(f) for f in frags])))
        else:
            ours = bytes.fromhex(case["ours"])
            pkt = ip_class(ours)(ours)
        sa = make_sa(case, case["ours_seq"])
        dec = sa.decrypt(pkt)
        out["decrypted"] = bytes(dec).hex()
    except Exception as e:  # report, never hide
        out["decrypt_error"] = f"{type(e).__name__}: {e}"
    # 2. Encrypt the original for espgw to decrypt.
    if "seq" not in case:
        return out
    try:
        seq = case["seq"]
        sa = make_sa(case, seq)
        enc = sa.encrypt(ip_class(inner)(inner), seq_num=seq & 0xFFFFFFFF)
        out["encrypted"] = bytes(enc).hex()
    except Exception as e:
        out["encrypt_error"] = f"{type(e).__name__}: {e}"
    return out


def main():
    cases = json.load(open(sys.argv[1]))
    results = [run_case(c) for c in cases]
    json.dump(results, open(sys.argv[2], "w"))
    print(f"esp_interop: {len(results)} cases")


if __name__ == "__main__":
    main()
