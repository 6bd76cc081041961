# The two commands a new user types: `make demo` and `make test`. Both install first if needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo
STAMP := $(VENV)/.installed

.PHONY: install browser demo test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (urn needs Python 3.11; set PYTHON=...)"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,bench,demo]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/urn demo --out $(DEMO_OUT)

# The report test renders report.html in a real headless browser: Debian's chromium, installed with apt-get
# where this is a Debian/Ubuntu machine we may install on (root, or sudo without a password). Elsewhere the
# test says it was skipped and why (pytest -rs); set URN_CHROMIUM=/path/to/chrome to use another Chromium.
browser:
	@if command -v chromium >/dev/null 2>&1 || [ -n "$$URN_CHROMIUM" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "note: no apt-get; the report's browser test will be skipped"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "note: cannot install chromium without root; the report's browser test will be skipped"; exit 0; fi; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	  || { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Lint first (seconds), then every test; `pytest -m "not slow"` is the quick loop while developing.
test: lint browser
	$(BIN)/python -m pytest -q -rs tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/crf_speed.py
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
