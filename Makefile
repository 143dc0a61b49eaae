# espgw — the README's commands.
#   make demo   install what is missing, build, run the gateway on DPDK virtual devices
#   make test   every test: unit, integration, end-to-end (real DPDK)
#   make perf   the throughput harness (perf/harness.py; about 15 minutes)
.PHONY: all deps test-deps build demo test fmt clippy bench perf

CARGO ?= cargo

all: build

deps:
	./scripts/deps.sh

test-deps:
	ESPGW_DEPS_TEST=1 ./scripts/deps.sh

build: deps
	$(CARGO) build --release --workspace

demo: build
	./scripts/demo.sh

test: test-deps
	$(CARGO) test --workspace --all-targets

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

perf: deps
	command -v valgrind >/dev/null 2>&1 || apt-get install -y -qq valgrind >/dev/null
	python3 perf/harness.py --profile
