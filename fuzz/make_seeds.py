#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets that take structured inputs
(esp, reassembly, icmp, neighbor, config, api) into fuzz/seeds/<target>/.

Each seed is a small, meaningful input in the target's format (see
core/src/lab/surfaces.rs and control/src/fuzzing.rs): the fuzzer starts from
real traffic and real configurations, not from nothing. The seeds are
committed; run this again after changing a format.
"""
import glob
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def op(tag, body):
    return bytes([tag]) + struct.pack(">H", len(body)) + body


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f">{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp4(src, dst, length, df=False):
    """An IPv4/UDP packet of `length` bytes (header checksum set)."""
    udp = struct.pack(">HHHH", 12345, 8080, length - 20, 0) + bytes(range(256)) * 8
    udp = udp[: length - 20]
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, length, 1, 0x4000 if df else 0, 64, 17, 0, bytes(src), bytes(dst))
    hdr = hdr[:10] + struct.pack(">H", csum(hdr)) + hdr[12:]
    return hdr + udp


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


B_SIDE, A_SIDE = [10, 0, 2, 7], [10, 0, 1, 7]

# esp: [seq(2)] + plaintext (tag 0 raw, 1 wrapped inner, 2 wrapped + flip, 3 time)
inner = udp4(B_SIDE, A_SIDE, 100)
write("esp", "valid", op(1, b"\0\0" + inner) + op(1, b"\0\0" + udp4(B_SIDE, A_SIDE, 1300)))
write("esp", "replayed", op(1, b"\0\x05" + inner) + op(1, b"\0\x05" + inner) + op(1, b"\0\x01" + inner))
write("esp", "raw_trailer", op(0, b"\0\0" + inner + b"\x01\x02\x02\x04") + op(0, b"\0\0" + inner + b"\x00\x3b"))
write("esp", "bad_pad_len", op(0, b"\0\0" + inner + b"\xff\x04") + op(0, b"\0\0" + b"\x02\x04"))
write("esp", "wrong_next_header", op(0, b"\0\0" + inner + b"\x00\x06") + op(0, b"\0\0" + inner + b"\x00\x29"))
write("esp", "outside_selectors", op(1, b"\0\0" + udp4([10, 9, 9, 9], A_SIDE, 80)) + op(1, b"\0\0" + udp4(B_SIDE, [192, 0, 2, 1], 80)))
write("esp", "flips", b"".join(op(2, b"\0\0" + struct.pack(">H", p) + inner) for p in (1, 15, 23, 34, 38, 42, 50, 60, 140)))
write("esp", "time", op(1, b"\0\0" + inner) + op(3, b"\xff\xff") + op(1, b"\0\0" + inner))

# reassembly: [inner len(2)] + (start/8, len/8, flags) per fragment; tag 3 = time
def frags(length, *specs):
    return struct.pack(">H", length) + b"".join(bytes(s) for s in specs)


write("reassembly", "two_halves", op(0, frags(1000, (0, 64, 0), (64, 255, 0))))
write("reassembly", "reversed", op(0, frags(1000, (96, 255, 0), (32, 64, 0), (0, 32, 0))))
write("reassembly", "overlap", op(0, frags(1000, (0, 64, 0), (60, 255, 0))))
write("reassembly", "duplicate", op(0, frags(600, (0, 40, 8), (40, 255, 0))))
write("reassembly", "gap_then_time", op(0, frags(1000, (0, 32, 0), (64, 255, 0))) + op(3, b"\xff\xff") + op(0, frags(300, (0, 255, 0))))
write("reassembly", "mixed_ids", op(0, frags(800, (0, 40, 2), (40, 255, 0), (0, 40, 0))))
write("reassembly", "foreign_source", op(0, frags(800, (0, 40, 4), (40, 255, 4))))
write("reassembly", "no_last", op(0, frags(800, (0, 40, 0), (40, 255, 1))))
write("reassembly", "many", op(0, frags(1300, *[(i, 1, 0) for i in range(0, 170)])))

# icmp: 0 host packet [len] (tag bit 2 = DF), 1 report [mtu, quote len, flip], 2 any ICMP, 3 time
write("icmp", "report_then_df", op(0, b"\x03\xe8") + op(1, struct.pack(">HHH", 1200, 200, 0)) + op(4, b"\x05\x78"))
write("icmp", "report_low_mtu", op(0, b"\x01\x00") + op(1, struct.pack(">HHH", 68, 28, 0)) + op(4, b"\x05\x78") + op(0, b"\x05\x78"))
write("icmp", "report_mtu_zero", op(0, b"\x01\x00") + op(1, struct.pack(">HHH", 0, 60, 0)) + op(4, b"\x04\x00"))
write("icmp", "report_higher", op(0, b"\x01\x00") + op(1, struct.pack(">HHH", 9000, 60, 0)) + op(4, b"\x05\x78"))
write("icmp", "short_quote", op(0, b"\x01\x00") + op(1, struct.pack(">HHH", 1000, 20, 0)) + op(1, struct.pack(">HHH", 1000, 8, 0)))
write("icmp", "quote_flipped", op(0, b"\x01\x00") + b"".join(op(1, struct.pack(">HHH", 1000, 60, f)) for f in (1, 9, 12, 16, 20, 24)))
write("icmp", "from_the_peer", op(0, b"\x01\x00") + op(5, struct.pack(">HHH", 1100, 60, 0)) + op(4, b"\x05\x00"))
write("icmp", "ageing", op(0, b"\x01\x00") + op(1, struct.pack(">HHH", 1000, 60, 0)) + op(3, b"\x27\x10") + op(4, b"\x05\x00"))
write("icmp", "echo_to_gateway", op(2, b"\x08\x00\x00\x00\x12\x34\x00\x01hello") + op(6, b"\x08\x00\x00\x00\x12\x34\x00\x02hi"))

# neighbor: 0 ARP [op, sha(6), choice, raw addrs] (tag bit 2 = protected port), 1 raw ARP, 2 ICMPv6, 3 resolve
mac = bytes([2, 0, 0, 0, 0, 0x33])
write("neighbor", "arp_request_own", op(0, b"\x01" + mac + b"\x01") + op(4, b"\x01" + mac + b"\x01"))
write("neighbor", "arp_reply_learns", op(0, b"\x02" + mac + b"\x01") + op(3, b"\x05"))
write("neighbor", "arp_for_others", op(0, b"\x01" + mac + b"\x09") + op(0, b"\x01" + mac + b"\x0f\x0a\x00\x01\xfe\x0a\x00\x01\x05"))
write("neighbor", "arp_raw", op(1, bytes([0, 1, 8, 0, 6, 4, 0, 1]) + mac + bytes([10, 0, 1, 5]) + bytes(6) + bytes([10, 0, 1, 254])))
ns = bytes([135, 0, 0, 0, 0, 0, 0, 0]) + bytes.fromhex("fd0000010000000000000000000000fe") + bytes([1, 1]) + mac
na = bytes([136, 0, 0, 0, 0x60, 0, 0, 0]) + bytes.fromhex("fd000001000000000000000000000005") + bytes([2, 1]) + mac
write("neighbor", "nd_solicit", op(2, b"\x00\x01" + ns) + op(2, b"\x01\x00" + ns) + op(2, b"\x02\x01" + ns))
write("neighbor", "nd_advert", op(2, b"\x01\x00" + na) + op(3, b"\x05"))
write("neighbor", "nd_router", op(2, b"\x00\x02" + bytes([133, 0, 0, 0, 0, 0, 0, 0])) + op(2, b"\x00\x02" + bytes([134, 0, 0, 0, 64, 0, 0, 0]) + bytes(8)))
write("neighbor", "resolve_many", b"".join(op(3, bytes([h])) for h in (5, 6, 7, 254, 255, 0)))

# config: the project's own configurations, and a few broken ones
for path in sorted(glob.glob(os.path.join(HERE, "..", "configs", "*.toml"))) + [os.path.join(HERE, "..", "packaging", "espgw.toml")]:
    name = os.path.basename(os.path.dirname(path)) + "_" + os.path.basename(path).replace(".toml", "")
    with open(path, "rb") as f:
        write("config", name, f.read())
write("config", "bad_key_len", b'[[sa]]\nname = "x"\ndirection = "out"\nspi = 1\nalgorithm = "aes128-gcm16"\nenc_key = "0x0011223344556677"\nmode = "tunnel"\nlocal = "192.0.2.1"\nremote = "198.51.100.1"\n')
write("config", "unknown_field", b'[workers]\ncores = [0]\nbogus = 1\n')
write("config", "broken_toml", b'[[port]\nname = "a"\n')

# pipeline: the pass eroute's flow (clear out of the protected port), small and DF-big
write("pipeline", "pass_flow", op(2, udp4([10, 0, 1, 5], [10, 0, 9, 7], 100)) + op(2, udp4([10, 0, 1, 5], [10, 0, 9, 7], 1460, df=True)) + op(2, udp4([10, 0, 1, 5], [10, 0, 9, 7], 1460)))

# pipeline: a TCP SYN whose MSS the protect eroute clamps
def tcp_syn(src, dst, mss):
    tcp = struct.pack(">HHIIBBHHH", 40000, 443, 1, 0, 6 << 4, 0x02, 65535, 0, 0) + struct.pack(">BBH", 2, 4, mss)
    tcp = tcp[:12] + bytes([(6 << 4)]) + tcp[13:]
    ph = bytes(src) + bytes(dst) + struct.pack(">BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack(">H", csum(ph + tcp)) + tcp[18:]
    length = 20 + len(tcp)
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, length, 1, 0x4000, 64, 6, 0, bytes(src), bytes(dst))
    hdr = hdr[:10] + struct.pack(">H", csum(hdr)) + hdr[12:]
    return hdr + tcp


write("pipeline", "tcp_syn_mss", op(2, tcp_syn([10, 0, 1, 5], [10, 0, 2, 7], 1460)) + op(2, tcp_syn([10, 0, 1, 5], [10, 0, 2, 7], 536)))

# natt_host: tag 0 raw frame on the protected port, 1 UDP to A's 4500 [sport(2)] + payload,
# 2 B seals in UDP [flip(2), nat port(2)] + inner, 3 raw frame from the kernel,
# 4 IP packet from the kernel (source A), 5 time
A_IP, B_IP = [192, 0, 2, 1], [198, 51, 100, 1]
write("natt_host", "demux", op(1, b"\0\0\xff") + op(1, b"\0\0" + bytes(4) + b"IKE_SA_INIT") + op(1, b"\x79\x18\x01\x02")
      + op(1, b"\0\0\x00\x00\xb0\xa0\x00\x00\x00\x01" + bytes(40)) + op(1, b"\0\0\x00\x00\x99\x99\x00\x00\x00\x01" + bytes(40)))
inner_b = udp4(B_SIDE, A_SIDE, 200)
write("natt_host", "sealed_and_nat", op(2, b"\0\0\0\0" + inner_b) + op(2, b"\0\0\x79\x18" + inner_b)
      + op(2, b"\0\0\x79\x19" + inner_b) + op(2, b"\0\x2c\x79\x18" + inner_b) + op(2, b"\0\0\0\0" + udp4(B_SIDE, [10, 0, 1, 254], 90)))
ping = bytearray(udp4(A_IP, B_IP, 40))
ping[9] = 1
ping[10:12] = b"\0\0"
ping[10:12] = struct.pack(">H", csum(bytes(ping[:20])))
ping[20:28] = bytes([0, 0, 0, 0, 0, 1, 0, 1])
ike = bytearray(udp4(A_IP, B_IP, 80))
ike[20:24] = struct.pack(">HH", 500, 500)
arp = bytes([0xff] * 6) + bytes([2, 0xa, 0, 0, 0, 2]) + b"\x08\x06" + bytes([0, 1, 8, 0, 6, 4, 0, 1, 2, 0xa, 0, 0, 0, 2] + A_IP + [0] * 6 + [192, 0, 2, 254])
write("natt_host", "kernel", op(3, arp) + op(4, bytes(ping)) + op(4, bytes(ike)) + op(4, udp4(A_IP, [10, 0, 2, 7], 60)) + op(4, udp4(A_IP, [203, 0, 113, 5], 1500)))
to_gw = bytearray(udp4(B_IP, A_IP, 60))
to_gw[9] = 1
to_gw[10:12] = b"\0\0"
to_gw[10:12] = struct.pack(">H", csum(bytes(to_gw[:20])))
eth_to_a = bytes([2, 0xa, 0, 0, 0, 1, 2, 0xb, 0, 0, 0, 1]) + b"\x08\x00"
write("natt_host", "to_gateway", op(0, eth_to_a + bytes(to_gw)) + op(0, eth_to_a + udp4(B_IP, A_IP, 100)) + op(5, b"\x03\xe8") + op(0, eth_to_a + bytes(to_gw)))

# ike: IKEv2 messages scapy's IKEv2 layer builds (IKE_SA_INIT, IKE_AUTH, INFORMATIONAL with SK)
import json
import subprocess
import sys
msgs = json.loads(subprocess.run([sys.executable, os.path.join(HERE, "..", "tests", "py", "ike_oracle.py"), "build"],
                                 check=True, capture_output=True, text=True).stdout)
for name, h in zip(["sa_init", "auth", "informational_sk"], msgs):
    write("ike", name, bytes.fromhex(h))

# ike_fragments: 3 size bytes (fragment size 100 + 4*b0, the two messages' lengths), then
# (op, index) pairs: op bit 0 picks the message, bits 1-2 both set corrupt the fragment
write("ike_fragments", "in_order", bytes([40, 40, 10]) + b"".join(bytes([0, i]) for i in range(8)))
write("ike_fragments", "interleaved", bytes([10, 20, 30]) + b"".join(bytes([i & 1, i // 2]) for i in range(24)))
write("ike_fragments", "corrupted_then_good", bytes([60, 50, 5]) + b"".join(bytes([6, i, 0, i]) for i in range(6)))

# api: requests separated by NUL; a request line, headers, an empty line, a body
AUTH = "Authorization: Bearer fuzz-token\nContent-Type: application/json\n"


def req(line, body="", auth=True):
    return (line + "\n" + (AUTH if auth else "Content-Type: application/json\n") + "\n" + body).encode()


SA = ('{"name":"c","direction":"out","spi":8193,"algorithm":"aes128-gcm16","enc_key":"0x%s",'
      '"mode":"tunnel","local":"192.0.2.1","remote":"198.51.100.7"}') % ("11" * 20)
ER = '{"name":"e","src":"10.0.1.0/24","dst":"10.0.3.0/24","proto":"tcp","dport":"1000-2000","action":"protect","sa":"c"}'
write("api", "create_and_list", b"\0".join([req("POST /api/v1/sas", SA), req("POST /api/v1/eroutes", ER), req("GET /api/v1/sas"), req("GET /api/v1/eroutes?limit=1")]))
write("api", "replace_and_delete", b"\0".join([req("POST /api/v1/sas", SA), req("PUT /api/v1/sas/c", SA.replace("8193", "8194")), req("DELETE /api/v1/sas/c")]))
write("api", "no_token", b"\0".join([req("POST /api/v1/sas", SA, auth=False), req("DELETE /api/v1/sas/to-b", auth=False), req("GET /api/v1/sas", auth=False)]))
write("api", "socket", req("DELETE /api/v1/eroutes/nets", auth=False).replace(b"\n\n", b"\nVia: socket\n\n", 1))
write("api", "bad_bodies", b"\0".join([req("POST /api/v1/sas", "{"), req("POST /api/v1/sas", '{"name":1}'), req("PUT /api/v1/sas/to-b", "[]")]))
write("api", "methods", b"\0".join([req("PATCH /api/v1/sas"), req("HEAD /api/v1/sas"), req("GET /api/v1/nothing"), req("GET /api/v1/openapi.json")]))
write("api", "stats_and_metrics", b"\0".join([req("GET /api/v1/stats"), req("GET /metrics"), req("GET /api/v1/health")]))
print("seeds written")
