# `make train` and `make test` work on a fresh machine with Python 3.11, pip and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install train test lint format clean data sweep sweep-validator docs docs-build

install: $(VENV)/.installed

# Rebuilt when pyproject.toml changes; every extra the tests use is in [dev].
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --progress-bar off -e '.[dev]'
	touch $@

# W&B's sweep engine (`sweeps`) pins numpy<2, so the offline check of sweep files gets its own small venv.
SWEEPS_VERSION := 0.3.0
SWEEPS_PY := $(VENV)/sweeps-validator/bin/python
sweep-validator: $(VENV)/sweeps-validator/.installed-$(SWEEPS_VERSION)

$(VENV)/sweeps-validator/.installed-$(SWEEPS_VERSION):
	rm -rf $(VENV)/sweeps-validator
	$(PYTHON) -m venv $(VENV)/sweeps-validator
	$(SWEEPS_PY) -m pip install --quiet --progress-bar off 'sweeps==$(SWEEPS_VERSION)'
	touch $@

# Check configs/sweep/$(SWEEP).yaml offline, then register it with W&B; `wandb agent` runs it (README).
SWEEP ?= mushroom_resnet50
WANDB_PROJECT ?= mlproj
sweep: install sweep-validator
	$(SWEEPS_PY) src/mlproj/sweep_check.py configs/sweep/$(SWEEP).yaml
	$(VENV)/bin/wandb sweep --project $(WANDB_PROJECT) configs/sweep/$(SWEEP).yaml

# The embedded default data, byte for byte what data.dvc records, then into DVC's cache: `make data && dvc repro`
# works offline in a fresh clone (with a remote, `dvc pull` does this instead). Stops, leaving data.dvc as it is,
# when the folder differs from what data.dvc records.
data: install
	$(PY) -c 'from pathlib import Path; from mlproj.data.digits import write_digits; write_digits(Path("data/digits"))'
	$(PY) -m mlproj.data_version data/digits
	$(VENV)/bin/dvc commit --force --quiet data.dvc

train: install
	$(PY) train.py

lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

# The docs site (docs/, mkdocs.yml). --strict fails on a broken link or anchor; no --quiet, which would hide the
# warnings --strict counts. The site goes into the venv, out of the tree. NO_MKDOCS_2_WARNING: Material's banner.
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

docs-build: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir $(VENV)/site

test: lint docs-build sweep-validator
	$(PY) -m pytest

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache .coverage
