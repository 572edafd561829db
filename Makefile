# The README's commands. Each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test unit integration browser chromium smtp-sink lint bench up clean soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) chromium

# The browser tests drive Debian's chromium through Playwright (never a downloaded browser).
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo "installing Debian's chromium for the browser tests (apt-get install chromium chromium-driver)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null \
	    || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null) \
	    || { echo "could not install chromium with apt-get (needs root and Debian's repositories):" \
	      "run 'apt-get update && apt-get install -y chromium chromium-driver' as root;" \
	      "the browser tests in tests/browser need $(CHROMIUM)" >&2; \
	      if [ -n "$$CI" ]; then exit 1; fi; }; \
	fi

demo: $(STAMP)
	$(BIN)/carillon demo

up: $(STAMP)
	$(BIN)/carillon up

test: $(STAMP) chromium lint
	$(BIN)/pytest -m "not soak" tests/unit tests/integration tests/browser tests/faults

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

browser: $(STAMP) chromium
	$(BIN)/pytest tests/browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Benchmarks run on the local Redis and PostgreSQL unless CARILLON_* say otherwise.
BENCH_ENV := CARILLON_DATABASE_URL=$${CARILLON_DATABASE_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/carillon_bench} \
	CARILLON_BROKER_URL=$${CARILLON_BROKER_URL:-redis://127.0.0.1:6379/13}

# The delivery benchmark's SMTP server: Postfix's smtp-sink, a C test server (the Python one
# would be the bottleneck). Postfix is installed with "No configuration": no mail daemon is
# set up, started or left listening on port 25 (stopped below should the package start one).
SMTP_SINK := /usr/sbin/smtp-sink
POSTFIX_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix >/dev/null
smtp-sink:
	@if [ ! -x $(SMTP_SINK) ]; then \
	  echo "installing Postfix's smtp-sink for bench/delivery.py (apt-get install postfix)"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null; \
	  $(POSTFIX_INSTALL) || (apt-get update -q >/dev/null && $(POSTFIX_INSTALL)) \
	    || echo "could not install postfix (needs root and Debian's repositories):" \
	      "bench/delivery.py falls back to the slower aiosmtpd sink" >&2; \
	  if [ -x /usr/sbin/postfix ] && /usr/sbin/postfix status >/dev/null 2>&1; then /usr/sbin/postfix stop; fi; \
	fi

bench: $(STAMP) smtp-sink
	$(BENCH_ENV) $(BIN)/python bench/engine_overhead.py
	$(BENCH_ENV) $(BIN)/python bench/hop_scaling.py
	$(BENCH_ENV) $(BIN)/python bench/api_trigger.py
	$(BENCH_ENV) $(BIN)/python bench/data.py
	$(BENCH_ENV) $(BIN)/python -m bench.delivery
	$(BENCH_ENV) $(BIN)/python bench/monitoring.py

# Every fault scenario of RELIABILITY.md (F1-F19) with three seeds, then a table. F15 also
# floods the API with Debian's wrk when it is installed (locust alone otherwise).
WRK := /usr/bin/wrk
soak: $(STAMP)
	@if [ ! -x $(WRK) ]; then \
	  echo "installing Debian's wrk for the F15 load (apt-get install wrk)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null \
	    || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null) \
	    || echo "could not install wrk (needs root and Debian's repositories):" \
	      "F15 runs its load with locust only" >&2; \
	fi
	$(BIN)/python -m tests.faults.soak --seeds 1,2,3

clean:
	rm -rf $(VENV) .carillon .pytest_cache .mypy_cache .ruff_cache
