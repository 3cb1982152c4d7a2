"""Where the stages read and write: the `paths` of dvc.yaml's `vars`, read once, so a rename is one edit there.

Stages run at the repository root (DVC runs them there), so these are relative paths. The folders
that are not stage outputs (caches, the MLflow store, TensorBoard logs) are defined here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

DVC_FILE = Path(__file__).resolve().parents[1] / "dvc.yaml"


def _read_pipeline() -> dict:
    with DVC_FILE.open() as stream:
        return yaml.safe_load(stream) or {}


def _stage_paths(pipeline: dict) -> dict[str, str]:
    for entry in pipeline.get("vars") or []:
        if isinstance(entry, dict) and "paths" in entry:
            return entry["paths"]
    raise RuntimeError(f"{DVC_FILE}: no `vars: - paths:` mapping; it defines where the stages read and write")


def _stages_keeping_outputs(pipeline: dict) -> frozenset[str]:
    """The stages whose every cached output dvc.yaml marks `persist: true`: DVC leaves them in place while the stage
    runs (the stage replaces them whole, or keeps them when it fails)."""
    kept = set()
    for name, stage in (pipeline.get("stages") or {}).items():
        options = [next(iter(out.values()), None) if isinstance(out, dict) else None for out in stage.get("outs") or []]
        if options and all((option or {}).get("persist") for option in options):
            kept.add(name)
    return frozenset(kept)


_PIPELINE = _read_pipeline()
_PATHS = _stage_paths(_PIPELINE)
KEEP_OUTPUTS = _stages_keeping_outputs(_PIPELINE)  # stages DVC does not empty before running them (persist)

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
REGISTRATION = Path(_PATHS["registration"])  # export: the version registered and the gates' verdict (promote reads)
PROMOTION = Path(_PATHS["promotion"])  # promote: what it decided with this checkout's registry (not in git or cache)

CACHE = Path(".cache")  # state reused across runs, keyed on content (git- and DVC-ignored)
TFDS_DATA = Path("data/tfds")  # tfds downloads here (git-ignored, not tracked by DVC)
MLRUNS = Path("mlruns")  # the local MLflow store
TENSORBOARD = Path("logs/tensorboard")  # one directory per run
