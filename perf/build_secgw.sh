#!/usr/bin/env bash
# Build DPDK's own IPsec gateway example, ipsec-secgw, from the sources that
# Debian's dpdk-doc package installs, for side-by-side runs in perf/harness.py.
# Two local edits let it run on virtual devices (net_pcap, net_null):
#   - no RTE_ETH_RX_OFFLOAD_CHECKSUM in the RX port config (vdevs refuse it);
#   - no SCATTER / MULTI_SEGS requests (vdevs refuse them too).
# Nothing of it is committed; the build goes to target/perf/secgw.
set -euo pipefail
cd "$(dirname "$0")/.."
src=/usr/share/dpdk/examples/ipsec-secgw
[ -d "$src" ] || { echo "build_secgw: $src missing: apt-get install dpdk-doc (scripts/deps.sh perf does)" >&2; exit 1; }
out=target/perf/secgw
rm -rf "$out"
mkdir -p "$out"
cp -r "$src"/. "$out"/
cd "$out"
sed -i 's/\.offloads = RTE_ETH_RX_OFFLOAD_CHECKSUM,/.offloads = 0,/' ipsec-secgw.c
sed -i 's/local_port_conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_SCATTER;/\/* vdev: no SCATTER *\//' ipsec-secgw.c
sed -i 's/local_port_conf.txmode.offloads |= RTE_ETH_TX_OFFLOAD_MULTI_SEGS;/\/* vdev: no MULTI_SEGS *\//' ipsec-secgw.c
grep -q "RTE_ETH_RX_OFFLOAD_CHECKSUM," ipsec-secgw.c && { echo "build_secgw: edit did not apply" >&2; exit 1; }
make -s -j2 >/dev/null
echo "build_secgw: $(pwd)/build/ipsec-secgw"
