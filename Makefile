# seq2seq — every user-facing command. `make train` and `make test` set everything up themselves.
#
# TORCH_SPEC chooses the PyTorch build deliberately. The default takes the CPU wheel
# (on the project's machines a local file); on a GPU machine use e.g.
#   make train TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# An unpinned `torch` would pull the multi-GB CUDA build from PyPI.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
ARGS       ?=
SWEEP      ?=

BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.installed

export WANDB_SILENT ?= true
export HYDRA_FULL_ERROR ?= 0

.DEFAULT_GOAL := help

## help: list these commands

help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## /  make /'

.PHONY: help setup train test lint format clean data-bible dashboard retention sweep-bottleneck sweep-hidden influence alignment-heads bench evaluate translate cost

## setup: create .venv and install the project (idempotent: a second call does nothing)
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(firstword $(TORCH_SPEC))" $(wordlist 2,99,$(TORCH_SPEC))
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

## train: train the default model (toy_translation, bi-GRU + Bahdanau); ARGS="..." passes Hydra overrides
train: $(STAMP)
	$(PY) -m seq2seq.train $(ARGS)

## test: the whole test suite (CI runs this)
test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

## evaluate: re-score a checkpoint into a new directory: make evaluate ARGS="run_dir=outputs/... [decoding=beam]"
evaluate: $(STAMP)
	$(PY) -m seq2seq.evaluate $(ARGS)

## translate: make translate ARGS="ckpt_path=<checkpoint or run dir> input=in.txt" (reads stdin without input=)
translate: $(STAMP)
	$(PY) -m seq2seq.translate $(ARGS)

## cost: time and peak memory per sentence vs source length 10-400 (train step, greedy) per model, log-log fit; ARGS="--quick" checks it fast
cost: $(STAMP)
	$(PY) scripts/cost.py $(ARGS)

## sweep-bottleneck: attention variants × {GRU, LSTM} (Hydra multirun); ARGS="..." passes overrides
sweep-bottleneck: $(STAMP)
	$(PY) -m seq2seq.train sweep=bottleneck $(ARGS)

## sweep-hidden: hidden size {32..512} × {none, bahdanau} (Hydra multirun)
sweep-hidden: $(STAMP)
	$(PY) -m seq2seq.train sweep=hidden_size $(ARGS)

## data-bible: build the Bible en–es corpus in data/bible (KJV → Reina-Valera 1909); ARGS="--force" rebuilds
data-bible: $(STAMP)
	$(PY) scripts/prepare_bible.py $(ARGS)

## dashboard: review page for a sweep: make dashboard SWEEP=multirun/2026-01-01/12-00-00 [BASELINE=<job>]
dashboard: $(STAMP)
	@test -n "$(SWEEP)" || { echo "usage: make dashboard SWEEP=<multirun dir> [BASELINE=<job>]"; exit 2; }
	$(PY) -m seq2seq.dashboard sweep_dir=$(SWEEP) $(if $(BASELINE),baseline=$(BASELINE))

## retention: linear first-token retention simulation (docs/retention.md); ARGS="..." passes Hydra overrides
retention: $(STAMP)
	$(PY) -m seq2seq.analysis.retention $(ARGS)

## influence: influence of each source position for a trained run: make influence RUN=<run dir> [ARGS="..."]
influence: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make influence RUN=<run dir>"; exit 2; }
	$(PY) -m seq2seq.analysis.influence run_dir=$(RUN) $(ARGS)

## alignment-heads: alignment accuracy per decoder layer and head of a toy Transformer run: make alignment-heads RUN=<run dir> [ARGS="out_dir=..."]
alignment-heads: $(STAMP)
	@test -n "$(RUN)" || { echo "usage: make alignment-heads RUN=<run dir>"; exit 2; }
	$(PY) -m seq2seq.analysis.alignment_heads run_dir=$(RUN) $(ARGS)

## bench: seq2seq vs JoeyNMT 2.3.0 speed/memory benchmark (docs/performance.md); ARGS="--quick" for a smoke run
bench: $(STAMP)
	$(PY) scripts/benchmark/run.py $(ARGS)

## lint: ruff check and format check
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf outputs multirun .cache .pytest_cache .ruff_cache
