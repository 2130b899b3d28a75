# The two commands a newcomer needs: `make demo` (the example site) and `make test` (everything CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv demo test lint typecheck pytest matrix dist bench loadtest clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) example_project/manage.py migrate --noinput
	$(PY) example_project/manage.py ensure_demo_user
	$(PY) example_project/manage.py runserver 127.0.0.1:8000

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest

test: lint typecheck pytest

# The real-Redis subset on both other ends of the support matrix (Python 3.13 + Django 6.1 + the newest
# releases; Python 3.11 + Django 5.2 + the oldest supported), each in a fresh venv; as CI runs it.
matrix:
	bash .ci/run newest oldest

# The release artefacts: an sdist and a wheel in dist/, checked by twine.
dist: venv
	rm -rf dist
	$(PY) -m build --outdir dist
	$(VENV)/bin/twine check --strict dist/*

bench: venv
	$(PY) benchmarks/run.py

# 50 clients for 30 s against the example project under gunicorn, on REDIS_URL (default 127.0.0.1:6379).
loadtest: venv
	$(PY) loadtest/run.py

clean:
	rm -rf $(VENV) dist .mypy_cache .pytest_cache .ruff_cache
