# Every target creates .venv and installs what it needs, so a fresh machine needs only
# Python 3.11+. Tests and the demo stay on loopback (MESHRPC_INTERFACES=127.0.0.1).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MESHRPC_INTERFACES := 127.0.0.1

.PHONY: install demo test lint typecheck check bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check meshrpc tests examples bench
	$(PY) -m ruff format --check meshrpc tests examples bench

typecheck: $(STAMP)
	$(PY) -m mypy

check: lint typecheck test

bench: $(STAMP)
	$(PY) bench/roundtrip.py --backend both --write-readme
	$(PY) bench/pubsub.py --backend both --write-readme

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
