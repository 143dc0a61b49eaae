#!/usr/bin/env bash
# The espgw demo: real DPDK over virtual devices (net_pcap), no NIC, no hugepages.
# Makes a capture of cleartext traffic, runs the gateway over it and shows
# what came out of each port.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
DEMO=target/demo
mkdir -p "$DEMO"
rm -f "$DEMO"/*.pcap

echo "== 1. Cleartext traffic for the private side"
"$BIN/espgw-pcap" gen "$DEMO/clear-in.pcap" --count 300 --seed 42
"$BIN/espgw-pcap" show "$DEMO/clear-in.pcap" --max 5
"$BIN/espgw-pcap" gen "$DEMO/empty.pcap" --count 0 >/dev/null

echo
echo "== 2. The gateway (configs/demo.toml) on DPDK: net_pcap in, net_pcap out"
"$BIN/espgw" --config configs/demo.toml --stop-when-idle 500

echo
echo "== 3. What left the protected port"
"$BIN/espgw-pcap" show "$DEMO/protected-out.pcap" --max 5
if cmp -s <("$BIN/espgw-pcap" show "$DEMO/clear-in.pcap" --max 100000 | sed '$d') \
          <("$BIN/espgw-pcap" show "$DEMO/protected-out.pcap" --max 100000 | sed '$d'); then
  echo "   every packet came out, in order and unchanged"
fi
