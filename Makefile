# Every target sets up what it needs: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: serve demo test check unit bench services browser clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev,bench]'
	touch $(STAMP)

## serve: run the server on an embedded SQLite store (./tidings.db) at http://127.0.0.1:8700
serve: $(STAMP)
	$(VENV)/bin/tidings serve

## demo: append events to an embedded SQLite store and read them back
demo: $(STAMP)
	$(PY) examples/quickstart.py

## services: start local PostgreSQL (and friends) if installed but stopped
services:
	bash scripts/services.sh

## browser: install Debian's Chromium for the browser test if it is missing
browser:
	bash scripts/browser.sh

## check: lint, types (the benchmarks' calls too), layer contracts
check: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/mypy
	cd bench && MYPYPATH=. ../$(VENV)/bin/mypy --config-file mypy.ini *.py
	$(VENV)/bin/lint-imports

## test: the whole suite against real services, slow fault tests included
test: $(STAMP) services browser check
	$(PY) -m pytest -q

## unit: the fast in-memory part only
unit: $(STAMP)
	$(PY) -m pytest -q tests/unit tests/contracts -k memory

## bench: benchmarks against eventsourcing, notifier throughput, live-read latency (not in the test run)
bench: $(STAMP) services
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
