#!/usr/bin/env bash
# The espgw demo: two gateways on real DPDK over virtual devices (net_pcap),
# no NIC, no hugepages. Gateway A encrypts a capture of cleartext traffic; the
# capture of what A sent is the wire; gateway B decrypts it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
DEMO=target/demo
mkdir -p "$DEMO"
rm -f "$DEMO"/*.pcap

echo "== 1. Cleartext traffic on A's private side (10.0.1.0/24 -> 10.0.2.0/24)"
echo "   mixed sizes up to 1514-byte frames, every third with DF, plus one 3000-byte jumbo without DF"
"$BIN/espgw-pcap" gen "$DEMO/clear-in.pcap" --count 300 --seed 42 --big 1
"$BIN/espgw-pcap" show "$DEMO/clear-in.pcap" --max 4
"$BIN/espgw-pcap" gen "$DEMO/empty.pcap" --count 0 >/dev/null

echo
echo "== 2. Gateway A (configs/demo.toml): encrypt with AES-128-GCM, tunnel 192.0.2.1 -> 198.51.100.1"
"$BIN/espgw" --config configs/demo.toml --stop-when-idle 500

echo
echo "== 3. What A sent on the wire (its public port, MTU 1500): ESP, some of it fragmented after encryption"
"$BIN/espgw-pcap" show "$DEMO/a-public-out.pcap" --max 4
echo "   ESP packets larger than 1500 bytes, fragmented after encryption (first pieces):"
"$BIN/espgw-pcap" show "$DEMO/a-public-out.pcap" --max 100000 | grep "offset 0 MF" | head -n 3 || true
echo "   the 3000-byte jumbo, encrypted once, on the wire as:"
"$BIN/espgw-pcap" show "$DEMO/a-public-out.pcap" --max 100000 | tail -n 4 | head -n 3
echo
echo "== 4. What A answered on its private side: ICMP 'fragmentation needed' with the tunnel MTU,"
echo "   for DF packets that no longer fit once encrypted"
"$BIN/espgw-pcap" show "$DEMO/a-private-out.pcap" --max 3

echo
echo "== 5. Gateway B (configs/demo-peer.toml): reassemble, decrypt, check policy, deliver"
"$BIN/espgw" --config configs/demo-peer.toml --stop-when-idle 500

echo
echo "== 6. A's private side in, B's private side out"
"$BIN/espgw-pcap" show "$DEMO/b-private-out.pcap" --max 3
"$BIN/espgw-pcap" compare "$DEMO/clear-in.pcap" "$DEMO/b-private-out.pcap"
echo "   (the ones that did not arrive are the DF packets A refused with ICMP in step 4)"
