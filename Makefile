# The two README commands: `make train` and `make test`. Both set up .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/multi_mnist-$(shell date +%Y%m%d-%H%M%S)
PYTEST_WORKERS ?= 2

.PHONY: venv train test test-all lint format

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Trains the default experiment (MultiMNIST, LeNet, equal weighting) on the offline build;
# ARGS passes overrides, e.g. make train ARGS=--config.weighting.name=mgda
train: $(STAMP)
	$(BIN)/python -m experiments.main --config experiments/configs/multi_mnist.py --workdir $(WORKDIR) $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
