#!/usr/bin/env bash
# Run the fuzz targets for SECONDS each (default 300) and print, per target,
# executions, speed, coverage (libFuzzer's edge count "cov" and feature count
# "ft") and corpus size. Exits non-zero on a crash or an invariant violation
# (the input is then in fuzz/artifacts/<target>/; add it to
# fuzz/regressions/<target>/ once fixed, where the normal tests replay it).
#
#   fuzz/run.sh [SECONDS]        FUZZ_TARGETS="esp api" limits the targets
#
# No sanitizer (-s none): the fuzzed code is safe Rust (the data path's crate
# forbids unsafe; the control targets never reach the DPDK bindings), and
# ASan made the pipeline target 14x slower for nothing.
set -euo pipefail
secs="${1:-300}"
cd "$(dirname "$0")"
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
echo "fuzz: building the targets (release, coverage instrumentation)"
cargo +nightly fuzz build -O -s none >/dev/null 2>&1 || cargo +nightly fuzz build -O -s none
mkdir -p logs
total=0
printf '%-11s %13s %9s %7s %7s %7s\n' target executions "exec/s" cov ft corpus
for t in $targets; do
  mkdir -p "corpus/$t"
  dict="dict/$t.dict"
  [ -f "$dict" ] || dict=dict/packet.dict
  log="logs/$t.log"
  if ! cargo +nightly fuzz run -O -s none "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$secs" -timeout=20 -print_final_stats=1 -dict="$dict" >"$log" 2>&1; then
    tail -n 30 "$log"
    echo "fuzz: $t FAILED: a crash or an invariant violation (input in fuzz/artifacts/$t/, log in fuzz/$log)" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  line=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$line" | awk '{print $2}')
  ft=$(grep -oE 'ft: [0-9]+' <<<"$line" | awk '{print $2}')
  corpus=$(find "corpus/$t" -type f | wc -l)
  total=$((total + execs))
  printf '%-11s %13s %9s %7s %7s %7s\n' "$t" "$execs" "$((execs / secs))" "$cov" "$ft" "$corpus"
done
echo "fuzz: $total executions in all, 0 crashes, 0 invariant violations"
