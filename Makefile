# Two commands do all set-up on a fresh machine: `make demo` and `make test` (both idempotent).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test test-fast lint demo demo-lm bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

## the whole test suite (CI runs this), one worker process per core (pytest-xdist; each test runs 1 torch thread)
test: install
	$(BIN)/python -m pytest -q -n auto

## everything but the tests marked slow
test-fast: install
	$(BIN)/python -m pytest -q -n auto -m "not slow"

## ruff: lint and formatting (CI runs this before the tests; `ruff format .` fixes the formatting)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## the main job on its embedded default (tiny scale, this CPU)
demo: install
	$(BIN)/moenas demo

## the same job for a decoder-only MoE language model (lm-tiny space, this CPU, ~15 minutes)
demo-lm: install
	$(BIN)/moenas demo --space lm-tiny

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
