"""Ingest stage: reads data/raw, writes data/prepared, reports/ingest (Data Docs, pictures, summary.json) and
metrics/ingest.json (the headline). What differs by data kind is in components/ingest/kinds/ (image: class folders of
images; table: one table file), found through its table by the kind data/raw holds (tfpipe/kinds.py); this module is
what they share: the reading of params, the error that fails the stage, the headline metrics.
"""

from __future__ import annotations

import sys

from components.ingest.failures import IngestError
from components.ingest.kinds import KINDS
from tfpipe import paths, timing
from tfpipe.kinds import UnknownKind, recognize
from tfpipe.outputs import write_json
from tfpipe.params_file import load_params


def main() -> None:
    timing.start()
    params = load_params()
    try:
        kind = KINDS[recognize(paths.RAW, params.data.kind)]
        summary = kind.ingest(params)
    except (IngestError, UnknownKind) as error:
        print(f"ingest failed: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    write_json(paths.INGEST_METRICS, kind.headline(summary))
    notes = kind.describe_changes(summary)
    print(
        f"ingest: {kind.describe(summary)} -> {paths.PREPARED}, data docs: "
        f"{paths.INGEST_REPORTS / 'data_docs/index.html'}" + "".join(f"\n  {note}" for note in notes)
    )
    # Where the stage's time went, and DVC's before it (its hashing of data/raw among it); make bench adds DVC's after.
    print(f"ingest profile: {timing.describe(timing.write('ingest'))}")
