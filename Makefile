# fluxir: thin entry points. `make demo` and `make test` each do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.fluxir-installed
# Run tools from the venv (dvc stages call `python -m fluxir.stages.<name>`).
RUN := PATH="$(BIN):$$PATH"

.PHONY: setup demo test lint bench clean-venv

setup: $(STAMP)

# torch + torchvision first, from the pinned pair (pip takes them from the local wheel store when it has
# them); then the project with no build isolation so no sdist (deepspeed) can pull another torch.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

demo: setup
	$(RUN) dvc repro

test: setup
	$(RUN) python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests flows bench && $(BIN)/ruff format --check src tests flows bench

clean-venv:
	rm -rf $(VENV)
