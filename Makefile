# dagmirror developer entry points. Every target creates/refreshes the local venv itself.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo test lint typecheck unit bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) -m dagmirror.devtools.demo

lint: venv
	$(VENV)/bin/ruff check dagmirror tests benchmarks
	$(VENV)/bin/ruff format --check dagmirror tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

typecheck: venv
	$(VENV)/bin/mypy dagmirror

test: lint typecheck
	$(VENV)/bin/pytest

unit: venv
	$(VENV)/bin/pytest -m 'not slow'

bench-quick: venv
	$(PY) -m benchmarks --quick

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache demo-dags build *.egg-info
