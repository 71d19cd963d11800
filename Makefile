# walship — see README.md. Every target works from a fresh clone once `.ci/run`'s packages exist.
CARGO ?= cargo
PYTHON ?= python3

.PHONY: all build test test-rust test-e2e demo torture bench bench-quick clean fmt lint fuzz-smoke fuzz-long

all: build

## build: the extension (target/release/libwalvfs.so) and the CLI (target/release/walship)
build:
	$(CARGO) build --release --locked

## test: the whole suite — Rust unit and integration tests, then the end-to-end tests
test: build test-rust test-e2e

test-rust:
	$(CARGO) test --release --locked

test-e2e:
	$(PYTHON) -m pytest tests/python -q -p no:cacheprovider

## demo: write a database through the extension in the sqlite3 shell, restore it, compare
demo: build
	bash scripts/demo.sh

## torture: the long reliability runs (not part of `make test`): 1000 SIGKILLs of a writing app,
## then each fuzz target for 10 min
torture: build
	WALSHIP_TORTURE_KILLS=$${WALSHIP_TORTURE_KILLS:-1000} $(PYTHON) -m pytest tests/python/test_torture.py -q -s -p no:cacheprovider
	$(MAKE) fuzz-long

## bench: benchmarks against plain SQLite, written to BENCHMARKS.md (not part of `make test`)
bench: build
	$(PYTHON) bench/bench.py

bench-quick: build
	$(PYTHON) bench/bench.py --quick

## fuzz-smoke / fuzz-long: each cargo-fuzz target (fuzz/) for 30 s / 10 min; new inputs go to
## fuzz/corpus/<target>, crashes to fuzz/artifacts/<target> (copy them to fuzz/corpus-regressions/).
## Stable rustc runs cargo-fuzz's nightly flags through RUSTC_BOOTSTRAP.
FUZZ_TARGETS = ltx_decode capture config_parse
FUZZ_RUN = cd fuzz && for t in $(FUZZ_TARGETS); do mkdir -p corpus/$$t && \
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t corpus/$$t corpus-regressions/$$t -- \
	-max_total_time=$(1) -print_final_stats=1 || exit 1; done

fuzz-smoke:
	$(call FUZZ_RUN,30)

fuzz-long:
	$(call FUZZ_RUN,600)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf demo
