# Every target creates .venv (if missing) and installs the locked dependencies into it first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export MPLBACKEND := Agg

.PHONY: demo test test-slow bench lint format lock notebooks clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## Run every experiment at demo size; writes runs/demo/report.md with its figures.
demo: $(STAMP)
	$(VENV)/bin/dpflows demo --out runs/demo

## The default test suite (slow experiments excluded).
test: $(STAMP)
	$(PY) -m pytest -q

## Only the slow-marked tests (experiments at full size).
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

## Side-by-side timings against peers, as ratios from one run.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

## Re-execute every notebook at full size and write the .ipynb next to its percent-format source.
notebooks: $(STAMP)
	$(PY) scripts/execute_notebooks.py notebooks/*.py

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks notebooks scripts
	$(VENV)/bin/ruff check src tests benchmarks notebooks scripts

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

## Re-resolve requirements.lock (hashes) from pyproject.toml.
lock: $(STAMP)
	$(PY) -m pip install --quiet uv
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra dev --extra experiments --extra notebooks --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) runs .pytest_cache
