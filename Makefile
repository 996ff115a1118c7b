# `make demo` and `make test` set everything up themselves: a virtualenv in .venv with the
# package (editable) and its dev tools, refreshed whenever pyproject.toml changes.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: venv test lint typecheck unit functional demo bench bench-quick clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11 or newer on PATH)"; exit 1; }
	@echo "==> creating $(VENV) with $(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check sdk functions infra tests examples bench

typecheck: venv
	$(BIN)/mypy

# All tiers, then the engine's functional tests again through the API of a `stratoflow dev`
# stack (STRATOFLOW_TEST_BACKEND=api, see tests/conftest.py): the same suite in both modes.
test: venv lint typecheck
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) tests
	STRATOFLOW_TEST_BACKEND=api $(BIN)/pytest -q -n $(PYTEST_WORKERS) tests/functional/test_flows.py tests/functional/test_tasks.py

unit: venv
	$(BIN)/pytest -q tests/unit

functional: venv
	$(BIN)/pytest -q tests/functional

demo: venv
	$(BIN)/python examples/demo.py $(ARGS)

bench: venv
	$(BIN)/python bench/run.py

bench-quick: venv
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
