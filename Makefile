# Two promises: `make repro` and `make test` work on a fresh clone with nothing but Python 3.11.
# Both create .venv and install the pinned dependencies once (a stamp file records it).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
GPU_STAMP := $(VENV)/.installed-gpu
# dvc runs each stage's `python -m components.X` through the shell: it must find the venv's python.
export PATH := $(abspath $(BIN)):$(PATH)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install install-gpu data repro test test-fast lint format ui tensorboard serve lock bench bench-scale bench-gpu clean-outputs

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# On a Linux x86_64 machine with an NVIDIA GPU (and its driver): the same .venv plus TensorFlow's CUDA
# libraries (tensorflow[and-cuda]'s nvidia-* wheels, several GB); every other package keeps its requirements.txt pin.
# Without them TensorFlow sees no GPU and trains on the CPU. Then `make repro` or `dvc repro` trains on the GPU.
install-gpu: $(GPU_STAMP)

$(GPU_STAMP): requirements-gpu.txt $(STAMP)
	$(BIN)/python -m pip install --quiet -r requirements-gpu.txt
	touch $(GPU_STAMP)

# Writes data/raw from params.yaml's data.source (default: the embedded mnist_5k, whose committed
# data.dvc hash must not move) and fills the DVC cache; other sources: python -m pipelines.materialize --help.
# First, params.yaml and the YAML files DVC reads are checked with our bounded reader: DVC's own parser has no bound
# on YAML aliases (an alias bomb grows it without limit before any stage runs); pipelines/params.py.
data: install
	$(BIN)/python -m pipelines.params check
	$(BIN)/python -m pipelines.materialize

repro: data
	$(BIN)/dvc repro

# Two pytest-xdist workers (they share one reproduced copy of the repo: tests/conftest.py). loadgroup: the tests of
# one xdist_group (those sharing a costly module fixture, e.g. tests/test_experiments.py's) run on one worker, so the
# fixture is built once. PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
test: data lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

# ruff (pyproject.toml): lint and format, 120 columns; `make format` applies the formatter and the safe fixes.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Everything but the end-to-end tests (which run dvc repro in a temporary copy of the repo).
test-fast: data
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not e2e"

# The UIs listen on 127.0.0.1 only (ssh -L 5000:127.0.0.1:5000 to reach them from elsewhere).
# `make ui` reads the local store whatever MLFLOW_TRACKING_URI says (a team's server has its own UI);
# tests/test_ui.py runs this target with its own MLRUNS and UI_PORT.
MLRUNS ?= mlruns
UI_PORT ?= 5000
TENSORBOARD_PORT ?= 6006

# No job workers: they run GenAI judges and trace archival, and would start seven processes.
# Runs left RUNNING by a killed process of this host are marked KILLED first (tfpipe/tracking.py).
ui: install
	mkdir -p $(abspath $(MLRUNS))
	$(BIN)/python -m pipelines.store mark-stale --store $(abspath $(MLRUNS))
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port $(UI_PORT) --backend-store-uri sqlite:///$(abspath $(MLRUNS))/mlflow.db \
		--artifacts-destination $(abspath $(MLRUNS))/artifacts

tensorboard: install
	$(BIN)/tensorboard --host 127.0.0.1 --port $(TENSORBOARD_PORT) --logdir $(abspath logs/tensorboard)

# The champion over REST (MLflow's scoring server), read from the project's own store whatever
# MLFLOW_TRACKING_URI says; SERVE_MODEL picks another model (models:/<name>@champion of your dataset).
SERVE_MODEL ?= models:/mnist_5k-classifier@champion
SERVE_PORT ?= 5001
serve: install
	MLFLOW_TRACKING_URI=sqlite:///$(abspath $(MLRUNS))/mlflow.db $(BIN)/mlflow models serve -m $(SERVE_MODEL) \
		--env-manager local --host 127.0.0.1 --port $(SERVE_PORT)

# Prints every figure we promise (a table, with where the pipeline's time goes) and writes benchmarks/results.json,
# then the pipeline at scale (benchmarks/bench_scale.py) on SCALE_SIZES generated images: about 60 minutes on
# 2 cores in all (the scale part ~25). `make bench SCALE_SIZES=5000` for a quick look; 500000 takes hours.
SCALE_SIZES ?= 5000 50000
bench: install
	$(BIN)/python benchmarks/run.py
	$(BIN)/python -m benchmarks.bench_scale --sizes $(SCALE_SIZES) --json benchmarks/scale_results.json

bench-scale: install
	$(BIN)/python -m benchmarks.bench_scale --sizes $(SCALE_SIZES) --json benchmarks/scale_results.json

# On a GPU machine: ResNet18 images/s in float32, mixed precision and mixed precision + XLA (fails if TensorFlow sees no GPU).
bench-gpu: install-gpu
	$(BIN)/python benchmarks/gpu_throughput.py --json benchmarks/gpu_results.json

# Regenerates requirements.txt from pyproject.toml (needs uv: pip install uv), then requirements-gpu.txt: the same
# pins (-c requirements.txt) plus the gpu extra's CUDA wheels, which exist for Linux only.
lock:
	uv pip compile pyproject.toml --extra dev --extra bench --python-version 3.11 -c lock-constraints.txt -o requirements.txt
	uv pip compile pyproject.toml --extra dev --extra bench --extra gpu --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		-c lock-constraints.txt -c requirements.txt -o requirements-gpu.txt

clean-outputs:
	rm -rf data/prepared artifacts metrics plots reports
