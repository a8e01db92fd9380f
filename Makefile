# The three commands a user needs: `make install`, `make train`, `make test`; `make docs` builds the site.
# Everything goes into a virtual environment in $(VENV); nothing touches the system Python.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch installed when the environment has none. To choose a CPU or a CUDA build, pass e.g.
# TORCH_INSTALL="torch --index-url <your CPU or CUDA wheel index>".
TORCH_INSTALL ?= torch==2.13.0
TRAIN_ARGS ?=
# pytest-xdist workers: one per core, at most 4 (each worker compiles its own programs); a test file
# stays on one worker so that its module fixtures are built once
TEST_WORKERS ?= auto --maxprocesses=4
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
GPU_ARGS ?=

.PHONY: install train test test-fast docs docs-numbers bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# keep a torch that is already there (a CUDA build, say); otherwise install $(TORCH_INSTALL)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_INSTALL)
	$(PY) -m pip install -q -e ".[torch,test,tensorboard,docs]"
	touch $@

train: install
	$(VENV)/bin/jaxvae train $(TRAIN_ARGS)

test: install
	$(PYTEST)

# the fast tier: every test not marked slow (64 s on a 2-core AMD EPYC VM; the full suite 5 min)
test-fast: install
	$(PYTEST) -m "not slow"

# the documentation site (mkdocs.yml) into site/; --strict: a broken link or reference fails the build
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# The numbers and figures the docs quote: reruns the runs of docs/numbers/make_numbers.py (17 minutes
# on a loaded 2-core AMD EPYC VM, 11 of them the MNIST sigma sweep; full MNIST from ../shared/data/mnist,
# or MNIST_DIR=...), writes docs/numbers/*.json and docs/figures/, and rewrites the pages' marked numbers
MNIST_DIR ?=
docs-numbers: install
	$(PY) docs/numbers/make_numbers.py $(if $(MNIST_DIR),--data-dir $(MNIST_DIR))

bench: install
	$(PY) benchmarks/train_speed.py

# The accelerator check (benchmarks/gpu_check.py), under eight minutes. No `install` first: it runs with
# the venv's Python when there is one, else with a python3 that already has jax, torch, flax and optax.
gpu-check:
	PYTHONPATH=".:$$PYTHONPATH" $(if $(wildcard $(PY)),$(PY),python3) benchmarks/gpu_check.py $(GPU_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache site
