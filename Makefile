# Journey — the two commands are `make demo` and `make test`. Every target prints what it runs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Every process the harness starts is recorded here; `make test` ends by proving none is alive.
export JOURNEY_PID_LEDGER ?= $(CURDIR)/target/journey-harness-pids
export RUST_BACKTRACE ?= 1

.PHONY: help tools build images kind-node test check faults bench check-ledger clean-ledger demo fmt lint k8s-manifests chart-readme

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

tools: ## Install the pinned tools (Kafka, Zipkin, Collector, Helm, control plane, kind, dockerd) into $JOURNEY_CACHE
	scripts/install-tools.sh

build: ## Build every crate, binary and test
	$(CARGO) build --locked --workspace --all-targets

images: tools build ## Build all six images (local bases, stand-ins, Journey's) on a private dockerd
	target/debug/journey-stack images local

kind-node: tools build ## Build kind's node image kindest/node:v<K8S_VERSION> offline, on the private dockerd
	target/debug/journey-stack images kind-node

# TIERS="stack chart" runs some tiers and installs only the tools they use.
test: ## Every test tier (unit, local stack, chart, images, kind), timed, then the teardown proof
	scripts/install-tools.sh $$(scripts/test.sh --tools $(TIERS))
	$(MAKE) --no-print-directory build
	@rm -f "$(JOURNEY_PID_LEDGER)"
	scripts/test.sh $(TIERS)

# The inner loop: what a change must pass before the tiers, with no tool installed.
check: lint ## `make lint` and the unit tests: no tool installed, no stack started
	scripts/test.sh unit

# The long fault variants (tests/tests/faults/): a 45 s broker freeze, 30 s outages, three
# cycles of each kill and scale; the figures go to docs/reliability.md.
faults: ## Long fault runs under load (~15 min); writes the figures to docs/reliability.md
	scripts/install-tools.sh apt kafka zipkin collector
	$(CARGO) build --locked --bins -p producer -p consumer -p journeyctl -p journey-tests
	@rm -f "$(JOURNEY_PID_LEDGER)"; mkdir -p "$(dir $(JOURNEY_PID_LEDGER))"
	FAULTS=long FAULTS_REPORT=$(CURDIR)/docs/reliability.md \
	  $(CARGO) test --locked -p journey-tests --test faults -- --nocapture
	$(CARGO) run --locked --quiet -p journey-tests --bin journey-stack -- check-ledger

# Release builds on the local stack; BENCH_ARGS passes options (e.g. --soak 0s to skip the
# 10-minute soak; `target/release/journey-bench --help` lists them).
bench: ## Throughput, latency, CPU and memory side by side (~17 min); writes docs/benchmarks.md
	scripts/install-tools.sh apt kafka zipkin collector
	$(CARGO) build --locked --release --bins -p producer -p consumer -p journeyctl -p journey-tests
	@rm -f "$(JOURNEY_PID_LEDGER)"; mkdir -p "$(dir $(JOURNEY_PID_LEDGER))"
	target/release/journey-bench $(BENCH_ARGS)
	$(CARGO) run --locked --quiet -p journey-tests --bin journey-stack -- check-ledger

check-ledger: ## Prove nothing the harness recorded (processes, mounts, devices) is left
	$(CARGO) run --locked --quiet -p journey-tests --bin journey-stack -- check-ledger

clean-ledger: ## After a killed test run: stop and remove what the ledger says it left
	$(CARGO) run --locked --quiet -p journey-tests --bin journey-stack -- clean-ledger

# The demo installs and builds only what it runs: Kafka, Zipkin, the Collector, the binaries.
demo: ## Start the stack and the services, send messages, print their traces (ONCE=1: verify and exit)
	scripts/install-tools.sh apt kafka zipkin collector
	$(CARGO) build --locked --bins -p producer -p consumer -p journeyctl -p journey-tests
	target/debug/journey-stack demo $(if $(filter 1,$(ONCE)),--once,)

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## Formatting, lines rustfmt left as written, and clippy, warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) run --quiet --locked -p journey-tests --bin long-lines -- $$(git ls-files '*.rs')
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

chart-readme: ## Regenerate charts/journey/README.md from values.yaml's `# --` comments (helm-docs)
	scripts/install-tools.sh helm
	. $${JOURNEY_CACHE:-$$HOME/.cache/journey}/env.d/helm.env && "$$HELM_DOCS" --chart-search-root charts --skip-version-footer

k8s-manifests: tools ## Re-render k8s/ from the chart
	scripts/render-k8s.sh
