# giao — the two commands that matter: `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test lint fmt bench build tools vectors

## Run the whole suite on this machine (SQLite + embedded bus under ./data, demo conversations).
run:
	$(CARGO) run -p giao -- dev

## Every test of the workspace, against real PostgreSQL and NATS JetStream (see README).
test: tools
	$(CARGO) nextest run --workspace --no-fail-fast

## Formatting and clippy with warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Benchmarks: prints figures and one JSON line per scenario.
bench:
	$(CARGO) run --release -p giao-tests --bin giao-bench

build:
	$(CARGO) build --workspace

## cargo-nextest runs the tests; install it when missing.
tools:
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked

## Recompute the zalo-personal conformance vectors with the reference client zca-js (needs Node).
vectors:
	cd scripts/zca-vectors && npm ci --no-audit --no-fund && node generate.mjs
