# The two commands of the README's quick start. Both create .venv and install into it;
# torch is pinned first so that pip never swaps in a different (CUDA) build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint wheel-check

$(BIN)/tokendrift: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/tokendrift

demo: install
	$(BIN)/tokendrift train

test: install
	$(BIN)/python -m pytest -q

# What to lint and type-check is configured in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: install
	$(BIN)/ruff check tokendrift_cli tests benchmarks
	$(BIN)/mypy

# The wheel, installed (not editable) into a fresh venv, run from outside the checkout.
wheel-check:
	PYTHON=$(PYTHON) bash .ci/wheel-check
