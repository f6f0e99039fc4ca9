# keras_deeplab: `make demo` runs the main job, `make test` the test suite (both install first).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
BSTAMP  = $(VENV)/.installed-backends
CSTAMP  = $(VENV)/.installed-convert
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install install-backends install-convert test test-backends test-convert test-fast lint demo demo-quick bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# JAX and PyTorch (CPU builds) for the cross-backend tests. torch==2.13.0 first, so a
# local CPU wheel is used where one exists instead of the multi-GB CUDA build.
$(BSTAMP): $(STAMP)
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.2,<2.14"
	$(BIN)/python -m pip install -q -e ".[backends]"
	touch $(BSTAMP)

install-backends: $(BSTAMP)

# torch (CPU) + torchvision for the checkpoint-conversion parity tests (marker `convert`).
# torchvision --no-deps: its pinned torch would pull the CUDA build over the CPU wheel.
$(CSTAMP): $(STAMP)
	$(BIN)/python -m pip install -q "torch==2.13.0" || $(BIN)/python -m pip install -q "torch>=2.2,<2.14"
	$(BIN)/python -m pip install -q --no-deps "torchvision==0.28.0"
	touch $(CSTAMP)

install-convert: $(CSTAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not backends and not convert" --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not backends and not convert and not large"

test-backends: $(BSTAMP)
	$(BIN)/python -m pytest -q -m backends

test-convert: $(CSTAMP)
	$(BIN)/python -m pytest -q -m convert --durations=10

lint: $(STAMP)
	$(BIN)/python -m ruff check keras_deeplab tests recipes benchmarks

demo: $(STAMP)
	$(BIN)/python -m keras_deeplab.demo --out demo_out

demo-quick: $(STAMP)
	$(BIN)/python -m keras_deeplab.demo --out demo_out --quick

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf demo_out .pytest_cache build *.egg-info
