#!/usr/bin/env bash
# Build the espgw .deb: both binaries, the systemd unit, /etc/espgw/espgw.toml
# and the hugepage sysctl as conffiles, man pages and shell completions
# generated from the CLIs, docs. `make deb` runs it on the release build.
#
#   scripts/build_deb.sh [--bin-dir target/release] [--out target/deb] [--fast]
# (--fast: gzip -1 instead of xz, for tests on large debug binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
out=target/deb
compress=(-Zxz)
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --fast) compress=(-Zgzip -z1); shift ;;
    *) echo "build_deb: unknown argument $1" >&2; exit 2 ;;
  esac
done
for b in espgw espgwctl; do
  [ -x "$bin/$b" ] || { echo "build_deb: $bin/$b missing (cargo build --release)" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$bin/espgw" "$stage/usr/bin/espgw"
install -D -m 0755 "$bin/espgwctl" "$stage/usr/bin/espgwctl"
install -D -m 0644 packaging/espgw.service "$stage/lib/systemd/system/espgw.service"
install -D -m 0640 packaging/espgw.toml "$stage/etc/espgw/espgw.toml"
install -D -m 0644 packaging/espgw-hugepages.conf "$stage/etc/sysctl.d/espgw-hugepages.conf"
mkdir -p "$stage/usr/share/man/man8"
"$bin/espgw" --man | gzip -9n > "$stage/usr/share/man/man8/espgw.8.gz"
"$bin/espgwctl" man | gzip -9n > "$stage/usr/share/man/man8/espgwctl.8.gz"
mkdir -p "$stage/usr/share/man/man5"
"$bin/espgw" --man-config | gzip -9n > "$stage/usr/share/man/man5/espgw.toml.5.gz"
install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
  "$stage/usr/share/fish/vendor_completions.d"
"$bin/espgwctl" completion bash > "$stage/usr/share/bash-completion/completions/espgwctl"
"$bin/espgwctl" completion zsh > "$stage/usr/share/zsh/vendor-completions/_espgwctl"
"$bin/espgwctl" completion fish > "$stage/usr/share/fish/vendor_completions.d/espgwctl.fish"
install -D -m 0644 README.md "$stage/usr/share/doc/espgw/README.md"
install -D -m 0644 docs/openapi.json "$stage/usr/share/doc/espgw/openapi.json"
install -D -m 0644 configs/grafana-espgw.json "$stage/usr/share/doc/espgw/grafana-espgw.json"
install -D -m 0644 configs/espgw-alerts.yml "$stage/usr/share/doc/espgw/espgw-alerts.yml"

mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CTRL
Package: espgw
Version: $version
Architecture: $arch
Maintainer: espgw developers <espgw@localhost>
Depends: dpdk (>= 22.11), libipsec-mb1
Recommends: iproute2
Section: net
Priority: optional
Description: IPsec ESP security gateway on DPDK
 Poll-mode workers encrypt and decrypt ESP (tunnel and transport, AES-GCM,
 AES-CBC+HMAC-SHA1) between DPDK ports, with eroutes, SAs, path MTU and
 fragmentation after encryption; an HTTP API on a Unix socket, espgwctl,
 Prometheus metrics and an event stream.
CTRL
printf '/etc/espgw/espgw.toml\n/etc/sysctl.d/espgw-hugepages.conf\n' > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
POST
chmod 0755 "$stage/DEBIAN/postinst"
mkdir -p "$out"
deb="$out/espgw_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "$deb" >/dev/null
echo "build_deb: $deb"
