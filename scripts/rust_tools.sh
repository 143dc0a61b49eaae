#!/usr/bin/env bash
# The nightly Rust tools of the fuzzing and checking targets, installed when
# missing. Checked by name (rustup's installed-component list, cargo's
# installed-crate list), never by looking for a file.
#
#   scripts/rust_tools.sh fuzz       cargo-fuzz               (make fuzz)
#   scripts/rust_tools.sh coverage   cargo-fuzz + llvm-tools  (make fuzz-coverage)
#   scripts/rust_tools.sh miri       miri + rust-src          (make miri)
#
# ESPGW_DEPS_DRY_RUN=1 prints what would be installed and installs nothing.
set -euo pipefail
TOOLCHAIN=nightly
case "${1:-}" in
  fuzz) components=(); crates=(cargo-fuzz) ;;
  coverage) components=(llvm-tools); crates=(cargo-fuzz) ;;
  miri) components=(miri rust-src); crates=() ;;
  *) echo "rust_tools: unknown group '${1:-}' (fuzz, coverage, miri)" >&2; exit 2 ;;
esac
dry="${ESPGW_DEPS_DRY_RUN:-0}"
run() {
  if [ "$dry" = 1 ]; then echo "rust_tools: would run: $*"; else echo "rust_tools: $*"; "$@"; fi
}

if ! rustup toolchain list | grep -q "^$TOOLCHAIN"; then
  run rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
have_components="$(rustup component list --toolchain "$TOOLCHAIN" --installed 2>/dev/null || true)"
for c in "${components[@]}"; do
  # Installed components are listed as NAME or NAME-<target triple>.
  grep -qE "^$c(-x86_64|-aarch64|$)" <<<"$have_components" || run rustup component add --toolchain "$TOOLCHAIN" "$c"
done
have_crates="$(cargo "+$TOOLCHAIN" install --list 2>/dev/null || true)"
for k in "${crates[@]}"; do
  grep -q "^$k v" <<<"$have_crates" || run cargo "+$TOOLCHAIN" install "$k" --locked
done
if [ "$1" = miri ] && [ "$dry" != 1 ]; then
  # Builds Miri's standard library once (cached in ~/.cache/miri).
  cargo "+$TOOLCHAIN" miri setup >/dev/null
fi
exit 0
