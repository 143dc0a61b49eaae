#!/usr/bin/env bash
# Which lines the fuzz corpora reach: builds every target with coverage
# instrumentation (cargo fuzz coverage), replays corpus + seeds, and writes
#   fuzz/coverage/report.txt    per-file line/region coverage of core/ and control/
#   fuzz/coverage/html/         the annotated sources (what was never reached)
# using llvm-cov from the nightly toolchain's llvm-tools component.
set -euo pipefail
cd "$(dirname "$0")"
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
bin_dir="$(rustc +nightly --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"
objects=()
profiles=()
for t in $targets; do
  mkdir -p "corpus/$t"
  echo "coverage: $t ($(find "corpus/$t" "seeds/$t" -type f | wc -l) inputs)"
  cargo +nightly fuzz coverage -s none "$t" "corpus/$t" "seeds/$t" >"logs/coverage-$t.log" 2>&1 \
    || { tail -n 20 "logs/coverage-$t.log"; exit 1; }
  objects+=(-object "target/x86_64-unknown-linux-gnu/coverage/x86_64-unknown-linux-gnu/release/$t")
  profiles+=("coverage/$t/coverage.profdata")
done
"$bin_dir/llvm-profdata" merge -sparse "${profiles[@]}" -o coverage/all.profdata
# Only the project's sources: not the registry, the standard library or the harness.
filter=(--ignore-filename-regex='(/\.cargo/|/rustc/|/fuzz/|/testkit/|/dpdk/)')
"$bin_dir/llvm-cov" report "${objects[@]}" -instr-profile=coverage/all.profdata "${filter[@]}" >coverage/report.txt
"$bin_dir/llvm-cov" show "${objects[@]}" -instr-profile=coverage/all.profdata "${filter[@]}" \
  -format=html -output-dir=coverage/html >/dev/null
sed -n '1,2p;/^-----/d;/^TOTAL/p' coverage/report.txt | tail -n 1
echo "coverage: fuzz/coverage/report.txt (per file), fuzz/coverage/html/index.html (per line)"
