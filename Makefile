# Two commands set everything up: `make demo` and `make test`.
# Both create .venv when missing and install what they need; a second run reinstalls nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kindred-installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: demo test test-fast lint clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m synthetic_bank.demo

test: $(STAMP)
	$(BIN)/python -m pytest

# the quick lane: no PostgreSQL server, no slow tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not pgvector and not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean-venv:
	rm -rf $(VENV)
