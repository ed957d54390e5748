# packager: the user's interface. `make package` runs the main job, `make test` the tests.
# Each target installs what it needs into .venv first.

VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGER := $(VENV)/bin/packager
export HF_HUB_OFFLINE ?= 1

ADAPTER ?=
BASE ?=
OUT ?= out/merged
DTYPE ?= auto

.PHONY: install test lint package demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: install
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check packager tests bench

demo: install
	$(PACKAGER) demo --output demo

# make package [ADAPTER=path] [BASE=path|hub-id] [OUT=dir] [DTYPE=auto|bf16|fp16|fp32]
# Without ADAPTER, a tiny demo base + adapter is generated in demo/ and merged.
package: install
	@adapter="$(ADAPTER)"; \
	if [ -z "$$adapter" ]; then $(PACKAGER) demo --output demo && adapter=demo/adapter; fi; \
	$(PACKAGER) merge --adapter "$$adapter" $(if $(BASE),--base "$(BASE)") --dtype $(DTYPE) --output "$(OUT)" --force

bench: install
	$(PY) bench/merge.py

clean:
	rm -rf out demo .pytest_cache
