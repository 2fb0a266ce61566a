# Two entry points for a fresh Debian machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
APT_PKGS := docker-registry skopeo git apache2-utils time chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps system-deps venv lint typecheck test test-fast demo bench clean

all: test

system-deps:
	@missing=""; \
	for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(BIN)/gcrsync: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/gcrsync

deps: system-deps venv

lint: venv
	$(BIN)/ruff check src tests tools bench demo
	$(BIN)/mypy --strict src tools
	$(BIN)/lint-imports

test: deps lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-fast: venv
	$(BIN)/python -m pytest -q -x -m "not slow"

demo: deps
	$(BIN)/python demo/demo.py

bench: deps
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .demo .bench .test-artifacts .pytest_cache .mypy_cache .ruff_cache
