#!/usr/bin/env bash
# Install what espgw needs to build, run its demo and run its tests, when missing.
# Debian 12 (bookworm): DPDK 22.11 and its PMDs, libclang for bindgen,
# pkg-config; scapy (and cryptography) as the independent ESP oracle for tests,
# and Prometheus to scrape /metrics in tests.
set -euo pipefail

need_apt=()
pkg-config --exists 'libdpdk >= 22.11' 2>/dev/null || need_apt+=(dpdk dpdk-dev libdpdk-dev pkg-config)
command -v dpdk-testpmd >/dev/null 2>&1 || need_apt+=(dpdk)
[ -e /usr/include/intel-ipsec-mb.h ] || need_apt+=(libipsec-mb-dev)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
if [ "${ESPGW_DEPS_TEST:-0}" = 1 ]; then
  command -v tcpdump >/dev/null 2>&1 || need_apt+=(tcpdump)
  command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
  command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
  # A real Prometheus server scrapes espgw in the control-plane tests.
  command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo="sudo" || { echo "deps: need root to install: ${need_apt[*]}" >&2; exit 1; }
  fi
  echo "deps: installing ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "${ESPGW_DEPS_TEST:-0}" = 1 ]; then
  if ! python3 -c 'import scapy.layers.ipsec, cryptography' 2>/dev/null; then
    echo "deps: installing scapy and cryptography (test oracles)"
    python3 -m pip install --quiet --disable-pip-version-check scapy cryptography 2>/dev/null \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages scapy cryptography
  fi
fi
echo "deps: DPDK $(pkg-config --modversion libdpdk) ready"
