# `make demo` and `make test` do all set-up on a fresh machine.
# A GPU user: create .venv and install your CUDA build of torch into it first
# (see README); the install step below keeps whatever torch is importable.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build that lies on this kind of machine's disk. An unpinned torch
# would pull a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv install install-test install-bench demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"

install: venv
	$(PIP) install --quiet -e ".[all]"

install-test: venv
	$(PIP) install --quiet -e ".[test]"

install-bench: venv
	$(PIP) install --quiet -e ".[bench]"

demo: install
	$(PY) -m latentquant demo

test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

bench: install-bench
	$(PY) benchmarks/quantizer.py
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/evaluation.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
