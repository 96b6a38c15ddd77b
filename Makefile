# One Makefile for humans and CI: the README and .ci/run use these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# make serve PORT=8090 (HOST=0.0.0.0 to listen on every interface)
HOST ?= 127.0.0.1
PORT ?= 8080

JS := clients/js
JS_STAMP := $(JS)/node_modules/.installed

# The fast tier: pure tests (no services, no sockets, no subprocesses; tests/conftest.py fails any test that
# tries under --fast-tier). Coverage of tidings.core is measured on it, with a floor.
FAST := tests/core tests/test_settings.py tests/verify/test_ledger.py
COVERAGE := --cov=tidings.core --cov-branch --cov-fail-under=95 --cov-report=term-missing:skip-covered

.PHONY: install serve test test-suite test-fast test-cov test-all lint format typecheck js clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json bench/package.json bench/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund
	cd bench && npm ci --no-audit --no-fund  # the Node `ws` baseline of the benchmark suite
	touch $(JS_STAMP)

install: $(STAMP)

serve: $(STAMP)  ## demo mode on: /demo works out of the box (local use only)
	$(BIN)/tidings serve --demo --host $(HOST) --port $(PORT)

# The default suite (no `slow` soaks) in two phases, well under 15 minutes on two cores (docs/testing.md):
# first everything but the `serial` tests on WORKERS xdist workers, a file's tests on one worker (its module
# servers start once); then the `serial` tests alone, one at a time: the fault runs that start fleets of
# processes and kill them, and the tests with a wall-clock bound, which other workers' CPU use could break.
WORKERS ?= 3
PARALLEL := -n $(WORKERS) --dist loadfile -m 'not slow and not serial'
SERIAL := -m 'serial and not slow'

test: $(STAMP) $(JS_STAMP)  ## lint, types, the fast tier with core coverage, then the default suite (no slow soaks)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(MAKE) --no-print-directory test-cov
	$(MAKE) --no-print-directory test-suite

test-suite: $(STAMP) $(JS_STAMP)  ## the default suite alone: the short tests on workers, then the serial ones
	$(BIN)/pytest -q --durations=25 $(PARALLEL)
	$(BIN)/pytest -q --durations=25 $(SERIAL)

test-fast: $(STAMP)  ## the fast tier alone: pure core and unit tests, well under a minute
	$(BIN)/pytest -q --fast-tier $(FAST)

test-cov: $(STAMP)  ## the fast tier with branch coverage of tidings.core; fails under 95%
	$(BIN)/pytest -q --fast-tier $(COVERAGE) $(FAST)

test-all: $(STAMP) $(JS_STAMP)  ## the default suite plus the slow soak runs
	$(BIN)/pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

typecheck: $(STAMP)
	$(BIN)/mypy

js: $(JS_STAMP)  ## the JS SDK: tsc (strict, checkJs) and node --test
	cd $(JS) && npm run check

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage $(JS)/node_modules bench/node_modules
