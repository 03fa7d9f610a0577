# `make train` and `make test` work on a fresh machine with Python 3.11, pip and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install train test lint format clean

install: $(VENV)/.installed

# Rebuilt when pyproject.toml changes; every extra the tests use is in [dev].
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $@

train: install
	$(PY) train.py

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache .coverage
