#!/usr/bin/env python3
"""IKEv2 crypto done independently with pyca/cryptography, for espgw's tests.

  keys NI NR GIR SPII SPIR ENCR_LEN INTEG_LEN [PRF]   SKEYSEED and the 7 keys (RFC 7296 §2.14); PRF sha256 (default), sha384, sha512
  keymat SKD NI NR LEN                          child SA KEYMAT (§2.17)
  x25519 PEER_PUB                               our public key and the shared secret
  ecp GROUP PEER_PUB                            the same for ECP-256 (19) / ECP-384 (20): x | y (RFC 5903)
  modp2048 PEER_PUB                             the same for MODP-2048 (14, RFC 3526), 256-byte values
  open_cbc INTEG EKEY AKEY MSG                  check (HMAC-SHA256-128 / HMAC-SHA1-96) and decrypt an AES-CBC SK message
  seal_cbc INTEG EKEY AKEY SPII SPIR EXCH FLAGS MID FIRST CHAIN
                                                build an AES-CBC + HMAC SK message around CHAIN (random IV, padded)
  frag KEYSALT MSG...                           decrypt SKF fragments (RFC 7383): the chain put back together
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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
import os
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec

MODP2048_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F"
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510"
    "15728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)


PRF = hashes.SHA256


def prf(k, d):
    h = hmac.HMAC(k, PRF())
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
        global PRF
        PRF = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}[a[8] if len(a) > 8 else "sha256"]
        ni, nr, gir = x(a[1]), x(a[2]), x(a[3])
        spii, spir, el, il = int(a[4], 16), int(a[5], 16), int(a[6]), int(a[7])
        seed = prf(ni + nr, gir)
        pl = PRF.digest_size
        lens = [pl, il, il, el, el, pl, pl]
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
    elif a[0] == "ecp":
        curve = {19: ec.SECP256R1(), 20: ec.SECP384R1()}[int(a[1])]
        k = ec.generate_private_key(curve)
        pub = k.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x(a[2]))
        print(json.dumps({"public": pub.hex(), "shared": k.exchange(ec.ECDH(), peer).hex()}))
    elif a[0] == "modp2048":
        params = dh.DHParameterNumbers(MODP2048_P, 2).parameters()
        k = params.generate_private_key()
        pub = k.public_key().public_numbers().y.to_bytes(256, "big")
        peer = dh.DHPublicNumbers(int.from_bytes(x(a[1]), "big"), params.parameter_numbers()).public_key()
        # pyca strips leading zeros; RFC 7296 §2.14 keeps the prime's length.
        print(json.dumps({"public": pub.hex(), "shared": k.exchange(peer).rjust(256, b"\x00").hex()}))
    elif a[0] in ("open_cbc", "seal_cbc"):
        hname, icv = {"sha256": (hashes.SHA256(), 16), "sha1": (hashes.SHA1(), 12)}[a[1]]
        ek, ak = x(a[2]), x(a[3])

        def mac(data):
            h = hmac.HMAC(ak, hname)
            h.update(data)
            return h.finalize()[:icv]
        if a[0] == "open_cbc":
            msg = x(a[4])
            if mac(msg[:-icv]) != msg[-icv:]:
                raise SystemExit("ICV mismatch")
            iv, ct = msg[32:48], msg[48:-icv]
            d = Cipher(algorithms.AES(ek), modes.CBC(iv)).decryptor()
            plain = d.update(ct) + d.finalize()
            print(json.dumps({"first": msg[28], "chain": plain[:len(plain) - 1 - plain[-1]].hex()}))
        else:
            spii, spir, exch, flags, mid, first = int(a[4], 16), int(a[5], 16), int(a[6]), int(a[7]), int(a[8]), int(a[9])
            chain = x(a[10])
            padlen = 15 - len(chain) % 16
            plain = chain + bytes(padlen) + bytes([padlen])
            iv = os.urandom(16)
            e = Cipher(algorithms.AES(ek), modes.CBC(iv)).encryptor()
            ct = e.update(plain) + e.finalize()
            sk_len = 4 + 16 + len(ct) + icv
            hdr = struct.pack(">QQBBBBII", spii, spir, 46, 0x20, exch, flags, mid, 28 + sk_len) + struct.pack(">BBH", first, 0, sk_len)
            msg = hdr + iv + ct
            print(json.dumps({"message": (msg + mac(msg)).hex()}))
    elif a[0] == "frag":
        ks, chain, first = x(a[1]), b"", None
        parts = {}
        for m in a[2:]:
            msg = x(m)
            skf_len = struct.unpack(">H", msg[30:32])[0]
            number, total = struct.unpack(">HH", msg[32:36])
            body = msg[36:28 + skf_len]
            plain = AESGCM(ks[:-4]).decrypt(ks[-4:] + body[:8], body[8:], msg[:36])
            parts[number] = plain[:len(plain) - 1 - plain[-1]]
            if number == 1:
                first = msg[28]
        chain = b"".join(parts[n] for n in range(1, total + 1))
        print(json.dumps({"first": first, "total": total, "chain": chain.hex()}))
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
