# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
N ?= 2

.PHONY: run test lint migrate fakeprovider clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps make the second run fast: pip runs again only when a requirements file changes.
$(VENV)/.installed-runtime: requirements.txt constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	touch $@

$(VENV)/.installed-test: requirements.txt requirements-test.txt constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-test.txt -c constraints.txt
	touch $(VENV)/.installed-runtime $@

migrate: $(VENV)/.installed-runtime
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py migrate --noinput

run: migrate
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/daphne -b 127.0.0.1 -p $(PORT) chatsite.asgi:application

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(VENV)/.installed-test lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

fakeprovider: $(VENV)/.installed-runtime
	DJANGO_DEBUG=1 $(BIN)/python manage.py fakeprovider --port 8001

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache test-db.sqlite3*
