# The two commands a newcomer needs: `make demo` (the example site) and `make test` (everything CI runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv demo test lint typecheck pytest bench loadtest clean

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

bench: venv
	$(PY) benchmarks/run.py

# 50 clients for 30 s against the example project under gunicorn, on REDIS_URL (default 127.0.0.1:6379).
loadtest: venv
	$(PY) loadtest/run.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
