#!/usr/bin/env python3
"""espgw throughput harness: one command, progress while it runs, a Markdown
table and a CSV at the end.

    python3 perf/harness.py                 # full run (3 repeats)
    python3 perf/harness.py --quick         # 1 repeat, 1 s per point

For AES-128-GCM, AES-256-GCM and AES-128-CBC+HMAC-SHA1, frames of 64, 512,
1420 B and IMIX (64:570:1518 in 7:4:1), outbound and inbound: espgw replays a
capture from memory (net_pcap infinite_rx=1) into the gateway and out to
net_null (no-rx=1). Every figure is paired with bounds measured in the same
run, because this VM is noisy:

- I/O bound t_io: dpdk-testpmd --forward-mode=io over the same capture ->
  net_null, one core;
- crypto bound t_crypto_best: the faster of dpdk-test-crypto-perf with
  crypto_aesni_mb (intel-ipsec-mb) and our own transform in a tight loop
  (dpdk/examples/crypto_loop.rs), at the same ciphertext sizes;
- bound = 1 / (t_io + t_crypto_best); espgw is reported as a % of it.

Also: plain forwarding (bypass) at 64 B against testpmd io, and two workers on
one SA against two workers on two SAs. Frame sizes include the 4-byte FCS
(RFC 2544), as testers count them; the captures hold frames without it.
"""

import argparse
import csv
import json
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "perf"
ESPGW = ROOT / "target" / "release" / "espgw"
CRYPTO_LOOP = ROOT / "target" / "release" / "examples" / "crypto_loop"

ALGS = {
    # name: (crypto-perf args, our backends, pad alignment, iv, icv)
    "aes128-gcm16": (["--optype", "aead", "--aead-algo", "aes-gcm", "--aead-key-sz", "16", "--aead-iv-sz", "12",
                      "--aead-aad-sz", "8", "--digest-sz", "16"], ["ring", "rustcrypto", "ipsec-mb"], 4, 8, 16),
    "aes256-gcm16": (["--optype", "aead", "--aead-algo", "aes-gcm", "--aead-key-sz", "32", "--aead-iv-sz", "12",
                      "--aead-aad-sz", "8", "--digest-sz", "16"], ["ring", "rustcrypto", "ipsec-mb"], 4, 8, 16),
    "aes128-cbc-hmac-sha1-96": (["--optype", "cipher-then-auth", "--cipher-algo", "aes-cbc", "--cipher-key-sz", "16",
                                 "--cipher-iv-sz", "16", "--auth-algo", "sha1-hmac", "--auth-key-sz", "20",
                                 "--digest-sz", "12"], ["rustcrypto", "ipsec-mb"], 16, 16, 12),
    "chacha20-poly1305": (["--optype", "aead", "--aead-algo", "chacha20-poly1305", "--aead-key-sz", "32",
                           "--aead-iv-sz", "12", "--aead-aad-sz", "8", "--digest-sz", "16"],
                          ["ring", "rustcrypto", "ipsec-mb"], 4, 8, 16),
}
KEYS = {"aes128-gcm16": 20, "aes256-gcm16": 36, "aes128-cbc-hmac-sha1-96": 16, "chacha20-poly1305": 36}
SIZES = ["64", "512", "1420", "imix"]
IMIX = [64] * 7 + [570] * 4 + [1518]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- captures -----------------------------------------------------------------

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return (~s) & 0xFFFF


def udp_frame(size, i, net):
    """An Ethernet/IPv4/UDP frame of `size` bytes on the wire (FCS included)."""
    ip_len = size - 18
    src = bytes([10, 0, 1, 1 + i % 200])
    dst = bytes([10, 0, net, 1 + (i * 7) % 200])
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, i & 0xFFFF, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    udp = struct.pack("!HHHH", 1024 + i % 64, 5000, ip_len - 20, 0) + bytes(ip_len - 28)
    return bytes.fromhex("020000000001020000000002") + b"\x08\x00" + ip + udp


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for fr in frames:
            f.write(struct.pack("<IIII", 0, 0, len(fr), len(fr)) + fr)


def read_pcap_lengths(path):
    data = Path(path).read_bytes()
    off, out = 24, []
    while off + 16 <= len(data):
        incl = struct.unpack_from("<I", data, off + 8)[0]
        out.append(incl)
        off += 16 + incl
    return out


def sizes_of(size):
    return IMIX if size == "imix" else [int(size)]


def clear_pcap(size, queue):
    """Cleartext frames to 10.0.2.x (queue 0) or 10.0.3.x (queue 1)."""
    p = OUT / f"clear-{size}-q{queue}.pcap"
    if not p.exists():
        frames = [udp_frame(s, i * len(sizes_of(size)) + j, 2 + queue) for i in range(24)
                  for j, s in enumerate(sizes_of(size))] if size == "imix" else \
            [udp_frame(int(size), i, 2 + queue) for i in range(256)]
        write_pcap(p, frames)
    return p


# ---- EAL and configs ------------------------------------------------------------

HUGE = False


def setup_hugepages():
    """Benchmarks run on hugepages when we can set them up (root)."""
    global HUGE
    try:
        nr = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
        if int(nr.read_text()) < 1024:
            nr.write_text("1024")
        if "/dev/hugepages" not in Path("/proc/mounts").read_text():
            os.makedirs("/dev/hugepages", exist_ok=True)
            subprocess.run(["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"], check=True)
        HUGE = int(nr.read_text()) >= 512
    except (OSError, subprocess.CalledProcessError, ValueError):
        HUGE = False
    log(f"hugepages: {'yes (--in-memory)' if HUGE else 'no (--no-huge -m 1024)'}")


_prefix = [0]


def eal_mem(shared=False):
    """Memory and a unique file prefix. `shared`: the multi-process channel
    stays (net_memif needs it), so hugepages without --in-memory."""
    _prefix[0] += 1
    pre = f"espgw-perf-{os.getpid()}-{_prefix[0]}"
    huge = ["--huge-unlink"] if shared else ["--in-memory"]
    return (huge if HUGE else ["--no-huge", "-m", "1024"]) + ["--file-prefix", pre]


def key(alg, n):
    return "0x" + bytes((i * 13 + n) & 0xFF for i in range(KEYS[alg])).hex()


def auth_key(alg):
    return '\nauth_key = "0x' + bytes(range(20)).hex() + '"' if "cbc" in alg else ""


def sa_block(alg, name, direction, spi, n, eroute=None, natt=False):
    local, remote = ("192.0.2.1", "198.51.100.1") if direction == "out" else ("198.51.100.1", "192.0.2.1")
    extra = f'\neroute = "{eroute}"\nreplay_window = 0' if eroute else ""
    if natt:  # ESP in UDP 4500 (RFC 3948)
        extra += '\nencap = "udp"'

    return f"""
[[sa]]
name = "{name}"
direction = "{direction}"
spi = {spi}
algorithm = "{alg}"
enc_key = "{key(alg, n)}"{auth_key(alg)}
mode = "tunnel"
local = "{local}"
remote = "{remote}"{extra}
"""


def gateway_config(path, *, alg, direction, workers, nsas, rx_pcaps, capture=None, bypass=False, natt=False):
    """One gateway: outbound = private(pcap) -> public(null); inbound = public(pcap) -> private(null).
    nsas = 2: queue 0's traffic (10.0.2/24) uses SA 1, queue 1's (10.0.3/24) SA 2."""
    cores = [1] if workers == 1 else [0, 1]
    rx = ",".join(f"rx_pcap={p}" for p in rx_pcaps)
    txq = ",".join(["tx_pcap=/dev/null"] * workers)
    if capture:
        txq = f"tx_pcap={capture}"
    pcap_dev = f"net_pcap0,{rx},{txq}" + ("" if capture or len(rx_pcaps) == 0 else ",infinite_rx=1")
    null_dev = "net_null0,no-rx=1"
    if direction == "out":
        private, public = pcap_dev, null_dev
    else:
        private, public = null_dev, pcap_dev
    if capture:  # capture ESP: private pcap in, public pcap out
        private = f"net_pcap0,{rx},tx_pcap=/dev/null"
        public = f"net_pcap1,rx_pcap={OUT / 'empty.pcap'},tx_pcap={capture}"
    text = f"""
[eal]
args = {json.dumps(eal_mem() + ["--log-level", "*:error", "--no-telemetry"])}

[mempool]
mbufs = 32767
data_room = 2176

[workers]
cores = {cores}

[policy]
default_outbound = "drop"
default_inbound_clear = "drop"

[[port]]
name = "private"
device = "{private}"
role = "cleartext"
addresses = ["10.0.1.254"]
peer_mac = "02:00:00:00:00:01"

[[port]]
name = "public"
device = "{public}"
role = "protected"
mtu = 9000
addresses = ["{'192.0.2.1' if direction == 'out' else '198.51.100.1'}"]
peer_mac = "02:00:00:00:0b:01"

[[route]]
prefix = "10.0.0.0/8"
port = "private"

[[route]]
prefix = "0.0.0.0/0"
port = "public"
via = "198.51.100.254"
"""
    if bypass:
        # Plain forwarding through the pipeline: a pass eroute (policy lookup,
        # TTL, route, L2 rewrite), out of the public port.
        text += ('\n[[eroute]]\nname = "pass"\nsrc = "10.0.1.0/24"\ndst = "10.0.2.0/24"\naction = "pass"\n'
                 '\n[[route]]\nprefix = "10.0.2.0/24"\nport = "public"\nvia = "198.51.100.254"\n')
    else:
        nets = ["10.0.2.0/24", "10.0.3.0/24"] if nsas == 2 else ["10.0.0.0/8"]
        for i, net in enumerate(nets):
            sa = f"sa{i + 1}"
            if direction == "out" or capture:
                text += sa_block(alg, sa, "out", 0x1001 + i, i, natt=natt)
                text += f'\n[[eroute]]\nname = "e{i + 1}"\nsrc = "10.0.1.0/24"\ndst = "{net}"\naction = "protect"\nsa = "{sa}"\n'
            else:
                text += sa_block(alg, sa, "in", 0x1001 + i, i, eroute=f"e{i + 1}", natt=natt)
                text += f'\n[[eroute]]\nname = "e{i + 1}"\nsrc = "{net}"\ndst = "10.0.1.0/24"\naction = "protect"\nsa = "ret"\n'
        if direction == "in" and not capture:
            text += sa_block(alg, "ret", "out", 0x9999, 9)
    Path(path).write_text(text)
    return path


def esp_pcap(alg, size, queue, nsas, natt=False):
    """ESP frames for the inbound runs, made by espgw itself from the cleartext capture."""
    sa = queue + 1 if nsas == 2 else 1
    p = OUT / f"esp-{alg}-{size}-q{queue}-sa{sa}{'-natt' if natt else ''}.pcap"
    if p.exists():
        return p
    cfg = gateway_config(OUT / "capture.toml", alg=alg, direction="out", workers=1, nsas=nsas,
                         rx_pcaps=[clear_pcap(size, queue)], capture=p, natt=natt)
    r = subprocess.run([str(ESPGW), "--config", str(cfg), "--stop-when-idle", "300"], capture_output=True, text=True)
    if r.returncode != 0 or not read_pcap_lengths(p):
        sys.exit(f"capturing ESP failed:\n{r.stdout}\n{r.stderr}")
    return p


# ---- measurements ---------------------------------------------------------------

def cpu_hz():
    m = re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())
    return float(m.group(1)) * 1e6 if m else 0.0


def run_espgw(cfg, seconds):
    rep = OUT / "report.json"
    if rep.exists():
        rep.unlink()
    r = subprocess.run([str(ESPGW), "--config", str(cfg), "--duration", str(seconds), "--report-json", str(rep)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"espgw failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    rep = json.loads(rep.read_text())
    tx = max(p["tx_packets"] for p in rep["ports"])
    txb = max(p["tx_bytes"] for p in rep["ports"])
    drops = sum(rep["drops"].values())
    return {"pps": tx / rep["elapsed"], "bps": txb / rep["elapsed"], "drops": drops, "rx": sum(w["rx_packets"] for w in rep["workers"])}


def run_testpmd(pcap, seconds):
    """Packets per second of testpmd io-forward, one core, pcap replay -> null."""
    cmd = ["dpdk-testpmd", "--no-pci", "-l", "0,1", *eal_mem(), "--log-level", "*:error",
           "--vdev", f"net_pcap0,rx_pcap={pcap},infinite_rx=1", "--vdev", "net_null0,no-rx=1", "--",
           "--forward-mode=io", "--stats-period", "1", "--no-flush-rx", "--total-num-mbufs=16384"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    time.sleep(seconds + 2.5)
    os.killpg(p.pid, signal.SIGINT)
    out = p.communicate(timeout=30)[0]
    pps = [int(x) for x in re.findall(r"Rx-pps:\s+(\d+)", out) if int(x) > 0]
    if not pps:
        sys.exit(f"testpmd gave no rate:\n{out[-2000:]}")
    return statistics.median(pps[1:] if len(pps) > 2 else pps)


SECGW = OUT / "secgw" / "build" / "ipsec-secgw"
# ipsec-secgw's names for our algorithms: the SA line's crypto part.
SECGW_ALGS = {
    "aes128-gcm16": lambda k: f"aead_algo aes-128-gcm aead_key {k}",
    "aes256-gcm16": lambda k: f"aead_algo aes-256-gcm aead_key {k}",
    "chacha20-poly1305": lambda k: f"aead_algo chacha20-poly1305 aead_key {k}",
    "aes128-cbc-hmac-sha1-96": lambda k: f"cipher_algo aes-128-cbc cipher_key {k} auth_algo sha1-hmac "
                                         f"auth_key {':'.join(f'{b:02x}' for b in range(20))}",
}


def secgw_config(path, alg, direction, bypass=False):
    """ipsec-secgw doing what espgw does in gateway_config(): port 0 private
    (protected in secgw's words), port 1 public (unprotected); the same SPI,
    keys and tunnel ends, so each decrypts the other's ESP; cpu-crypto with
    intel-ipsec-mb (crypto_aesni_mb), as DPDK recommends for software crypto."""
    hexkey = lambda n: ":".join(f"{b:02x}" for b in bytes.fromhex(key(alg, n)[2:]))
    crypto = SECGW_ALGS[alg]
    lines = []
    if bypass:
        lines.append("sp ipv4 out esp bypass pri 1 dst 10.0.2.0/24 sport 0:65535 dport 0:65535")
        lines.append("rt ipv4 dst 10.0.2.0/24 port 1")
    else:
        lines.append("sp ipv4 out esp protect 4097 pri 1 dst 10.0.2.0/24 sport 0:65535 dport 0:65535")
        lines.append(f"sa out 4097 {crypto(hexkey(0))} mode ipv4-tunnel src 192.0.2.1 dst 198.51.100.1 type cpu-crypto")
        lines.append("rt ipv4 dst 198.51.100.0/24 port 1")
    # Inbound (secgw wants an inbound SA and policy in every config).
    lines.append("sp ipv4 in esp protect 4097 pri 1 dst 10.0.2.0/24 sport 0:65535 dport 0:65535")
    lines.append(f"sa in 4097 {crypto(hexkey(0))} mode ipv4-tunnel src 192.0.2.1 dst 198.51.100.1 type cpu-crypto")
    lines.append("rt ipv4 dst 10.0.0.0/8 port 0")
    lines.append("neigh port 0 02:00:00:00:00:01")
    lines.append("neigh port 1 02:00:00:00:0b:01")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def run_secgw(alg, direction, pcap, seconds, bypass=False):
    """Packets per second ipsec-secgw sends, one worker (lcore 1), the capture
    replayed into the port the traffic enters, net_null where it leaves."""
    cfg = secgw_config(OUT / "secgw.cfg", alg, direction, bypass)
    pcap_dev = f"net_pcap0,rx_pcap={pcap},infinite_rx=1"
    # Port 0 = private, port 1 = public: vdevs are numbered in command-line order.
    devs = [pcap_dev, "net_null0,no-rx=1"] if direction == "out" else ["net_null0,no-rx=1", pcap_dev]
    cmd = [str(SECGW), "-l", "1", "--no-pci", *eal_mem(), "--log-level", "*:error",
           "--vdev", devs[0], "--vdev", devs[1], "--vdev", "crypto_aesni_mb", "--",
           "-p", "0x3", "-P", "-u", "0x2", "--config", "(0,0,1),(1,0,1)", "-f", str(cfg), "-l", "-t", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    time.sleep(seconds + 3.0)
    os.killpg(p.pid, signal.SIGINT)
    out = p.communicate(timeout=30)[0]
    sent = [int(x) for x in re.findall(r"Total packets sent:\s+(\d+)", out)]
    rates = [b - a for a, b in zip(sent, sent[1:]) if b > a]
    if len(rates) < 2:
        sys.exit(f"ipsec-secgw gave no rate:\n{out[-2000:]}")
    # The stats screen prints every second; drop the first (start-up) interval.
    return statistics.median(rates[1:])


def crypto_len(alg, frame):
    """Ciphertext bytes ESP processes for a frame of `frame` bytes (tunnel mode)."""
    pad_align = ALGS[alg][2]
    inner = frame - 18
    body = inner + 2
    return body + (-body) % pad_align


def run_crypto_perf(alg, op, lengths, seconds):
    """ns per op of intel-ipsec-mb via DPDK's crypto_aesni_mb, per buffer length."""
    args = list(ALGS[alg][0])
    if "aead" in args:
        args += ["--aead-op", "encrypt" if op == "seal" else "decrypt"]
    else:
        # Opening (hash, then decrypt): crypto-perf only runs verify/decrypt
        # chains against a test-vector file, so hash-then-encrypt of the same
        # lengths stands in (the same HMAC; multi-buffer CBC costs the same
        # either way).
        args += ["--cipher-op", "encrypt", "--auth-op", "generate"]
        if op == "open":
            args[args.index("--optype") + 1] = "auth-then-cipher"
    total = max(200000, int(2_000_000 * seconds))
    cmd = ["dpdk-test-crypto-perf", "--no-pci", "-l", "0,1", *eal_mem(), "--vdev", "crypto_aesni_mb", "--log-level", "*:error",
           "--", "--ptest", "throughput", "--devtype", "crypto_aesni_mb", *args,
           "--buffer-sz", ",".join(str(x) for x in lengths), "--burst-sz", "32", "--total-ops", str(total), "--silent"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    res = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) == 10 and f[0].isdigit():
            res[int(f[1])] = 1000.0 / float(f[7])  # MOps -> ns/op
    if len(res) != len(set(lengths)):
        sys.exit(f"crypto-perf failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return res


def run_crypto_loop(alg, backend, frame, op, seconds):
    r = subprocess.run([str(CRYPTO_LOOP), alg, backend, str(frame), op, str(seconds)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)["ns_per_op"]


def weighted(size, f):
    xs = sizes_of(size)
    return sum(f(x) for x in xs) / len(xs)


def mean_frame(size):
    xs = sizes_of(size)
    return sum(xs) / len(xs)


def med(xs):
    return statistics.median(xs)


def spread(xs):
    m = med(xs)
    return 100.0 * (max(xs) - min(xs)) / m if m else 0.0


PIPELINE_LOOP = ROOT / "target" / "release" / "examples" / "pipeline_loop"


def callgrind_ir(args):
    out = OUT / "callgrind.out"
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(PIPELINE_LOOP), *args],
                       capture_output=True, text=True)
    m = re.search(r"refs:\s+([\d,]+)", r.stderr)
    if r.returncode != 0 or not m:
        sys.exit(f"callgrind failed:\n{r.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def memif_run(seconds, frame=64):
    """Two processes, as users run it on real boxes: dpdk-testpmd (txonly) as
    the generator over net_memif into espgw, which encrypts (AES-128-GCM) into
    a net_null sink. On a 2-vCPU VM both busy-poll on the same two cores, so
    this is functional, not the throughput reference."""
    sock = OUT / "memif.sock"
    if sock.exists():
        sock.unlink()
    cfg = OUT / "memif.toml"
    cfg.write_text(f"""
[eal]
args = {json.dumps(eal_mem(shared=True) + ["--log-level", "*:error", "--no-telemetry"])}
[mempool]
mbufs = 16383
[workers]
cores = [1]
[[port]]
name = "private"
device = "net_memif0,role=server,socket={sock}"
role = "cleartext"
addresses = ["198.18.0.254"]
[[port]]
name = "public"
device = "net_null0,no-rx=1"
role = "protected"
peer_mac = "02:00:00:00:0b:01"
{sa_block("aes128-gcm16", "out", "out", 0x1001, 0)}
[[eroute]]
name = "gen"
src = "198.18.0.0/16"
dst = "198.18.0.0/16"
action = "protect"
sa = "out"
[[route]]
prefix = "0.0.0.0/0"
port = "public"
via = "198.51.100.254"
""")
    rep = OUT / "memif-report.json"
    gw = subprocess.Popen([str(ESPGW), "--config", str(cfg), "--duration", str(seconds + 4), "--report-json", str(rep)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    # testpmd forwards on core 0 (its main lcore is 1), espgw's worker is on core 1.
    gen = subprocess.run(["timeout", "-s", "INT", str(seconds + 2), "dpdk-testpmd", "--no-pci", "-l", "0,1",
                          "--main-lcore", "1",
                          *eal_mem(shared=True), f"--vdev=net_memif0,role=client,socket={sock}", "--log-level", "*:error",
                          "--", "--total-num-mbufs=16384", "--forward-mode=txonly", f"--txpkts={frame - 4}",
                          "--stats-period", "1", "-a"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    out = gw.communicate(timeout=60)[0]
    if gw.returncode != 0 or not rep.exists():
        log(f"memif run failed:\n{out[-1500:]}")
        return None
    r = json.loads(rep.read_text())
    gen_pps = [int(x) for x in re.findall(r"Tx-pps:\s+(\d+)", gen.stdout) if int(x) > 0]
    return {"espgw_mpps": r["events"]["encrypted"] / r["elapsed"] / 1e6,
            "testpmd_tx_mpps": statistics.median(gen_pps) / 1e6 if gen_pps else 0.0,
            "drops": sum(r["drops"].values())}


def profile():
    """Instructions per packet (callgrind counts are repeatable where times
    are not): the whole loop of `pipeline_loop` (the gateway's pipeline over
    mbufs, plus the loop's own mbuf handling; `perf/instructions.py` splits
    the two), run for two packet counts; the difference divided by the extra
    packets removes the setup."""
    rows = []
    for name, mode, alg in [("bypass (pass eroute)", "bypass", "aes128-gcm16"),
                            ("AES-128-GCM outbound", "out", "aes128-gcm16"),
                            ("AES-128-GCM inbound", "in", "aes128-gcm16"),
                            ("AES-128-CBC+HMAC-SHA1 outbound", "out", "aes128-cbc-hmac-sha1-96"),
                            ("AES-128-CBC+HMAC-SHA1 inbound", "in", "aes128-cbc-hmac-sha1-96")]:
        lo = callgrind_ir([mode, alg, "64", "3200"])
        hi = callgrind_ir([mode, alg, "64", "35200"])
        rows.append((name, (hi - lo) / 32000))
        log(f"profile: {name}: {rows[-1][1]:.0f} instructions per packet")
    return rows


# ---- main -----------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="1 repeat of 1 s per point")
    ap.add_argument("--algs", default=",".join(ALGS))
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--one-worker", action="store_true", help="skip the two-worker points")
    ap.add_argument("--profile", action="store_true",
                    help="also count instructions per packet under callgrind (bypass, GCM, CBC at 64 B)")
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.seconds = 1, 1.0
    algs, sizes = a.algs.split(","), a.sizes.split(",")
    OUT.mkdir(parents=True, exist_ok=True)
    write_pcap(OUT / "empty.pcap", [])
    if not a.no_build:
        log("building release binaries")
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "control", "--bin", "espgw"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "espgw-dpdk", "--example", "crypto_loop",
                        "--example", "pipeline_loop"], cwd=ROOT, check=True)
        log("building ipsec-secgw from dpdk-doc (perf/build_secgw.sh)")
        subprocess.run([str(ROOT / "perf" / "build_secgw.sh")], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    setup_hugepages()
    hz = cpu_hz()
    with_secgw = SECGW.exists()
    if not with_secgw:
        log("no ipsec-secgw build: the side-by-side column stays empty (run perf/build_secgw.sh)")

    log("captures: cleartext, and ESP made by espgw for the inbound runs")
    for s in sizes:
        for q in (0, 1):
            clear_pcap(s, q)
    for alg in algs:
        for s in sizes:
            esp_pcap(alg, s, 0, 1)
            if alg == "aes128-gcm16":
                esp_pcap(alg, s, 1, 1)
                esp_pcap(alg, s, 1, 2)

    # Points: (kind, alg, size, direction, workers, nsas)
    points = [("ipsec", alg, s, d, 1, 1) for alg in algs for s in sizes for d in ("out", "in")]
    points += [("ipsec", "aes128-gcm16", s, d, 2, n) for s in sizes for d in ("out", "in") for n in (1, 2)] \
        if "aes128-gcm16" in algs and not a.one_worker else []
    points += [("bypass", "-", "64", "out", 1, 0)] if "64" in sizes else []
    # NAT-T (ESP in UDP 4500) next to plain GCM, same run.
    points += [("natt", "aes128-gcm16", s, d, 1, 1) for s in sizes if s in ("64", "1420") for d in ("out", "in")] \
        if "aes128-gcm16" in algs else []
    results = {p: [] for p in points}
    secgw = {p: [] for p in points}  # ipsec-secgw on the same point, run right after espgw
    io = {}       # pcap -> [pps]
    crypto = {}   # (alg, op, backend, frame) -> [ns]

    n_total = a.repeats * len(points)
    done = 0
    t0 = time.time()
    for rep in range(a.repeats):
        log(f"repeat {rep + 1}/{a.repeats}: bounds")
        for alg in algs:
            for op in ("seal", "open"):
                frames = sorted({x for s in sizes for x in sizes_of(s)})
                lens = [crypto_len(alg, f) for f in frames]
                res = run_crypto_perf(alg, op, sorted(set(lens)), a.seconds)
                for f, L in zip(frames, lens):
                    crypto.setdefault((alg, op, "aesni_mb", f), []).append(res[L])
                for be in ALGS[alg][1]:
                    for f in frames:
                        crypto.setdefault((alg, op, be, f), []).append(run_crypto_loop(alg, be, f, op, min(a.seconds, 0.5)))
        pcaps = {clear_pcap(s, 0) for s in sizes} | {esp_pcap(alg, s, 0, 1) for alg in algs for s in sizes}
        for p in sorted(pcaps):
            io.setdefault(p, []).append(run_testpmd(p, a.seconds))
        log(f"repeat {rep + 1}/{a.repeats}: I/O bounds done ({len(pcaps)} captures)")
        for pt in points:
            kind, alg, s, d, w, n = pt
            natt = kind == "natt"
            if d == "out":
                rx = [clear_pcap(s, q) for q in range(w)]
            else:
                rx = [esp_pcap(alg, s, q, n, natt) for q in range(w)]
            cfg = gateway_config(OUT / "run.toml", alg=alg if kind != "bypass" else "aes128-gcm16", direction=d,
                                 workers=w, nsas=n, rx_pcaps=rx, bypass=(kind == "bypass"), natt=natt)
            r = run_espgw(cfg, a.seconds)
            results[pt].append(r)
            side = ""
            if with_secgw and w == 1 and not natt:
                sg = run_secgw("aes128-gcm16" if kind == "bypass" else alg, d, rx[0], a.seconds, bypass=(kind == "bypass"))
                secgw[pt].append(sg)
                side = f", ipsec-secgw {sg / 1e6:.2f} Mpps ({r['pps'] / sg:.2f}x)"
            done += 1
            eta = (time.time() - t0) / done * (n_total - done)
            dropped = "" if r["drops"] == 0 else " ({} drops)".format(r["drops"])
            log(f"  [{done}/{n_total}] {kind} {alg} {s} {d} {w}w {n}sa: {r['pps'] / 1e6:.2f} Mpps{dropped}{side} — eta {eta:.0f} s")

    profile_rows = profile() if a.profile else []
    memif = memif_run(a.seconds) if "64" in sizes and "aes128-gcm16" in algs else None

    # ---- table ----
    rows = []
    for pt in points:
        kind, alg, s, d, w, n = pt
        pps = [r["pps"] for r in results[pt]]
        mpps = med(pps) / 1e6
        gbps = mpps * mean_frame(s) * 8 / 1000
        cyc = hz * w / med(pps) if pps else 0
        # espgw / ipsec-secgw: the median of the per-repeat ratios (each pair
        # ran back to back, so both saw the same machine regime).
        ratios = [r["pps"] / sg for r, sg in zip(results[pt], secgw[pt])]
        side = dict(secgw_mpps=med(secgw[pt]) / 1e6 if secgw[pt] else 0.0, vs_secgw=med(ratios) if ratios else 0.0)
        if kind == "bypass":
            t_io = 1 / med(io[clear_pcap(s, 0)])
            rows.append(dict(kind="bypass", alg="-", size=s, dir="out", workers=w, sas=0, mpps=mpps, spread=spread(pps),
                             gbps=gbps, cycles=cyc, io_mpps=1e-6 / t_io, crypto="-", crypto_mpps=0, bound_mpps=1e-6 / t_io,
                             pct=100 * mpps / (1e-6 / t_io), **side))
            continue
        op = "seal" if d == "out" else "open"
        pcap = clear_pcap(s, 0) if d == "out" else esp_pcap(alg, s, 0, 1, kind == "natt")
        t_io = 1 / med(io.get(pcap) or io[esp_pcap(alg, s, 0, 1)])
        best_be, best = None, None
        for be in ["aesni_mb"] + ALGS[alg][1]:
            t = weighted(s, lambda f: med(crypto[(alg, op, be, f)])) * 1e-9
            if best is None or t < best:
                best_be, best = be, t
        bound = 1 / (t_io + best)
        rows.append(dict(kind=kind, alg=alg, size=s, dir=d, workers=w, sas=n, mpps=mpps, spread=spread(pps), gbps=gbps,
                         cycles=cyc, io_mpps=1e-6 / t_io, crypto=best_be, crypto_mpps=1e-6 / best,
                         bound_mpps=bound / 1e6 * w, pct=100 * mpps / (bound / 1e6 * w), **side))

    csv_path = OUT / "results.csv"
    with open(csv_path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        wr.writeheader()
        wr.writerows(rows)
    md = ["| kind | algorithm | frame | dir | workers | SAs | Mpps | spread | Gbit/s | cycles/pkt | I/O bound Mpps | best crypto | crypto Mpps | bound Mpps | % of bound | ipsec-secgw Mpps | espgw / secgw |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['kind']} | {r['alg']} | {r['size']} | {r['dir']} | {r['workers']} | {r['sas']} | {r['mpps']:.2f} | "
                  f"±{r['spread'] / 2:.0f} % | {r['gbps']:.2f} | {r['cycles']:.0f} | {r['io_mpps']:.2f} | {r['crypto']} | "
                  f"{r['crypto_mpps']:.2f} | {r['bound_mpps']:.2f} | {r['pct']:.0f} % | "
                  + (f"{r['secgw_mpps']:.2f} | {r['vs_secgw']:.2f} |" if r["secgw_mpps"] else "- | - |"))
    # Crypto table: every backend per size.
    md += ["", "| algorithm | op | frame | " + " | ".join(["aesni_mb (crypto-perf) Mops", "ring Mops", "rustcrypto Mops", "ipsec-mb (ours) Mops"]) + " |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for alg in algs:
        for op in ("seal", "open"):
            for f in sorted({x for s in sizes for x in sizes_of(s)}):
                cells = []
                for be in ("aesni_mb", "ring", "rustcrypto", "ipsec-mb"):
                    k = (alg, op, be, f)
                    cells.append(f"{1000 / med(crypto[k]):.2f}" if k in crypto else "-")
                md.append(f"| {alg} | {op} | {f} | " + " | ".join(cells) + " |")
    # Two workers: one SA vs two SAs.
    pairs = []
    for s in sizes:
        for d in ("out", "in"):
            one = [r for r in rows if r["workers"] == 2 and r["sas"] == 1 and r["size"] == s and r["dir"] == d]
            two = [r for r in rows if r["workers"] == 2 and r["sas"] == 2 and r["size"] == s and r["dir"] == d]
            if one and two:
                pairs.append(f"| {s} | {d} | {one[0]['mpps']:.2f} | {two[0]['mpps']:.2f} | {one[0]['mpps'] / two[0]['mpps']:.2f} |")
    if pairs:
        md += ["", "| frame | dir | 2 workers, 1 SA Mpps | 2 workers, 2 SAs Mpps | ratio |", "|---|---|---:|---:|---:|"] + pairs
    if memif:
        md += ["", "Two processes over net_memif (dpdk-testpmd txonly -> espgw, AES-128-GCM, 64 B, into net_null; "
                   "both busy-poll on the same 2 vCPUs):",
               "", f"espgw {memif['espgw_mpps']:.2f} Mpps encrypted; testpmd offered {memif['testpmd_tx_mpps']:.2f} Mpps; "
                   f"drops {memif['drops']}."]
    if profile_rows:
        md += ["", "| path (64 B frames, pipeline on plain buffers) | instructions per packet |", "|---|---:|"]
        md += [f"| {name} | {ir:.0f} |" for name, ir in profile_rows]
    md_path = OUT / "results.md"
    header = (f"Run {time.strftime('%Y-%m-%d %H:%M')}, {a.repeats} repeat(s) of {a.seconds} s per point, medians; "
              f"CPU {hz / 1e9:.2f} GHz; hugepages: {'yes' if HUGE else 'no'}.\n\n")
    md_path.write_text(header + "\n".join(md) + "\n")
    print()
    print(header + "\n".join(md))
    log(f"wrote {md_path} and {csv_path}")


if __name__ == "__main__":
    main()
