# Two commands set everything up on a fresh machine:
#   make repro   create .venv, install pinned deps, run the whole DVC pipeline
#   make test    lint + the whole test suite (slow real-data tests included)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
# The local MNIST mirror next to this checkout, used when DATA_MIRROR is unset and it exists.
DATA_MIRROR ?= $(if $(wildcard ../shared/datasets/mnist),$(abspath ../shared/datasets/mnist),)
export DATA_MIRROR

.PHONY: install repro test lint format params clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"
	touch $(STAMP)

repro: install
	$(BIN)/dvc repro

test: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

# Recompose params.yaml from conf/ (pass overrides: make params ARGS="model=mlp_64_sigmoid")
params: install
	$(BIN)/python -m mnist_pipeline.config $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
