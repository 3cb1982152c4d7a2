"""The preprocess stage's table of data kinds: each module analyzes one kind's train split into
artifacts/preprocess/statistics.json (tfpipe/kinds.py names them). Each has preprocess(params, manifest)."""

from components.preprocess.kinds import image, table, text

KINDS = {"image": image, "table": table, "text": text}
