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

.PHONY: venv install install-test install-bench install-docs demo test docs bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_SPEC)"

install: venv
	$(PIP) install --quiet -e ".[all]"

install-test: venv
	$(PIP) install --quiet -e ".[test]"

install-docs: venv
	$(PIP) install --quiet -e ".[docs]"

install-bench: venv
	$(PIP) install --quiet -e ".[bench]"

demo: install
	$(PY) -m latentquant demo

# The strict site build fails on a broken link or anchor, a missing API
# reference or a docstring that does not render; it costs 3 to 4 s of wall
# time on the 2-core development machine (load average 3). The docstrings'
# examples run as doctests inside pytest (tests/test_doctests.py, about 5 s).
test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
	$(PY) -m pytest -q

# The documentation site, offline, into site/ (open site/index.html).
docs: install-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: install-bench
	$(PY) benchmarks/quantizer.py
	$(PY) benchmarks/metrics.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/evaluation.py

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info
