"""The ingest stage's table of data kinds: each module reads, checks, splits and writes one kind (tfpipe/kinds.py names
them). Each has ingest(params) -> summary, headline(summary), describe(summary) and describe_changes(summary)."""

from components.ingest.kinds import image, table, text

KINDS = {"image": image, "table": table, "text": text}
