# The README's commands. Each first creates or refreshes .venv (tools/setup_env.sh, idempotent).
PY := .venv/bin/python
# Extra pytest arguments, e.g. make test PYTEST_ARGS="-m 'not slow'".
PYTEST_ARGS ?=

.PHONY: setup test demo

setup:
	@bash tools/setup_env.sh

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; exit 1; fi; \
	exit $$rc

demo: setup
	@$(PY) tools/demo.py
