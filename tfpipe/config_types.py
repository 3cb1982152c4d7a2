"""The params schema's shared pieces: strict validation, bounded integer types, `auto`, safe names, ParamsError.

tfpipe/config.py composes the sections (tfpipe/config_ingest.py, config_train.py, config_gate.py) into Params.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from tfpipe.outputs import StatedError

PARAMS_FILE = Path("params.yaml")

# extra="forbid" turns a typo such as `learning_rat` into an error instead of a silent default;
# parse_params validates in strict mode, so "0.5" is not a number and "yes" not a boolean.
STRICT = ConfigDict(extra="forbid")
Positive = Annotated[int, Field(ge=1)]
# Every integer has a range: a typo such as `epochs: 1e23` or `seed: -1` is an error naming its key, not a
# traceback deep inside TensorFlow. Seeds are what numpy and TensorFlow both take.
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
Epochs = Annotated[int, Field(ge=1, le=10_000)]
Side = Annotated[int, Field(ge=1, le=8192)]
Share = Annotated[float, Field(ge=0, le=1)]
# A name that becomes a path and an MLflow name: letters, digits, '_', '.', '-', not starting with a dot.
SAFE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
Auto = Literal["auto"]  # resolved from the data when the stage runs; the resolved value is logged to MLflow


class ParamsError(StatedError, ValueError):
    """Raised when params.yaml is missing, unreadable or does not match the schema."""


def check_safe_name(name: str | None, what: str) -> str | None:
    """A name that becomes a path (and an MLflow name) matches SAFE_NAME: no separator, no leading dot, no `..`
    to climb out of the project, at most 100 characters."""
    if name is not None and not re.fullmatch(SAFE_NAME, name):
        raise ValueError(
            f"expected 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit (it names {what}); "
            "a path elsewhere is not a name"
        )
    return name
