# Two commands set everything up on a fresh machine:
#   make repro   create .venv, install pinned deps, run the whole DVC pipeline
#   make test    lint + type check + the fast tests, on every CPU (about 2 minutes on 2 cores)
# make test-all adds the slow ones (real MNIST end to end, real PostgreSQL, tune studies; CI runs it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
export DVC_NO_ANALYTICS := 1
# Stage commands run `python -m ...`: make sure that is the venv's python.
export PATH := $(abspath $(BIN)):$(PATH)
# The local MNIST mirror next to this checkout, used when DATA_MIRROR is unset and it exists.
DATA_MIRROR ?= $(if $(wildcard ../shared/datasets/mnist),$(abspath ../shared/datasets/mnist),)
export DATA_MIRROR

.PHONY: install install-dev repro test test-all coverage lint format params clean

# Python before 3.13 reads .venv's .pth files in the locale's encoding: in a checkout whose path is
# not ASCII, no .venv python can start unless the locale is UTF-8. Say so in one line up front.
ifneq ($(MAKECMDGOALS),clean)
# (Python's own start-up sets the locale; one that is not installed leaves C, as it does for .venv.)
ifneq ($(shell $(PYTHON) -c 'import locale, os, sys; \
  print(int(os.getcwd().isascii() or sys.version_info >= (3, 13) \
  or locale.nl_langinfo(locale.CODESET).upper().replace("-", "") == "UTF8"))' 2>/dev/null || echo 1),1)
$(error the path $(CURDIR) is not ASCII and the locale is not UTF-8, so Python cannot read .venv's paths: run LC_ALL=C.UTF-8 make $(MAKECMDGOALS), or clone to an ASCII path)
endif
endif

# `make repro` installs only what the pipeline needs; `make test` adds the dev tools. Versions come
# from requirements.lock alone (uv is pinned there too). uv, bootstrapped from pip, installs in
# seconds; where it cannot be had, pip does the same install (tests/test_install.py: same packages).
USE_UV ?= 1
install: $(STAMP)
install-dev: $(DEV_STAMP)

define lock_install
	if [ "$(USE_UV)" = 1 ] && $(BIN)/python -m pip install --quiet -c requirements.lock uv \
	  && $(BIN)/uv pip install --quiet --python $(BIN)/python -c requirements.lock -e "$(1)"; then :; \
	else \
	  echo "installing with pip (USE_UV=$(USE_UV))"; $(BIN)/python -m pip install --quiet -c requirements.lock -e "$(1)"; \
	fi
endef

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(call lock_install,.)
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(call lock_install,.[dev])
	touch $(DEV_STAMP)

repro: install
	$(BIN)/dvc repro

test: lint
	$(if $(COV),rm -f .coverage .coverage.*)
	$(BIN)/python -m pytest -m "not slow" -n auto $(COV)

# Everything (CI runs it): the fast tests as `make test` runs them, then the slow ones one at a time
# (they start servers and whole pipelines of their own), all measured for line and branch coverage
# of src/ (stages run as subprocesses or from sandbox copies included). Under COVERAGE_FLOOR percent
# it fails; the floor is the measured figure, rounded down, so that untested code cannot creep in.
COVERAGE_FLOOR ?= 90
test-all: COV := --cov --cov-report=
test-all: test
	$(BIN)/python -m pytest -m slow --cov --cov-append --cov-report=term:skip-covered --cov-fail-under=$(COVERAGE_FLOOR)

# Which lines the fast tests run (stages started as subprocesses included): a table of the files
# with lines never run, and htmlcov/index.html to read them. A map, not a score.
coverage: install-dev
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest -m "not slow" -n auto --cov --cov-report=term --cov-report=html
	@echo "open htmlcov/index.html"

lint: install-dev
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Recompose params.yaml from conf/ (pass overrides: make params ARGS="model=mlp_64_sigmoid")
params: install
	$(BIN)/python -m mnist_pipeline.compose $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache htmlcov .coverage .coverage.*

# Benchmark against PyTorch CPU (see src/mnist_pipeline/bench/): its own venv, so torch never
# enters .venv or the runtime dependencies. Writes reports/benchmark.{json,md}: about 10 minutes, 17 with
# ARGS=--best (plus about 1 minute the first time, to create .venv-bench). Run it on a quiet machine.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
.PHONY: bench

$(BENCH_STAMP): pyproject.toml requirements.lock Makefile
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet -c requirements.lock -e ".[bench,tune]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m mnist_pipeline.bench $(ARGS)

# Experiments (PATH, exported above, makes `dvc` and the stages' `python` this venv's):
#   make sweep ARGS="-S 'train.lr=0.05,0.1,0.2' -S train.epochs=5 -j 2"   (default grid: train.lr=0.05,0.1,0.2)
#   make exps                                                               (dvc exp show, readable columns)
#   make check-metrics ARGS="--rev origin/main"                             (gate reports/metrics.json)
#   make tune ARGS="--trials 30"                                           (Optuna study, see docs/tuning.md)
#   make serve ARGS="--port 8000"                                           (the model over HTTP, a page to draw on)
.PHONY: sweep exps check-metrics tune install-tune serve install-serve install-ssh plots-template
TUNE_STAMP := $(VENV)/.installed-tune
SERVE_STAMP := $(VENV)/.installed-serve
SSH_STAMP := $(VENV)/.installed-ssh

$(SERVE_STAMP): $(STAMP)
	$(call lock_install,.[serve])
	touch $(SERVE_STAMP)

install-serve: $(SERVE_STAMP)

serve: install-serve
	$(BIN)/python -m mnist_pipeline.serve $(ARGS)

# Rebuild .dvc/plots/offline.html (Vega inline, so `dvc plots show` draws offline) from the pinned
# npm tarballs; ARGS=--check only compares (CI does).
plots-template: install
	$(BIN)/python -m mnist_pipeline.plots_template $(ARGS)

$(TUNE_STAMP): $(STAMP)
	$(call lock_install,.[tune])
	touch $(TUNE_STAMP)

install-tune: $(TUNE_STAMP)

# DVC's ssh plugin, for a DVC remote at ssh://host/path (docs/sharing.md).
$(SSH_STAMP): $(STAMP)
	$(call lock_install,.[ssh])
	touch $(SSH_STAMP)

install-ssh: $(SSH_STAMP)

tune: install-tune
	$(BIN)/python -m mnist_pipeline.tune $(ARGS)

sweep: install
	$(BIN)/python -m mnist_pipeline.sweep $(ARGS)

exps: install
	$(BIN)/python -m mnist_pipeline.sweep --show

check-metrics: install
	$(BIN)/python -m mnist_pipeline.check_metrics $(ARGS)
