# The three commands a user needs: `make install`, `make train`, `make test`.
# Everything goes into a virtual environment in $(VENV); nothing touches the system Python.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch wheel installed when the environment has none. On these CPU machines torch==2.13.0 is a
# CPU build; elsewhere pass e.g. TORCH_INSTALL="torch --index-url <your CPU or CUDA wheel index>".
TORCH_INSTALL ?= torch==2.13.0
TRAIN_ARGS ?=

.PHONY: install train test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# keep a torch that is already there (a CUDA build, say); otherwise install $(TORCH_INSTALL)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_INSTALL)
	$(PY) -m pip install -q -e ".[torch,test,tensorboard]"
	touch $@

train: install
	$(VENV)/bin/jaxvae train $(TRAIN_ARGS)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
