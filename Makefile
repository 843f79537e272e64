# Two set-up commands: `make demo` (the main job on the default model) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: venv test lint demo bench clean

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

test: venv lint
	$(BIN)/pytest -q tests

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
