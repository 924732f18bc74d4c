# Fresh-machine set-up lives here: `make serve` runs the annotation server, `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve segment test lint bench clean system-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is pinned and installed first: that release lies on disk as a CPU wheel, and a plain
# `torch` requirement resolved by pip would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[sam,postgres,dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the browser tests need (Chromium for Playwright). PostgreSQL 15 comes with the image;
# it is installed here too when missing so CI on a fresh machine can start a throwaway cluster.
system-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql-15 >/dev/null; \
		else echo "system-deps: run as root to install chromium/postgresql-15 (tests needing them will skip)"; fi; \
	fi

serve: install
	$(BIN)/maskwright serve

segment: install
	$(BIN)/maskwright segment --sample astronaut --point 250,250 --out maskwright-out

test: install system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
