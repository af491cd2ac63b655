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

# The whole life of a model on the demo preset (about ten minutes on 2 CPU cores): tokenizer,
# pretraining, SFT, preferences, reward model, PPO, GRPO, evaluation, reasoning; then the report
# card. A second `make demo` resumes (or, once finished, just rebuilds) the same run.
demo: install
	if [ -f runs/demo/lab.json ]; then $(BIN)/lmlab run --resume runs/demo; \
	else $(BIN)/lmlab run --preset demo --out runs/demo; fi
	@echo "report card: runs/demo/report.md and runs/demo/report.html"

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs
