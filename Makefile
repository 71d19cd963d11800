# walship — see README.md. Every target works from a fresh clone once `.ci/run`'s packages exist.
CARGO ?= cargo
PYTHON ?= python3

.PHONY: all build test test-rust test-e2e demo torture bench bench-quick clean fmt lint fuzz-smoke fuzz-long \
	sqlite-tests sqlite-tests-full sqlite-suite-build

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

## sqlite-tests: SQLite's own TCL test files (the WAL-centric list, tests/sqlite-suite/ci-<v>.list)
## with a plain testfixture and with walship as the default VFS, replication on; a table of both.
## Fails if a file that passes plain fails with walship or takes > 1.5x plain + 5 s.
## SQLITE_SUITE_VERSIONS: 3.40 (Debian 12's 3.40.1) and/or 3.46 (Debian 13's 3.46.1, asserts on).
## SQLITE_SUITE_FILES="wal.test wal2.test" runs those instead of the list. WALSHIP_EXT: the
## extension to test (default: target/release/libwalvfs.so, built first); WALSHIP_JUDGE=1 is
## passed to the tests (with WALSHIP_JUDGE=1 and no WALSHIP_EXT, the `judge` feature is built into
## target/judge). Source, builds and runs are cached under target/sqlite-suite/.
## sqlite-tests-full: every test file that passes on the plain build (hours; not in CI).
SQLITE_SUITE_VERSIONS ?= 3.40 3.46
SQLITE_SUITE_JOBS ?= 2
SQLITE_SUITE_FILES ?=
WALSHIP_JUDGE ?=
ifeq ($(WALSHIP_JUDGE)$(origin WALSHIP_EXT),1undefined)
WALSHIP_EXT := $(CURDIR)/target/judge/release/libwalvfs.so
SQLITE_SUITE_EXT_BUILD = $(CARGO) build --release --locked --features judge --target-dir target/judge
else
WALSHIP_EXT ?= $(CURDIR)/target/release/libwalvfs.so
SQLITE_SUITE_EXT_BUILD = $(if $(filter $(CURDIR)/target/release/libwalvfs.so,$(abspath $(WALSHIP_EXT))),$(CARGO) build --release --locked,true)
endif
SQLITE_SUITE_RUN = WALSHIP_EXT=$(abspath $(WALSHIP_EXT)) WALSHIP_JUDGE=$(WALSHIP_JUDGE) \
	$(PYTHON) tests/sqlite-suite/run.py -j $(SQLITE_SUITE_JOBS)

sqlite-suite-build:
	$(SQLITE_SUITE_EXT_BUILD)
	for v in $(SQLITE_SUITE_VERSIONS); do bash tests/sqlite-suite/build.sh $$v || exit 1; done

sqlite-tests: sqlite-suite-build
	rc=0; for v in $(SQLITE_SUITE_VERSIONS); do \
	  $(SQLITE_SUITE_RUN) --version $$v \
	    $(if $(SQLITE_SUITE_FILES),$(SQLITE_SUITE_FILES),--list tests/sqlite-suite/ci-$$v.list) \
	    --json target/sqlite-suite/results-$$v.json || rc=1; \
	done; exit $$rc

sqlite-tests-full: sqlite-suite-build
	rc=0; for v in $(SQLITE_SUITE_VERSIONS); do \
	  $(SQLITE_SUITE_RUN) --version $$v --all-files --timeout 900 \
	    --json target/sqlite-suite/results-full-$$v.json || rc=1; \
	done; exit $$rc

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf demo
