# Every target creates .venv when missing and installs the project into it, so each one
# works alone on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

# Also the slow suites (long tuning, large models).
test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

lint: $(STAMP)
	$(VENV)/bin/ruff check hwcompile passes targets tests examples benchmarks

# Benchmark-only dependencies (OpenVINO, a third column) come from the "bench" extra.
BENCH_STAMP := $(VENV)/.bench-stamp

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/cpu_vs_onnxruntime.py
	$(PY) benchmarks/real_models.py --json out/bench/real_models.json

clean:
	rm -rf out build .pytest_cache
