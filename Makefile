# WeMcp — the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
export UV_LINK_MODE := copy

.PHONY: run test install sandbox-tools browser-tools migrate infra admin lint typecheck bench clean-data help

help:
	@echo "make run       start everything (embedded Postgres/NATS/Redis unless DATABASE_URL/NATS_URL/REDIS_URL are set)"
	@echo "make test      unit, integration and end-to-end tests on real infrastructure"
	@echo "make migrate   apply every service's migrations to DATABASE_URL"
	@echo "make infra     only the infrastructure, printing URLs to export"
	@echo "make browser-tools  install chromium and CJK fonts (as root; test does it): the console's browser tests"
	@echo "make sandbox-tools  install bubblewrap (as root; run and test do it): the sandbox of hosted servers"
	@echo "make admin     (with make run going) create the first superadmin; prints an API key on the last line"
	@echo "make lint      ruff;  make typecheck  mypy;  make bench  benchmarks"

# uv itself, pinned, in a private folder: nothing is installed outside the repository.
$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock $(wildcard libs/*/pyproject.toml services/*/pyproject.toml sdk/python/pyproject.toml)
	$(UV) sync --frozen --all-packages --group dev
	@touch $@

# The web console (web/, README.md#the-web-console): esbuild bundles it into web/dist, which the
# gateway serves at /. npm ci takes the exact versions in web/package-lock.json.
WEB_STAMP := web/dist/.built
$(WEB_STAMP): web/package.json web/package-lock.json web/build.mjs web/index.html $(wildcard web/src/*.js web/src/*/*.js web/src/*/*/*.js web/src/locales/*.json web/src/*.css docs/guide/*)
	cd web && npm ci --no-audit --no-fund --loglevel=error && node build.mjs
	@touch $@

install: $(VENV)/.synced $(WEB_STAMP)

# Debian's chromium and CJK fonts for the console's browser tests (Playwright drives them; its own
# browser download does not work everywhere). As root with apt-get they are installed; otherwise one
# line says how, and the browser tests fail naming this target.
browser-tools:
	@if command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "noto sans cjk"; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and fonts-noto-cjk (the console's browser tests)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		out=$$( (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk) 2>&1 ) \
			|| { echo "$$out"; echo "apt-get install chromium fonts-noto-cjk failed"; exit 1; }; \
	else \
		echo "wemcp: chromium or fonts-noto-cjk is missing: the console's browser tests need them (apt-get install chromium fonts-noto-cjk, as root)"; \
	fi

# bubblewrap: the sandbox hosted servers run in (README.md#isolation). As root (CI, a fresh container)
# it is installed with apt-get; otherwise one line says how, and the deployer refuses hosted servers
# until it is there. Instant once installed.
sandbox-tools:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing bubblewrap (the sandbox for hosted servers, README.md#isolation)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		out=$$( (apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap) 2>&1 ) \
			|| { echo "$$out"; echo "apt-get install bubblewrap failed"; exit 1; }; \
	else \
		echo "wemcp: bubblewrap is missing, so hosted servers will be refused: install it as root (apt-get install bubblewrap, or your distribution's package) or run make as root; see README.md#isolation"; \
	fi

run: install sandbox-tools
	$(PY) -m wemcp.devstack.cli run

infra: install
	$(PY) -m wemcp.devstack.cli infra

migrate: install
	$(PY) -m wemcp.devstack.cli migrate

admin: install
	$(PY) -m wemcp.devstack.cli admin

test: install sandbox-tools browser-tools
	$(PY) -m pytest -n 2 --no-loadscope-reorder $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy libs/common/src libs/quota/src libs/testkit/src services/*/src

bench: install
	$(PY) bench/outbox_throughput.py

clean-data:
	rm -rf .data
