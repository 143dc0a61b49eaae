#!/usr/bin/env python3
"""IKEv2 crypto done independently with pyca/cryptography, for espgw's tests.

  keys NI NR GIR SPII SPIR ENCR_LEN INTEG_LEN   SKEYSEED and the 7 keys (RFC 7296 §2.14)
  keymat SKD NI NR LEN                          child SA KEYMAT (§2.17)
  x25519 PEER_PUB                               our public key and the shared secret
  open KEYSALT MSG                              decrypt an SK-first message (RFC 5282): inner chain hex
  seal KEYSALT IV SPII SPIR EXCH FLAGS MID FIRST PLAIN
                                                build an SK-first message around PLAIN (chain + pad length)
All values hex, JSON out.
"""
import json
import struct
import sys

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives import serialization


def prf(k, d):
    h = hmac.HMAC(k, hashes.SHA256())
    h.update(d)
    return h.finalize()


def prf_plus(k, s, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = prf(k, t + s + bytes([i]))
        out += t
        i += 1
    return out[:n]


def main():
    a = sys.argv[1:]
    x = bytes.fromhex
    if a[0] == "keys":
        ni, nr, gir = x(a[1]), x(a[2]), x(a[3])
        spii, spir, el, il = int(a[4], 16), int(a[5], 16), int(a[6]), int(a[7])
        seed = prf(ni + nr, gir)
        lens = [32, il, il, el, el, 32, 32]
        km = prf_plus(seed, ni + nr + struct.pack(">QQ", spii, spir), sum(lens))
        names = ["sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"]
        out, at = {}, 0
        for n, l in zip(names, lens):
            out[n] = km[at:at + l].hex()
            at += l
        print(json.dumps(out))
    elif a[0] == "keymat":
        print(json.dumps({"keymat": prf_plus(x(a[1]), x(a[2]) + x(a[3]), int(a[4])).hex()}))
    elif a[0] == "x25519":
        k = X25519PrivateKey.generate()
        pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        print(json.dumps({"public": pub.hex(), "shared": k.exchange(X25519PublicKey.from_public_bytes(x(a[1]))).hex()}))
    elif a[0] == "open":
        ks, msg = x(a[1]), x(a[2])
        sk_len = struct.unpack(">H", msg[30:32])[0]
        body = msg[32:28 + sk_len]
        iv, ct = body[:8], body[8:]
        plain = AESGCM(ks[:-4]).decrypt(ks[-4:] + iv, ct, msg[:32])
        pad = plain[-1]
        print(json.dumps({"first": msg[28], "chain": plain[:len(plain) - 1 - pad].hex()}))
    elif a[0] == "seal":
        ks, iv = x(a[1]), x(a[2])
        spii, spir, exch, flags, mid, first = int(a[3], 16), int(a[4], 16), int(a[5]), int(a[6]), int(a[7]), int(a[8])
        plain = x(a[9]) + b"\x00"
        sk_len = 4 + 8 + len(plain) + 16
        total = 28 + sk_len
        hdr = struct.pack(">QQBBBBII", spii, spir, 46, 0x20, exch, flags, mid, total) + struct.pack(">BBH", first, 0, sk_len)
        ct = AESGCM(ks[:-4]).encrypt(ks[-4:] + iv, plain, hdr)
        print(json.dumps({"message": (hdr + iv + ct).hex()}))


if __name__ == "__main__":
    main()
