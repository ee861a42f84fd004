# The two commands of the README: `make up` runs the platform on embedded defaults, `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: install up test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'

up: install
	$(BIN)/cmdlog up --demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf .cmdlog .pytest_cache .hypothesis
