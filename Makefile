# Everything a fresh machine needs: `make run` and `make test` set up the venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/mailer_test
PYTEST_ARGS ?=

.PHONY: install run migrate test test-postgres browser lint lock audit bench-tools bench-api clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

migrate: install
	$(FLASK) db upgrade

run: migrate
	$(FLASK) mailer dev

# The suite on SQLite, or on PostgreSQL when MAILER_TEST_DATABASE_URL is set.
test: install browser
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
# Installing needs root; without it the browser tests skip (and fail under CI=true).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      >/dev/null || echo "could not install chromium: browser tests will skip"; \
	  else echo "chromium is missing (apt-get install chromium): browser tests will skip"; fi; }

test-postgres: install browser
	$(BIN)/python -m tests.ensure_postgres "$(PG_URL)"
	MAILER_TEST_DATABASE_URL="$(PG_URL)" $(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

# The deployment's exact dependency set, each with its hashes (the Dockerfile installs it
# with --require-hashes). Remake it after changing install_requires in setup.cfg.
LOCK := requirements.lock
$(VENV)/.tools: setup.cfg | $(BIN)/activate
	$(BIN)/pip install --quiet 'uv>=0.5' 'pip-audit>=2.7'
	touch $@

lock: $(VENV)/.tools
	$(BIN)/uv pip compile setup.cfg --universal --python-version 3.11 \
	  --generate-hashes --no-header --quiet -o $(LOCK)
	@sed -i '1i # The deployment\x27s dependencies, pinned with hashes: `make lock` remakes it from\n# setup.cfg (uv pip compile --generate-hashes). Install with\n# pip install --require-hashes -r requirements.lock' $(LOCK)

# Known vulnerabilities in the locked set (.ci/run runs it). Exit 3: the vulnerability
# service cannot be reached from here, so nothing was audited (.ci/run says so and skips).
audit: $(VENV)/.tools
	$(BIN)/python .ci/audit.py $(LOCK)

BENCH_ARGS ?=

# wrk is the load generator of the HTTP benchmarks (Debian package; needs root to install).
bench-tools:
	@command -v wrk >/dev/null 2>&1 || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)

bench-api: install bench-tools
	$(BIN)/python bench/api_throughput.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
