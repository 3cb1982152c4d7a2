"""Preprocess stage: reads data/prepared (the train split), writes artifacts/preprocess/statistics.json.

Analyze once, apply everywhere (TFX Transform's idea): the train split's statistics define the preprocessing model
that the trained model and the served model both start with, so there is no train/serve skew. What is analyzed
depends on the data kind ingest recorded in the manifest (components/preprocess/kinds/: image sizes and channel
statistics; a table's normalization, vocabularies and date parts).
"""

from __future__ import annotations

from components.preprocess.kinds import KINDS
from tfpipe import paths, records, timing
from tfpipe.kinds import kind_of_prepared
from tfpipe.params_file import load_params


def main() -> None:
    timing.start()
    params = load_params()
    manifest = records.read_manifest(paths.PREPARED)
    KINDS[kind_of_prepared(manifest)].preprocess(params, manifest)
    timing.write("preprocess")
