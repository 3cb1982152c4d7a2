"""Values from a user's data (class names, columns, file names) as literal Markdown: the model card and the MLflow
UI render it. Reads and writes nothing."""

from __future__ import annotations

import math
import re

# Inline Markdown and HTML: every value is written mid-line, after a label, so line-start markers (#, -, 1.) cannot act.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~&$])")


def text(value) -> str:
    """`value` as literal inline Markdown text: each character Markdown or HTML would read mid-line is escaped,
    lines joined."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(value).split()))


def code(value) -> str:
    """`value` as an inline code span (Markdown reads no escapes there): no backtick or line break can occur in it."""
    return "`" + " ".join(str(value).replace("`", "'").split()) + "`"


def percent(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
