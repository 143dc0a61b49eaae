# espgw — the README's commands.
#   make demo   install what is missing, build, run the gateway on DPDK virtual devices
#   make test   every test: unit, integration, end-to-end (real DPDK)
#   make perf   the throughput harness (perf/harness.py; about 15 minutes)
.PHONY: all deps test-deps build demo test fmt clippy bench perf man deb fuzz fuzz-deps fuzz-ci fuzz-coverage miri loom ci

CARGO ?= cargo

all: build

deps:
	./scripts/deps.sh

test-deps:
	./scripts/deps.sh test

build: deps
	$(CARGO) build --release --workspace

demo: build
	./scripts/demo.sh

test: test-deps
	$(CARGO) test --workspace --all-targets
	# The core crate needs no DPDK: its tests pass with pkg-config pointing nowhere.
	PKG_CONFIG_PATH=/nonexistent PKG_CONFIG_LIBDIR=/nonexistent $(CARGO) test -p espgw-core --lib -q
	# Instructions per packet (callgrind) must not grow past their guards.
	$(CARGO) build --release -q -p espgw-dpdk --example pipeline_loop
	python3 perf/instructions.py --check

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets --features espgw-core/lab,control/fuzzing -- -D warnings

perf:
	./scripts/deps.sh perf
	python3 perf/harness.py --profile

# Manual pages and shell completions, generated from the CLIs (clap_mangen,
# clap_complete) so they cannot drift: target/man/, target/completions/.
man: build
	mkdir -p target/man target/completions
	target/release/espgw --man > target/man/espgw.8
	target/release/espgw --man-config > target/man/espgw.toml.5
	target/release/espgwctl man > target/man/espgwctl.8
	for sh in bash zsh fish; do target/release/espgwctl completion $$sh > target/completions/espgwctl.$$sh; done
	@echo "man -l target/man/espgw.8; man -l target/man/espgwctl.8; man -l target/man/espgw.toml.5"

# The Debian package (scripts/build_deb.sh): binaries, systemd unit, conffiles,
# man pages, completions. Install with: apt install ./target/deb/espgw_*.deb
deb: build
	./scripts/build_deb.sh

# Coverage-guided fuzzing (cargo-fuzz, nightly): every target of fuzz/ for
# FUZZ_SECONDS each, invariants checked on every output; prints executions
# and coverage per target (fuzz/run.sh). `make fuzz-ci` is CI's short run.
FUZZ_SECONDS ?= 300
FUZZ_CI_SECONDS ?= 30
fuzz-deps:
	./scripts/rust_tools.sh fuzz
fuzz: fuzz-deps
	fuzz/run.sh $(FUZZ_SECONDS)
fuzz-ci: fuzz-deps
	fuzz/run.sh $(FUZZ_CI_SECONDS)
# Which lines the corpus reaches (llvm-cov over corpus + seeds): fuzz/coverage/.
fuzz-coverage:
	./scripts/rust_tools.sh coverage
	fuzz/coverage.sh

# Miri on the lock-free pieces' unit tests (replay window, sequence
# reservation, counters, snapshot publishing). GCM runs on RustCrypto under
# Miri (ring's assembly cannot be interpreted).
MIRI_TESTS = esp::seq esp::replay stats:: policy::tests
miri:
	./scripts/rust_tools.sh miri
	cargo +nightly miri test -p espgw-core --lib -- $(MIRI_TESTS)

# Loom models of the sequence reservation and the replay window update
# (core/tests/loom.rs): every interleaving of their threads.
loom:
	RUSTFLAGS="--cfg espgw_loom" $(CARGO) test --release -p espgw-core --test loom --target-dir target/loom

# What CI runs: every test, then the short fuzz runs, Miri and loom.
ci: test fuzz-ci miri loom
