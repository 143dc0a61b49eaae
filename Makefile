# espgw — the README's commands.
#   make demo   install what is missing, build, run the gateway on DPDK virtual devices
#   make test   every test: unit, integration, end-to-end (real DPDK)
#   make perf   the throughput harness (perf/harness.py; about 15 minutes)
.PHONY: all deps test-deps build demo test fmt clippy bench perf man deb fuzz fuzz-deps

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
	$(CARGO) clippy --workspace --all-targets -- -D warnings

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

# Coverage-guided fuzzing (cargo-fuzz on the nightly toolchain): every
# target for FUZZ_SECONDS each, checking the lab's invariants on every output.
# No sanitizer (-s none): the fuzzed crate forbids unsafe code, and ASan made
# the pipeline target 14x slower (180 vs 2 500 executions/s) for nothing.
FUZZ_SECONDS ?= 300
fuzz-deps:
	@cargo +nightly fuzz --version >/dev/null 2>&1 || cargo +nightly install cargo-fuzz --locked
fuzz: fuzz-deps
	cd fuzz && for t in $$(cargo +nightly fuzz list); do \
		mkdir -p corpus/$$t && cargo +nightly fuzz run -O -s none $$t corpus/$$t seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done
