# Every target creates .venv (if missing) and installs the locked dependencies into it first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export MPLBACKEND := Agg

.PHONY: demo test test-slow bench bench-full lint format lock notebooks clean docs lock-docs

# Everything installed is pinned and hashed: the lock holds the build backend too (hatchling, its
# dependencies, and editables for `-e`), and the project is built with --no-build-isolation so that
# pip never fetches an unpinned backend. The venv's own pip is used as is (an --upgrade would fetch
# pip unhashed).
$(STAMP): pyproject.toml requirements.lock requirements-docs.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --require-hashes -r requirements-docs.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

## Run every experiment at demo size; writes runs/demo/report.md with its figures.
demo: $(STAMP)
	$(VENV)/bin/dpflows demo --out runs/demo

## The default test suite (slow experiments excluded), on two pytest-xdist workers (one per core of the
## CI machine; a module's tests stay on one worker so its compiled programs are reused).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

## Only the slow-marked tests (experiments at full size).
test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m slow

## Side-by-side timings against peers, as ratios from one run, and the scaling table (~15 min on 2 cores;
## each section prints as it completes). `make bench-full` adds the full-size peer runs and n = 1e5 Sinkhorn.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

bench-full: $(STAMP)
	$(PY) benchmarks/run_all.py --full

## Build the documentation site into site/ (offline; every warning is an error). tests/test_docs.py builds it too.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

## Re-execute every notebook at full size and write the .ipynb next to its percent-format source.
notebooks: $(STAMP)
	$(PY) scripts/execute_notebooks.py notebooks/*.py

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests benchmarks notebooks scripts
	$(VENV)/bin/ruff check src tests benchmarks notebooks scripts

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

## Re-resolve requirements.lock (hashes) from pyproject.toml, the build backend included.
## Check the diff: a new dependency must not move existing pins (add -c <old pins> to keep them).
lock: $(STAMP)
	$(PY) -m pip install --quiet uv
	printf 'hatchling>=1.21\neditables>=0.3\n' > $(VENV)/build-requirements.in
	$(VENV)/bin/uv pip compile pyproject.toml $(VENV)/build-requirements.in --extra test --extra dev --extra experiments --extra notebooks --generate-hashes --python-version 3.11 -o requirements.lock

## Re-resolve requirements-docs.lock (hashes): mkdocs and its plugins, pinned consistently with requirements.lock.
lock-docs: $(STAMP)
	$(PY) -m pip install --quiet uv
	printf 'mkdocs>=1.6\nmkdocs-material>=9.5\nmkdocstrings[python]>=0.26\nmkdocs-jupyter>=0.25\n' > $(VENV)/docs-requirements.in
	$(VENV)/bin/uv pip compile $(VENV)/docs-requirements.in -c requirements.lock --generate-hashes --python-version 3.11 --custom-compile-command "make lock-docs" -o requirements-docs.lock

clean:
	rm -rf $(VENV) runs .pytest_cache site
