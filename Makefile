# Two commands for a fresh Linux machine with Python 3.11+ and make:
#   make demo   set everything up and run the demo strategy on the simulated market
#   make test   set everything up and run the whole test suite
# uv is bootstrapped into .tools/ from PyPI when it is not on PATH; the lock file pins the rest.

PYTHON ?= python3
UV_VERSION ?= 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
DEMO_SECONDS ?= 15

.PHONY: setup setup-run demo test lint bench clean vendor-charts

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# What running needs (the project's own dependencies); the test and peer groups come with `setup`.
# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set, nothing would ever cache
# it, and every process (each actor, each CLI run) would compile numba's and numpy's sources
# again on import, some 0.7 s each.
setup-run: $(UV)
	$(UV) sync --frozen --no-default-groups --inexact --compile-bytecode
	$(UV) run --frozen --no-sync python -m compileall -q engine providers

setup: $(UV)
	$(UV) sync --frozen --compile-bytecode
	$(UV) run --frozen --no-sync python -m compileall -q engine providers

demo: setup-run
	$(UV) run --frozen --no-sync engine run strategies/sma_cross.py --duration $(DEMO_SECONDS) -p fast=3 -p slow=8

test: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen pytest

bench: setup
	for b in benchmarks/*.py; do $(UV) run --frozen python $$b || exit 1; done

clean:
	rm -rf .venv .tools

# The dashboard's charting library, vendored into engine/ui/static (the page loads nothing from
# a CDN): the standalone build and licence of a pinned release from the npm registry.
LWC_VERSION ?= 5.2.1
vendor-charts:
	tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent lightweight-charts@$(LWC_VERSION) && \
	tar xzf lightweight-charts-$(LWC_VERSION).tgz && \
	cp package/dist/lightweight-charts.standalone.production.js $(CURDIR)/engine/ui/static/ && \
	cp package/LICENSE $(CURDIR)/engine/ui/static/lightweight-charts.LICENSE && rm -rf $$tmp
