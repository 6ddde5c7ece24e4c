# Two entry points, each doing its own set-up in a local virtual environment (.venv):
#   make demo   install simattr (runtime only) and run its main job on the embedded digits dataset
#   make test   install simattr with its test tools and run lint and the test suite
# Both install the versions the suite last passed with (requirements/constraints.txt);
# `make lock` refreshes that file from a fresh, unconstrained install (see docs/install.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
PIP := $(BIN)/pip install --quiet --constraint $(CONSTRAINTS)
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: install demo test test-quick test-other-cpu lint format lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) pip
	$(PIP) -e .
	touch $@

$(DEV): $(RUNTIME) pyproject.toml $(CONSTRAINTS)
	$(PIP) -e ".[dev]"
	touch $@

install: $(DEV)

demo: $(RUNTIME)
	$(BIN)/simattr demo --out simattr-demo

test: $(DEV)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The numeric tests again with numpy, PyTorch and FAISS held to AVX2 kernels: users' CPUs without
# AVX-512 sum in another order, and what fails there must fail here (docs/install.md).
test-other-cpu: $(DEV)
	scripts/avx2.sh $(BIN)/python -m pytest -q -p no:cacheprovider -m "numeric and not slow"

# The suite without the tests marked slow (a few minutes).
test-quick: $(DEV)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports

format: $(DEV)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# Refresh the constraints: a fresh environment takes the newest releases the requirements allow
# (and this machine's pip configuration permits); run `make test` before committing the result.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet ".[dev]"
	{ echo "# The versions the test suite passed with. Refresh: make lock (docs/install.md)."; \
	  .venv-lock/bin/pip freeze --all --exclude simattr; } > $(CONSTRAINTS)
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) simattr-demo .pytest_cache .ruff_cache
