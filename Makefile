# The README's commands. Each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test unit integration lint bench up clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/carillon demo

up: $(STAMP)
	$(BIN)/carillon up

test: $(STAMP) lint
	$(BIN)/pytest tests/unit tests/integration

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Benchmarks run on the local Redis and PostgreSQL unless CARILLON_* say otherwise.
BENCH_ENV := CARILLON_DATABASE_URL=$${CARILLON_DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/carillon_bench} \
	CARILLON_BROKER_URL=$${CARILLON_BROKER_URL:-redis://127.0.0.1:6379/13}

bench: $(STAMP)
	$(BENCH_ENV) $(BIN)/python bench/engine_overhead.py
	$(BENCH_ENV) $(BIN)/python bench/api_trigger.py
	$(BENCH_ENV) $(BIN)/python bench/data.py
	$(BENCH_ENV) $(BIN)/python -m bench.delivery

clean:
	rm -rf $(VENV) .carillon .pytest_cache .mypy_cache .ruff_cache
