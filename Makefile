# WeMcp — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
export UV_LINK_MODE := copy

.PHONY: run test install migrate infra admin lint typecheck bench clean-data help

help:
	@echo "make run       start everything (embedded Postgres/NATS/Redis unless DATABASE_URL/NATS_URL/REDIS_URL are set)"
	@echo "make test      unit, integration and end-to-end tests on real infrastructure"
	@echo "make migrate   apply every service's migrations to DATABASE_URL"
	@echo "make infra     only the infrastructure, printing URLs to export"
	@echo "make admin     (with make run going) create the first superadmin; prints an API key on the last line"
	@echo "make lint      ruff;  make typecheck  mypy;  make bench  benchmarks"

# uv itself, pinned, in a private folder: nothing is installed outside the repository.
$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml sdk/python/pyproject.toml)
	$(UV) sync --frozen --all-packages --group dev
	@touch $@

install: $(VENV)/.synced

run: install
	$(PY) -m wemcp.devstack.cli run

infra: install
	$(PY) -m wemcp.devstack.cli infra

migrate: install
	$(PY) -m wemcp.devstack.cli migrate

admin: install
	$(PY) -m wemcp.devstack.cli admin

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy libs/common/src services/*/src

bench: install
	$(PY) bench/outbox_throughput.py

clean-data:
	rm -rf .data
