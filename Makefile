# The README's commands. Each first creates or refreshes .venv (tools/setup_env.sh, idempotent).
PY := .venv/bin/python
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-m 'not slow'".
PYTEST_ARGS ?=

.PHONY: setup test learning-check demo format

setup:
	@bash tools/setup_env.sh

# Lint and format check first (rules in pyproject.toml; `make format` applies them), then the import
# layers (lint-imports, the contracts in pyproject.toml; it prints only a broken one). pytest exits 5
# when it collected no test: that is a broken suite, not a pass.
test: setup
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .
	@out=$$(.venv/bin/lint-imports --no-cache 2>&1) || { echo "$$out"; exit 1; }
	@$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; exit 1; fi; \
	exit $$rc

# The learning check (tools/learning_check.py): CLSA-Single on both shapes variants, side by side on
# the cores; make learning-check METHOD=mocov2 checks MoCo v2 at the same budget.
METHOD ?= clsa
learning-check: setup
	@$(PY) tools/learning_check.py --method $(METHOD) --jobs 2

demo: setup
	@$(PY) tools/demo.py

format: setup
	@.venv/bin/ruff check --fix . && .venv/bin/ruff format .
