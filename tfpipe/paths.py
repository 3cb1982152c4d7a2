"""Where the stages read and write: the `paths` of dvc.yaml's `vars`, read once, so a rename is one edit there.

Stages run at the repository root (DVC runs them there), so these are relative paths. The folders
that are not stage outputs (caches, the MLflow store, TensorBoard logs) are defined here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

DVC_FILE = Path(__file__).resolve().parents[1] / "dvc.yaml"


def _stage_paths() -> dict[str, str]:
    with DVC_FILE.open() as stream:
        for entry in (yaml.safe_load(stream) or {}).get("vars") or []:
            if isinstance(entry, dict) and "paths" in entry:
                return entry["paths"]
    raise RuntimeError(f"{DVC_FILE}: no `vars: - paths:` mapping; it defines where the stages read and write")


_PATHS = _stage_paths()

RAW = Path(_PATHS["raw"])  # the images, tracked by data.dvc
PREPARED = Path(_PATHS["prepared"])  # ingest: TFRecord shards, manifest.json, examples.csv
INGEST_REPORTS = Path(_PATHS["ingest_reports"])  # ingest: Data Docs, statistics, pictures
INGEST_METRICS = Path(_PATHS["ingest_metrics"])
PREPROCESS = Path(_PATHS["preprocess"])  # preprocess: statistics.json
TRAIN = Path(_PATHS["train"])  # train: model.keras, model.json, history.csv, run.json
TRAIN_METRICS = Path(_PATHS["train_metrics"])
HISTORY_PLOT = Path(_PATHS["history_plot"])
EVALUATE = Path(_PATHS["evaluate"])  # evaluate: blessing.json and pictures
EVALUATE_METRICS = Path(_PATHS["evaluate_metrics"])
CONFUSION_PLOT = Path(_PATHS["confusion_plot"])
EXPORT = Path(_PATHS["export"])  # export: saved_model/<name>/<version>/, *.tflite, labels.txt, report.md
EXPORT_METRICS = Path(_PATHS["export_metrics"])
PROMOTION = Path(_PATHS["promotion"])  # promote: what it decided with this checkout's registry (not in git or cache)

CACHE = Path(".cache")  # state reused across runs, keyed on content (git- and DVC-ignored)
TFDS_DATA = Path("data/tfds")  # tfds downloads here (git-ignored, not tracked by DVC)
MLRUNS = Path("mlruns")  # the local MLflow store
TENSORBOARD = Path("logs/tensorboard")  # one directory per run
