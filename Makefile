# lmlab: `make demo` sets everything up and runs the main job; `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: install demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned to the CPU wheel that ships on local disk, unless a torch is already
# importable (a GPU machine brings its own build); then lmlab and its dev tools.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Pretrains the tiny preset on the built-in task world (a few minutes on 2 CPU cores), then asks
# it a few questions greedily. A second `make demo` continues (or simply reloads) the same run.
DEMO_PROMPTS := "Question: What is 23 + 45?" "Question: Reverse the string \"lmlab\"."
demo: install
	if [ -f runs/demo/config.json ]; then $(BIN)/lmlab pretrain --resume runs/demo; \
	else $(BIN)/lmlab pretrain --preset tiny --corpus world --out runs/demo --train.max-steps 400; fi
	for p in $(DEMO_PROMPTS); do \
		$(BIN)/lmlab generate runs/demo --prompt "$$p" --temperature 0 --max-new-tokens 48 \
			--stop "Question:"; done

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs
