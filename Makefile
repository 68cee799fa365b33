# The two README commands: `make train` and `make test`. Both set up .venv if missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= runs/multi_mnist-$(shell date +%Y%m%d-%H%M%S)
PYTEST_WORKERS ?= 2
# Everything `make train` and `make test` need: the library, the experiment runner and
# the `mtl-jax` command, the offline MNIST digits, TensorBoard logs, the test tools and
# the docs build.
EXTRAS := experiments,mnist,tensorboard,test,docs

.PHONY: venv train test test-all lint format

# Reinstalled when the dependencies or the version (mtl_jax.__version__) change.
$(STAMP): pyproject.toml mtl_jax/__init__.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

venv: $(STAMP)

# Trains the default experiment (MultiMNIST, LeNet, equal weighting) on the offline build;
# ARGS passes overrides, e.g. make train ARGS=--config.weighting.name=mgda
train: $(STAMP)
	$(BIN)/mtl-jax train --config multi_mnist --workdir $(WORKDIR) $(ARGS)

# Lint, the docs site (strict: a broken link or docstring warning fails), the tests
# (doctests included, tests/test_doctests.py).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q -d $(VENV)/site
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
