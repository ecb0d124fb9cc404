# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DATA_DIR ?= $(CURDIR)/data
PORT ?= 3000
# The Dagster UI moves off 3000, where the online service listens.
DAGSTER_PORT ?= 3001

.PHONY: install instance up down system-deps demo dev serve bento test lint lock bench bench-deps rollback clean

install: $(STAMP)

# Installs the pinned environment (requirements.lock) and the project itself, editable.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "uv>=0.4"
	$(BIN)/uv pip sync --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Re-resolves the pinned versions after a change to pyproject.toml's dependencies.
lock:
	test -x $(BIN)/uv || ($(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install -q uv)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

# DAGSTER_HOME's instance settings: the checkout's dagster.yaml, plus PostgreSQL storage
# (deploy/dagster-postgres.yaml) when DAGSTER_POSTGRES_URL is set. Rewritten when a source is
# newer or the storage changed; the replaced file is kept as dagster.yaml.bak-<time>, to
# merge back any setting of your own (scripts/instance.py).
instance: install
	$(BIN)/python -m scripts.instance

demo: instance
	$(BIN)/python -m scripts.demo

dev: instance
	$(BIN)/dagster dev -w workspace.yaml -p $(DAGSTER_PORT)

# The whole stack as supervised processes: Dagster webserver and daemon, the online service,
# the Evidently UI; health-checked, restarted when one dies; `make down` stops every process
# tree (scripts/stack.py). PostgreSQL, an object store, Redis and a Dask scheduler are used
# when the settings name them (README, "Deploy beyond one machine").
up: instance
	$(BIN)/python -m scripts.stack up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m scripts.stack down; \
	else echo "make down: no .venv, so nothing was started"; fi

serve: install
	cd bento && ../$(BIN)/bentoml serve service:FraudService --port $(PORT)

# A Bento with the service code and the registry's current champion (bento/registry/).
bento: install
	$(BIN)/python bento/bundle.py bundle-champion
	$(BIN)/bentoml build -f bento/bentofile.yaml .

# Servers the tests start on free ports (the Redis online store, PostgreSQL for Dagster's
# instance) and promtool, which checks and unit-tests monitoring/alerts.yml: Debian's
# packages, installed when missing (sessions and CI run as root; elsewhere, install them
# yourself). Debian's postgresql also creates the `postgres` user the tests' server runs as.
# Azurite (Azure Blob's emulator, for tables on an object store) comes from npm, pinned:
# 3.35 breaks a Delta table from its third commit.
system-deps:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	@command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql)
	@command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	@command -v azurite-blob >/dev/null || npm install -g --silent azurite@3.37.0

test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: install
	$(BIN)/ruff check .

bench-deps:
	command -v hey >/dev/null && command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq hey wrk)

# Each script compares with a baseline in the same run (benchmarks/README.md); online.py
# serves DATA_DIR, so run `make demo` first.
bench: install bench-deps
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/batch_scoring.py
	$(BIN)/python benchmarks/step_memory.py
	$(BIN)/python benchmarks/drift.py
	$(BIN)/python benchmarks/online.py
	$(BIN)/python benchmarks/online_shadow.py
	$(BIN)/python benchmarks/online_store.py
	$(BIN)/python benchmarks/micro_batch.py
	$(BIN)/python benchmarks/model_selection.py
	$(BIN)/python benchmarks/treeshap.py
	$(BIN)/python benchmarks/scale.py

rollback: install
	$(BIN)/python -m fraudkit.registry rollback

# Removes ./data and ./.dagster_home. A DATA_DIR elsewhere goes only if `make demo` wrote it
# (its marker file), and a DAGSTER_HOME elsewhere is left alone, so settings pointed at
# other data or another Dagster instance survive a stray `make clean`.
clean:
	@if [ "$(DATA_DIR)" != "$(CURDIR)/data" ] && [ -e "$(DATA_DIR)" ] \
		&& [ ! -e "$(DATA_DIR)/.made-by-make-demo" ]; then \
		echo "make clean: $(DATA_DIR) was not written by make demo; remove it yourself"; \
		exit 1; fi
	rm -rf $(DATA_DIR)
	@if [ "$(DAGSTER_HOME)" = "$(CURDIR)/.dagster_home" ]; then rm -rf $(DAGSTER_HOME); \
	else echo "make clean: DAGSTER_HOME=$(DAGSTER_HOME) is not this checkout's; left alone"; fi
