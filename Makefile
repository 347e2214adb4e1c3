# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
N ?= 2

.PHONY: run serve-workers require-redis test lint migrate fakeprovider clean

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
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python -m chatsite.serve -b 127.0.0.1 -p $(PORT) chatsite.asgi:application

# N workers on consecutive ports from PORT (8000, 8001, ...), sharing REDIS_URL
# and the database; put a load balancer in front (docs/deployment.md).
serve-workers: require-redis migrate
	@trap 'kill $$(jobs -p) 2>/dev/null' INT TERM EXIT; \
	for i in $$(seq 0 $$(($(N) - 1))); do \
	  DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python -m chatsite.serve -b 127.0.0.1 -p $$(($(PORT) + i)) chatsite.asgi:application & \
	done; \
	wait

require-redis:
	@test -n "$$REDIS_URL" || { echo "set REDIS_URL (and DATABASE_URL): workers share a channel layer and a database" >&2; exit 2; }

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(VENV)/.installed-test lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

fakeprovider: $(VENV)/.installed-runtime
	DJANGO_DEBUG=1 $(BIN)/python manage.py fakeprovider --port 8001

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache test-db.sqlite3*
