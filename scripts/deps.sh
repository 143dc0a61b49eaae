#!/usr/bin/env bash
# Install what espgw needs, when missing, on Debian 12 (bookworm).
#
# Every dependency is checked by its Debian package name through dpkg-query,
# never by looking for a file: a file glob once matched the preinstalled
# libclang-cpp.so.14 and so never installed libclang-dev, which bindgen needs.
# tests/deps_script.rs runs this script against a simulated machine that lacks
# each package in turn (stub dpkg-query/apt-get on PATH), so that cannot recur.
#
#   scripts/deps.sh            build + demo dependencies
#   scripts/deps.sh test       ... plus what the tests need (oracles, peers, tools)
#   scripts/deps.sh perf       ... plus what `make perf` needs
#   scripts/deps.sh --list [GROUP]   print the package list of a group and exit
#
# ESPGW_DEPS_DRY_RUN=1 prints what would be installed and installs nothing.
set -euo pipefail

# One list per purpose. Debian package names only.
BUILD_PKGS=(
  pkg-config      # finds DPDK for dpdk-sys
  dpdk            # the EAL, its PMDs (net_pcap, net_ring, net_memif, ...) and dpdk-testpmd
  dpdk-dev        # dpdk-devbind, dpdk-telemetry.py
  libdpdk-dev     # headers and pkg-config file
  libipsec-mb-dev # intel-ipsec-mb, the multi-buffer crypto backend
  libclang-dev    # bindgen (libclang-cpp alone is not enough)
  gcc             # the C shims
  make
)
TEST_PKGS=(
  python3 python3-pip # the scapy / cryptography oracles
  tcpdump
  iproute2        # network namespaces and veths for host tests
  ethtool         # veth checksum offload off (a real NIC never hands over partial checksums)
  strongswan-charon strongswan-swanctl # a real IKEv2 peer (charon) for the IKE interop test
  libcharon-extra-plugins libstrongswan-standard-plugins # kernel-libipsec, openssl (x25519), gcm
  prometheus      # a real Prometheus scrapes /metrics; promtool tests the alert rules
  valgrind        # callgrind instruction counts: the per-packet regression guard
  man-db          # man -l renders the generated manual pages
  systemd         # systemd-analyze verifies the packaged unit
)
PERF_PKGS=(
  linux-perf      # cpu-clock profiles (perf record)
  dpdk-doc        # ipsec-secgw example sources, built side by side
  libpcap-dev
)
# Python modules for the test oracles (PyPI), checked by importing them.
PY_MODULES=(scapy cryptography)

group="${1:-build}"
if [ "$group" = --list ]; then
  case "${2:-build}" in
    build) printf '%s\n' "${BUILD_PKGS[@]}" ;;
    test) printf '%s\n' "${TEST_PKGS[@]}" ;;
    perf) printf '%s\n' "${PERF_PKGS[@]}" ;;
    python) printf '%s\n' "${PY_MODULES[@]}" ;;
    *) echo "deps: unknown group ${2}" >&2; exit 2 ;;
  esac
  exit 0
fi

wanted=("${BUILD_PKGS[@]}")
case "$group" in
  build) ;;
  test) wanted+=("${TEST_PKGS[@]}") ;;
  perf) wanted+=("${TEST_PKGS[@]}" "${PERF_PKGS[@]}") ;;
  *) echo "deps: unknown group '$group' (build, test, perf)" >&2; exit 2 ;;
esac

# Installed means dpkg's status says "install ok installed"; a package that
# was removed but left config files ("deinstall ok config-files") is missing.
installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${wanted[@]}"; do
  installed "$p" || missing+=("$p")
done

dry="${ESPGW_DEPS_DRY_RUN:-0}"
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$dry" = 1 ]; then
    echo "deps: would install ${missing[*]}"
  else
    sudo=""
    if [ "$(id -u)" != 0 ]; then
      command -v sudo >/dev/null 2>&1 && sudo="sudo" || { echo "deps: need root to install: ${missing[*]}" >&2; exit 1; }
    fi
    echo "deps: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Prove it: a package the install did not deliver is an error here, not a
    # confusing build failure later.
    for p in "${missing[@]}"; do
      installed "$p" || { echo "deps: $p is still not installed after apt-get" >&2; exit 1; }
    done
  fi
fi

if [ "$group" != build ]; then
  py_missing=()
  for m in "${PY_MODULES[@]}"; do
    python3 -c "import $m" 2>/dev/null || py_missing+=("$m")
  done
  if [ ${#py_missing[@]} -gt 0 ]; then
    if [ "$dry" = 1 ]; then
      echo "deps: would pip install ${py_missing[*]}"
    else
      echo "deps: installing ${py_missing[*]} (test oracles, PyPI)"
      python3 -m pip install --quiet --disable-pip-version-check "${py_missing[@]}" 2>/dev/null \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${py_missing[@]}"
    fi
  fi
fi

[ "$dry" = 1 ] && [ ${#missing[@]} -eq 0 ] && echo "deps: nothing to install"
if [ "$dry" != 1 ]; then
  echo "deps: DPDK $(pkg-config --modversion libdpdk) ready"
fi
