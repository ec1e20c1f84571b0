# coft: two commands on a fresh machine --  `make book` (the main job) and `make test`.
# The virtual environment is created on first use; torch==2.13.0 (a local CPU wheel here) is
# installed before anything that depends on it, or pip would pull GBs of CUDA wheels.
#
# Which Python: VENV=<dir> on the command line or in the environment wins; else an ACTIVE conda
# environment (CONDA_PREFIX set and CONDA_DEFAULT_ENV not `base`, e.g. after
# `conda env create -f environment.yml && conda activate coft`) is used as is; else `.venv`.
SHELL := /bin/bash
PYTHON ?= python3
ifneq ($(strip $(CONDA_PREFIX)),)
ifneq ($(CONDA_DEFAULT_ENV),base)
VENV ?= $(CONDA_PREFIX)
endif
endif
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
# Offline only where nothing may be downloaded: the smoke and cpu profiles and `make test` (a hub
# lookup otherwise hangs ~25 s). `make book PROFILE=gpu|paper` may use the hub: the runner warns
# before any work if the shell itself has set HF_HUB_OFFLINE (unset it to download).
OFFLINE_PROFILES := smoke cpu cpu-deep
ifneq ($(filter test,$(MAKECMDGOALS)),)
COFT_OFFLINE := 1
else ifneq ($(filter $(PROFILE),$(OFFLINE_PROFILES)),)
COFT_OFFLINE := 1
endif
ifeq ($(COFT_OFFLINE),1)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
endif
export TOKENIZERS_PARALLELISM := false

.PHONY: venv book run build test bench clean chromium env-info
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
test: venv chromium
	$(PY) -m pytest -q

## make chromium: Debian's chromium for the site-check test, with apt-get only when it is missing.
## Never fails: without apt-get (or root/sudo) it says how to install it, and that test is skipped.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: Chromium not found and no apt-get here; install Chromium (chromium on PATH) to run the site-check test (skipped until then)"; \
	else \
	  if [ "$$(id -u)" = 0 ]; then as=""; elif sudo -n true 2>/dev/null; then as="sudo -n"; else as=none; fi; \
	  if [ "$$as" = none ]; then \
	    echo "note: Chromium not found; install it with: sudo apt-get install chromium (the site-check test is skipped until then)"; \
	  else \
	    echo "installing Debian's chromium with apt-get (for the site-check test)"; \
	    $$as apt-get update -qq || true; \
	    $$as env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "note: apt-get install chromium failed; the site-check test is skipped"; \
	  fi; \
	fi

## make env-info: the Python and the offline settings that make would use (PROFILE, VENV, conda)
env-info:
	@echo "python=$(PY) profile=$(PROFILE) HF_HUB_OFFLINE=$(HF_HUB_OFFLINE) HF_DATASETS_OFFLINE=$(HF_DATASETS_OFFLINE)"

## make bench: speed and memory ratios -> bench/results.json
bench: venv
	$(PY) bench/run.py

clean:
	rm -rf _build book/_generated
