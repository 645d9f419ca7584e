# The two commands of the README's quick start. Both create .venv and install into it;
# torch is pinned first so that pip never swaps in a different (CUDA) build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test test-numerics lint wheel-check

$(BIN)/tokendrift: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/tokendrift

demo: install
	$(BIN)/tokendrift train

# Two workers (pytest-xdist), one per core of CI's machine; worksteal moves queued tests from a
# busy worker to an idle one, so the long slow tests, collected first (tests/conftest.py), finish
# beside the short ones rather than after them.
test: install
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

# The numerically sensitive tests again on PyTorch's other CPU kernels, AVX2 and plain C++ (an
# AVX-512 machine has run the third in `make test`), on one thread: a tolerance that one
# machine's rounding happens to meet fails here, not for a user. Two workers, as `make test`.
NUMERIC_TESTS := tests/test_drift.py tests/test_diffusion.py tests/test_metrics.py tests/test_checkpoints.py \
	tests/test_dit.py tests/test_probe.py tests/test_synthetic.py
test-numerics: install
	for capability in avx2 default; do \
		ATEN_CPU_CAPABILITY=$$capability OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -m "not slow" $(NUMERIC_TESTS) || exit 1; \
	done

# What to lint and type-check is configured in pyproject.toml ([tool.ruff], [tool.mypy]).
lint: install
	$(BIN)/ruff check tokendrift_cli tests benchmarks
	$(BIN)/mypy

# The wheel, installed (not editable) into a fresh venv, run from outside the checkout.
wheel-check:
	PYTHON=$(PYTHON) bash .ci/wheel-check
