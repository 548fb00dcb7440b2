# Two entry points for a fresh machine (see README): `make demo` and `make test`.
# torch is pinned through constraints.txt: torch==2.13.0 is the local CPU wheel here; any other spec would
# pull gigabytes of CUDA packages.
VENV ?= .venv
PIP = $(VENV)/bin/pip -q --disable-pip-version-check

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.runtime: $(VENV)/bin/python pyproject.toml constraints.txt
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $@

.PHONY: demo test test-fast lint bench gpu-kit
demo: $(VENV)/.runtime
	$(VENV)/bin/vidup upscale samples/football_256x144.mp4 out/football_1024.mp4 --overwrite

test: $(VENV)/.test lint
	$(VENV)/bin/python -m pytest -q

# The fast lane while working: everything but the tests marked slow (under 2 minutes on a 2-core machine).
test-fast: $(VENV)/.test
	$(VENV)/bin/python -m pytest -q -m "not slow"

lint: $(VENV)/.test
	$(VENV)/bin/ruff check vidup tests tools
	$(VENV)/bin/ruff format --check vidup tests tools

bench: $(VENV)/.test
	$(VENV)/bin/python tools/bench.py

# What tools/gpu_check.py needs on a GPU machine with no registry access (wheels, the SR model, the clip); carry
# gpu-kit/ with the repository there.
gpu-kit: $(VENV)/.runtime
	$(VENV)/bin/python tools/gpu_kit.py --out gpu-kit
