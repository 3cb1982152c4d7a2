"""The export stage's table of data kinds (tfpipe/kinds.py names them): each module prepares what its kind exports
(components/export/prepared.py). Each has prepare(model, description, manifest) -> Prepared."""

from components.export.kinds import image, table, text

KINDS = {"image": image, "table": table, "text": text}
