# coft: two commands on a fresh machine --  `make book` (the main job) and `make test`.
# The virtual environment is created on first use; torch==2.13.0 (a local CPU wheel here) is
# installed before anything that depends on it, or pip would pull GBs of CUDA wheels.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
# nothing may be downloaded at the smoke and cpu profiles (a hub lookup otherwise hangs ~25 s)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv book run build test bench clean
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

## make book: run every chapter at $(PROFILE) (default cpu) and render _build/html
book: venv
	$(PY) -m coft_utils book --profile $(PROFILE)

## make build: render only, from the notebooks already executed in book/_generated
build: venv
	$(PY) -m coft_utils build

## make test: unit tests, smoke-profile notebooks, book build (what CI runs)
test: venv
	$(PY) -m pytest -q

## make bench: speed and memory ratios -> bench/results.json
bench: venv
	$(PY) bench/run.py

clean:
	rm -rf _build book/_generated
