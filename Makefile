# Two commands for a newcomer on a fresh machine (Python 3.11 and Node.js/npm needed):
#   make demo   install, then code and check a bundled example
#   make test   install with the development tools, then lint, type-check and run every test
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE := examples/medicare-lumbar-bilateral/input.json

.PHONY: install install-dev demo test lint fixtures browser rules-doc clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

demo: install
	$(BIN)/facet-adapter claim $(EXAMPLE) --payer medicare -o claim-bundle.json
	@echo "Claim Bundle written to claim-bundle.json"
	$(BIN)/facet-adapter check $(EXAMPLE) --payer medicare --format text

fixtures:
	tools/fetch-r4-examples

lint: install-dev
	$(BIN)/ruff check adapter tests tools
	$(BIN)/ruff format --check adapter tests tools
	$(BIN)/mypy

test: lint fixtures browser
	$(BIN)/pytest

# The review page's browser tests: Debian's chromium (apt-get, as root) and axe-core (npm).
browser:
	tools/browser-test/setup

rules-doc: install
	$(BIN)/facet-adapter rules --format markdown > docs/rules.md

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache claim-bundle.json test-artifacts
