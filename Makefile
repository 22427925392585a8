# Every target creates .venv and installs what it needs, so a fresh machine needs only
# Python 3.11+. Tests and the demo stay on loopback (MESHRPC_INTERFACES=127.0.0.1).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MESHRPC_INTERFACES := 127.0.0.1

.PHONY: install demo test lint typecheck check bench bench-quick chaos fuzz clean

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
	$(PY) -m ruff check meshrpc tests examples bench fuzz
	$(PY) -m ruff format --check meshrpc tests examples bench fuzz

typecheck: $(STAMP)
	$(PY) -m mypy

check: lint typecheck test

# Every benchmark against its raw-pyzmq baseline (~7 min), one summary table, results
# in bench/results/ and bench/README.md; bench-quick: one short run of each, README untouched.
bench: $(STAMP)
	$(PY) bench/all.py --write-readme

bench-quick: $(STAMP)
	$(PY) bench/all.py --quick

chaos: $(STAMP)
	$(PY) bench/chaos.py --runs 3 --write-docs

# Coverage-guided fuzzing of the network parsers (atheris); where atheris cannot be
# installed, a long hypothesis search over the same functions instead.
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	@if $(PY) -m pip install --quiet 'atheris>=2.3'; then \
		mkdir -p fuzz/corpus && \
		$(PY) fuzz/fuzz_decode.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 fuzz/corpus; \
	else \
		echo "atheris did not install: running the long hypothesis search instead"; \
		MESHRPC_FUZZ=1 $(PY) -m pytest -q -p no:randomly tests/test_codec.py tests/test_advertisement.py; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
