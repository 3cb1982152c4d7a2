# Two promises: `make repro` and `make test` work on a fresh clone with nothing but Python 3.11.
# Both create .venv and install the pinned dependencies once (a stamp file records it).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# dvc runs each stage's `python -m components.X` through the shell: it must find the venv's python.
export PATH := $(abspath $(BIN)):$(PATH)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install data repro test test-fast ui tensorboard lock bench clean-outputs

install: $(STAMP)

$(STAMP): requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	touch $(STAMP)

# Writes data/raw from the embedded mnist_5k and fills the DVC cache (data.dvc's hash must not move).
data: install
	$(BIN)/python -m pipelines.materialize

repro: data
	$(BIN)/dvc repro

test: data
	$(BIN)/python -m pytest

# Everything but the end-to-end tests (which run dvc repro in a temporary copy of the repo).
test-fast: data
	$(BIN)/python -m pytest -m "not e2e"

ui: install
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlruns/mlflow.db

tensorboard: install
	$(BIN)/tensorboard --host 127.0.0.1 --port 6006 --logdir logs/tensorboard

# Regenerates requirements.lock from pyproject.toml (needs uv: pip install uv).
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 -c lock-constraints.txt -o requirements.lock

clean-outputs:
	rm -rf data/prepared artifacts metrics plots reports
