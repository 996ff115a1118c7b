# `make demo` and `make test` set everything up themselves: a virtualenv in .venv with the
# package (editable) and its dev tools, refreshed whenever pyproject.toml changes.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: venv test lint typecheck check unit functional demo bench bench-quick clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11 or newer on PATH)"; exit 1; }
	@echo "==> creating $(VENV) with $(PYTHON)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# ruff includes its complexity rule (C901, max 15: pyproject.toml).
lint: venv
	$(BIN)/ruff check sdk functions infra tests examples bench

typecheck: venv
	$(BIN)/mypy

# All tiers, then the engine's functional tests again through the API of a `stratoflow dev`
# stack (STRATOFLOW_TEST_BACKEND=api, see tests/conftest.py): the same suite in both modes.
test: venv lint typecheck check
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) tests
	STRATOFLOW_TEST_BACKEND=api $(BIN)/pytest -q -n $(PYTEST_WORKERS) tests/functional/test_flows.py tests/functional/test_tasks.py

# The infrastructure and the code, offline: the layer contracts of pyproject.toml (import-linter:
# layers, a pure core, no import cycles; docs/architecture.md); cfn-lint on template.yaml (the venv's, from the dev
# extras); checkov on template.yaml (every skip is on its resource with the reason, and listed in
# docs/security.md); bandit on the code (infra/bandit.yaml; other findings are `# nosec <id>  #
# reason` where they are); then `sam build` of every function and the SDK layer (pip only, no
# Docker; needs python3.13, the functions' runtime, which it looks for on PATH and in pyenv).
# aws-sam-cli, checkov and bandit live in virtualenvs of their own (infra/requirements-sam.txt and
# infra/requirements-security.txt say why).
SAM_VENV := .aws-sam/tools
SAM_STAMP := $(SAM_VENV)/.installed
PY313_DIR = $(shell for p in $$(which -a python3.13 2>/dev/null) $$(ls -d $$HOME/.pyenv/versions/3.13*/bin/python3.13 2>/dev/null); do \
	$$p -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null && { dirname $$p; break; }; done)

$(SAM_STAMP): infra/requirements-sam.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required"; exit 1; }
	@echo "==> creating $(SAM_VENV) (aws-sam-cli)"
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	@$(SAM_VENV)/bin/python -m pip install -q --disable-pip-version-check -r infra/requirements-sam.txt
	@touch $(SAM_STAMP)

SEC_VENV := .aws-sam/security
SEC_STAMP := $(SEC_VENV)/.installed

$(SEC_STAMP): infra/requirements-security.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required"; exit 1; }
	@echo "==> creating $(SEC_VENV) (checkov, bandit)"
	@test -x $(SEC_VENV)/bin/python || $(PYTHON) -m venv $(SEC_VENV)
	@$(SEC_VENV)/bin/python -m pip install -q --disable-pip-version-check -r infra/requirements-security.txt
	@touch $(SEC_STAMP)

# checkov exits 0 on a template it cannot parse or does not take for CloudFormation (its summary
# then counts "Parsing errors", or no passed check), so those fail here too; --skip-download keeps
# it offline.
check: venv $(SAM_STAMP) $(SEC_STAMP)
	$(BIN)/lint-imports
	$(BIN)/cfn-lint template.yaml
	@out=$$($(SEC_VENV)/bin/checkov -f template.yaml --framework cloudformation --quiet --compact --skip-download 2>&1); \
		rc=$$?; echo "$$out"; test $$rc -eq 0 && echo "$$out" | grep -q "Passed checks: [1-9]" && \
		! echo "$$out" | grep -q "Parsing errors"
	$(SEC_VENV)/bin/bandit -r sdk functions infra -q -c infra/bandit.yaml
	@test -n "$(PY313_DIR)" || { echo "sam build needs python3.13 (the functions' runtime) on PATH"; exit 1; }
	PATH="$(PY313_DIR):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam build --template template.yaml \
		--build-dir .aws-sam/build --cached --cache-dir .aws-sam/cache

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
