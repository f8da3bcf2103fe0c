# giao — the two commands that matter: `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test lint fmt bench build tools vectors

## Run the whole suite on this machine (SQLite + embedded bus under ./data, demo conversations).
run:
	$(CARGO) run -p giao -- dev

## Every test of the workspace, against real PostgreSQL and NATS JetStream (see README).
## The zalo-personal simulator feature is named so its tests (zca-js interop included)
## always build and run, whichever other crate enables it.
test: tools
	$(CARGO) nextest run --workspace --features zalo-personal/simulator --no-fail-fast

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

## cargo-nextest runs the tests; install it when missing. The zca-js interop and vector
## scripts need their Node packages (Node and npm must be installed): `npm ci` when they are
## missing or older than the lock file.
ZCA_DIR := scripts/zca-vectors
tools:
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked
	@if [ ! -f $(ZCA_DIR)/node_modules/zca-js/package.json ] || \
		[ $(ZCA_DIR)/package-lock.json -nt $(ZCA_DIR)/node_modules/.package-lock.json ]; then \
		cd $(ZCA_DIR) && npm ci --no-audit --no-fund; fi

## Recompute the zalo-personal conformance vectors with the reference client zca-js (needs Node).
vectors:
	cd scripts/zca-vectors && npm ci --no-audit --no-fund && node generate.mjs
